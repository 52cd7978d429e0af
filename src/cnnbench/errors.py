"""cnnbench's own error types: failures whose message is written for the user.

`cnnbench` (cli.main) prints one of these as a single line and exits 1 (2 for a ConfigError),
without a traceback: the message says what is wrong and what to do. Any other exception is a bug
in cnnbench and is shown with its traceback. So raise one of these only for a problem the user can
fix (their params, their files, their network), never for a broken internal assumption.

The modules where each failure arises re-export its type (``cnnbench.config.ConfigError``,
``cnnbench.train.CheckpointError``, ``cnnbench.data.fetch.DownloadError``, ...); they are the
same classes.
"""

from __future__ import annotations


class CnnbenchError(Exception):
    """A failure with a message for the user; base of every error type below."""


class ConfigError(CnnbenchError):
    """A problem with params.yaml (or an override of it, or the environment) that the user must fix."""


class DataError(CnnbenchError):
    """An input file is missing, unreadable or inconsistent: a downloaded archive, the prepared data
    set, an image, or the output of an earlier stage. The message names the file and what to rerun."""


class DownloadError(CnnbenchError):
    """An archive could not be obtained or failed its checksum."""


class ChecksumError(DownloadError):
    """A file's checksum differs from the expected one (the message gives both)."""


class TrainingDiverged(CnnbenchError):
    """The loss became NaN or infinite."""


class CheckpointError(CnnbenchError):
    """A checkpoint or model file cannot be used: unreadable, not plain data, or another run's."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint belongs to another variant or data set."""


class ModelMismatch(CheckpointError):
    """model.pt was trained for another variant, data set or settings."""
