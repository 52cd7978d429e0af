"""Every file and folder a stage writes: built under a temporary name, renamed into place when complete.

The one temporary-name convention, for files and folders alike::

    .<name>.tmp-<pid>@<host>-<random>    being written, beside its destination <name>
    .<name>.old-<pid>@<host>-<random>    an old folder <name> set aside for the moment of its replacement

A killed or failed write therefore never leaves anything that looks complete, and what it does leave
says which process made it. Every writer first calls `remove_leftovers`, which deletes the temporaries
that processes on this host left behind and that no longer run (with a warning naming the path and
its size); those of a live process, of another host (a shared file system) or of an unknown owner
(an older cnnbench) are kept, the last named in a warning.

- `atomic_write` (and `atomic_write_bytes`/`atomic_write_text`/`write_csv`): one file, flushed to
  disk before the rename; a write that fails removes its own temporary file.
- `temp_dir` + `replace_dir`: a folder built in a temporary sibling, then swapped in.
- `csv_text` / `write_csv`: the one CSV writer (the csv module: quotes and commas in fields are
  quoted as CSV readers expect).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Callable

log = logging.getLogger("cnnbench.atomic")

_OWNED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)@(?P<host>.+)-(?P<random>[^-]+)$")
_TEMPORARY = re.compile(r"^\..+\.(?:tmp|old)-")  # any temporary name, owner tagged or from an older cnnbench


# --------------------------------------------------------------------------- names and leftovers
def owner_tag() -> str:
    """``<pid>@<host>``: which process made a temporary, so a later run can tell one left behind by a
    killed process from one another process is still writing."""
    return f"{os.getpid()}@{socket.gethostname()}"


def temp_path(dest: Path, kind: str = "tmp") -> Path:
    """A fresh temporary name beside ``dest`` (``.<name>.<kind>-<pid>@<host>-<random>``); not created."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{kind}-{owner_tag()}-{secrets.token_hex(4)}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


_named: set[Path] = set()  # leftovers of unknown owner already named in a warning


def _human(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def remove_leftovers(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` (of destination ``name`` only, if given) that a process on
    this host made and that no longer runs: what a killed stage left behind.

    Temporaries of a live process, of another host (a shared file system) or with no owner in their
    name (an older cnnbench) are kept; the last are named in a warning. Returns what was deleted.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if os.name != "posix" or not folder.is_dir():
        return removed
    host = socket.gethostname()
    prefixes = (f".{name}.tmp-", f".{name}.old-") if name is not None else None
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            continue
        if prefixes is not None and not entry.name.startswith(prefixes):
            continue
        if prefixes is None and not _TEMPORARY.match(entry.name):
            continue
        m = _OWNED.match(entry.name)
        if m is None or (name is not None and m["name"] != name):
            if entry not in _named:  # once per process: a writer of that name may come back every epoch
                _named.add(entry)
                target = folder / name if name is not None else folder
                log.warning("%s: left by an earlier run (owner unknown); delete it if no cnnbench process is "
                            "writing %s", entry, target)
            continue
        if m["host"] != host or _process_alive(int(m["pid"])):
            continue
        size = _size(entry)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.warning("removed %s (%s), left by an interrupted run (process %s)", entry, _human(size), m["pid"])
        removed.append(entry)
    return removed


# --------------------------------------------------------------------------- files
def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` with ``write(fh)`` on a temporary file beside it, flush it to disk, rename it
    into place. If ``write`` raises (a failed check, a full disk), ``path`` is left as it was and the
    temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent, path.name)
    tmp = temp_path(path)
    try:
        # O_EXCL: never write into someone else's file; mode 0o666 & ~umask, as open() would give path
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- folders
def temp_dir(dest: Path) -> Path:
    """Create and return a fresh temporary sibling folder of ``dest`` to build it in.

    The leftovers of killed processes are deleted first (`remove_leftovers`). Pass the folder to
    `replace_dir` when complete, or delete it on failure.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(dest.parent, dest.name)
    while True:
        path = temp_path(dest)
        try:
            path.mkdir(mode=0o777)  # the usual mode (0o777 & ~umask), as any folder
            return path
        except FileExistsError:  # pragma: no cover - 32 random bits taken
            continue


def replace_dir(src: Path, dest: Path) -> None:
    """Move the complete folder ``src`` (from `temp_dir`) to ``dest``, replacing an existing ``dest``.

    An old ``dest`` is first renamed aside (``.<name>.old-...``) and deleted afterwards, so at no time
    does a partially written folder sit at ``dest``.
    """
    src, dest = Path(src), Path(dest)
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = temp_path(dest, "old")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- CSV
def csv_text(rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str]) -> str:
    """CSV with a header row ``columns``, one line per row (``\\n`` line ends); a row is a mapping
    (its values for ``columns``, missing ones empty, others ignored) or a sequence in column order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(k) for k in columns] if isinstance(row, Mapping) else row)
    return buf.getvalue()


def write_csv(path: Path, rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str]) -> None:
    """Write `csv_text` of ``rows`` to ``path`` atomically."""
    atomic_write_text(path, csv_text(rows, columns))
