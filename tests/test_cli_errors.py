"""How `cnnbench` ends on an error: a user's mistake is one line, a bug in cnnbench is a traceback."""

from __future__ import annotations

import errno
import io
import subprocess
import sys
from pathlib import Path

import pytest

from cnnbench import cli
from cnnbench.errors import CheckpointError, CnnbenchError, DataError, DownloadError

REPO = Path(__file__).resolve().parents[1]
PARAMS = ["--params", str(REPO / "params.yaml"), "--profile", "smoke"]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_prepared_data_is_one_line(tmp_path: Path, capsys) -> None:
    rc = cli.main(["-q", *PARAMS, "train", "--variant", "cifar10-resnet18", "--data", str(tmp_path / "cifar10"),
                   "--out", str(tmp_path / "run"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-dvclive"])
    line = _one_line(capsys.readouterr().err)
    assert rc == 1
    assert line.startswith("cnnbench train: error: ") and "Run `cnnbench preprocess --dataset cifar10` first" in line


def test_missing_download_is_one_line(tmp_path: Path, capsys) -> None:
    rc = cli.main(["-q", *PARAMS, "preprocess", "--dataset", "cifar10", "--raw", str(tmp_path / "raw"),
                   "--out", str(tmp_path / "out")])
    line = _one_line(capsys.readouterr().err)
    assert rc == 1 and line.startswith("cnnbench preprocess: error: ")
    assert "run `cnnbench download --dataset cifar10` first" in line


def test_config_error_is_one_line_with_status_2(capsys) -> None:
    assert cli.main([*PARAMS, "validate", "--variant", "nope"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("cnnbench: config error: ") and "unknown variant 'nope'" in line


@pytest.mark.parametrize("error", [DataError("x.npy is corrupt"), DownloadError("no network"),
                                   CheckpointError("last.pt: not readable")])
def test_every_cnnbench_error_is_one_line_with_status_1(monkeypatch, capsys, error: CnnbenchError) -> None:
    def fail(cfg, args):
        raise error

    monkeypatch.setattr(cli, "cmd_variants", fail)
    assert cli.main([*PARAMS, "variants"]) == 1
    assert _one_line(capsys.readouterr().err) == f"cnnbench variants: error: {error}"


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), ValueError("not enough values to unpack"),
                                 FileNotFoundError(errno.ENOENT, "No such file or directory", "results/x.json"),
                                 KeyError("test_top1")])
def test_a_bug_shows_its_traceback_and_says_it_is_one(monkeypatch, capsys, bug: Exception) -> None:
    def buggy(cfg, args):
        raise bug

    monkeypatch.setattr(cli, "cmd_variants", buggy)
    assert cli.main([*PARAMS, "variants"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in buggy" in err and f"{type(bug).__name__}: " in err  # where it happened, and what
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"cnnbench variants: internal error ({type(bug).__name__}): this is a bug in cnnbench")
    assert "report it with the traceback above to the cnnbench issue tracker" in last


def test_interrupt_and_closed_pipe_keep_their_handling(monkeypatch, capsys) -> None:
    def interrupted(cfg, args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_variants", interrupted)
    assert cli.main([*PARAMS, "variants"]) == 130
    assert _one_line(capsys.readouterr().err) == "cnnbench: interrupted"

    def reader_left(cfg, args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_variants", reader_left)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # main closes stderr (the reader is gone); a spare one
    assert cli.main([*PARAMS, "variants"]) == 0


def test_the_real_command_exits_with_these_statuses(tmp_path: Path) -> None:
    """Through a real process: the exit status the drivers see, and what lands on stderr."""
    def cnnbench(*args: str, code: str = "") -> subprocess.CompletedProcess:
        prog = f"import sys\nfrom cnnbench import cli\n{code}\nsys.exit(cli.main(sys.argv[1:]))\n"
        return subprocess.run([sys.executable, "-c", prog, *PARAMS, *args], capture_output=True, text=True,
                              cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})

    proc = cnnbench("validate", "--variant", "nope")
    assert proc.returncode == 2 and _one_line(proc.stderr).startswith("cnnbench: config error: ")
    proc = cnnbench("variants", code="def buggy(cfg, args): return 1 / 0\ncli.cmd_variants = buggy")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "ZeroDivisionError: division by zero" in proc.stderr
    assert "this is a bug in cnnbench" in proc.stderr.strip().splitlines()[-1]


def test_every_help_page_renders(capsys) -> None:
    """`cnnbench --help` and `cnnbench <stage> --help` for every stage (argparse %-formats help strings,
    so a stray "%" in one breaks the page)."""
    stages = cli.build_parser()._subparsers._group_actions[0].choices
    for argv in (["--help"], *([stage, "--help"] for stage in stages)):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 0, argv
        assert "usage: cnnbench" in capsys.readouterr().out
