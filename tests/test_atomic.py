"""cnnbench.atomic: the one temporary-name convention, what a killed writer leaves, and who cleans it up."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cnnbench import atomic

HOST = socket.gethostname()
posix_only = pytest.mark.skipif(os.name != "posix", reason="process liveness is checked with POSIX signals")


def _killed_while_writing(code: str, dest: Path) -> Path:
    """Run ``code`` (which sets ``left``, the temporary it is writing) in a real process that is SIGKILLed
    in the middle of its write; return that temporary."""
    prog = ("import os, signal, sys\nfrom pathlib import Path\nfrom cnnbench import atomic\n"
            "dest = Path(sys.argv[1])\n" + code + "\nprint(left, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", prog, str(dest)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9, proc.stderr
    left = Path(proc.stdout.strip())
    assert left.exists() and left.parent == dest.parent
    return left


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_temporary_name_says_whose_it_is(tmp_path: Path) -> None:
    a, b = atomic.temp_path(tmp_path / "metrics.json"), atomic.temp_path(tmp_path / "metrics.json")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(f".metrics.json.tmp-{os.getpid()}@{HOST}-")
    assert atomic.temp_path(tmp_path / "p", "old").name.startswith(f".p.old-{os.getpid()}@{HOST}-")


# A file: the process dies half-way through atomic_write, after some bytes reached the disk.
KILL_IN_FILE_WRITE = """
def write(fh):
    global left
    fh.write(b"x" * 3000)
    fh.flush()
    os.fsync(fh.fileno())
    left = [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.tmp-")][0]
    print(left, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
atomic.atomic_write(dest, write)
"""

# A folder: the process dies while filling a staging folder of `dest`.
KILL_IN_FOLDER_BUILD = """
left = atomic.temp_dir(dest)
(left / "part.npy").write_bytes(b"x" * 5000)
"""


@posix_only
def test_a_file_write_killed_half_way_is_cleaned_by_the_next_write(tmp_path: Path, caplog) -> None:
    dest = tmp_path / "history.csv"
    left = _killed_while_writing(KILL_IN_FILE_WRITE, dest)
    assert not dest.exists(), "nothing that looks finished"
    assert left.name.startswith(".history.csv.tmp-") and f"@{HOST}-" in left.name and left.stat().st_size == 3000
    with caplog.at_level("WARNING", logger="cnnbench.atomic"):
        atomic.atomic_write_text(dest, "epoch\n1\n")
    assert not left.exists()
    assert f"removed {left} (3.0 kB), left by an interrupted run" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]
    assert dest.read_text() == "epoch\n1\n"


@posix_only
def test_a_folder_build_killed_half_way_is_cleaned_by_the_next_one(tmp_path: Path, caplog) -> None:
    dest = tmp_path / "cifar10"
    left = _killed_while_writing(KILL_IN_FOLDER_BUILD, dest)
    assert left.is_dir() and not dest.exists()
    with caplog.at_level("WARNING", logger="cnnbench.atomic"):
        tmp = atomic.temp_dir(dest)
        (tmp / "done").write_text("yes")
        atomic.replace_dir(tmp, dest)
    assert not left.exists() and f"removed {left}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10"] and (dest / "done").read_text() == "yes"


@posix_only
def test_only_dead_processes_leftovers_on_this_host_are_removed(tmp_path: Path, caplog) -> None:
    dest = tmp_path / "model.pt"
    dead = tmp_path / f".model.pt.tmp-{_dead_pid()}@{HOST}-0a1b2c3d"  # a killed writer's (simulated)
    dead.write_bytes(b"x" * 2_500_000)
    dead_old = tmp_path / f".model.pt.old-{_dead_pid()}@{HOST}-feedbeef"  # swapped aside, then killed
    dead_old.mkdir()
    live = tmp_path / f".model.pt.tmp-{os.getpid()}@{HOST}-12345678"  # this process is still writing it
    live.write_bytes(b"y")
    elsewhere = tmp_path / ".model.pt.tmp-1@another-host.example-abcdef12"  # a shared file system
    elsewhere.write_bytes(b"z")
    legacy = tmp_path / ".model.pt.tmp-4242"  # an older cnnbench's name: no owner
    legacy.write_bytes(b"w")
    other = tmp_path / f".train.json.tmp-{_dead_pid()}@{HOST}-00000000"  # another destination's
    other.write_bytes(b"v")
    with caplog.at_level("WARNING", logger="cnnbench.atomic"):
        atomic.atomic_write_bytes(dest, b"model")
    assert not dead.exists() and not dead_old.exists()
    assert f"removed {dead} (2.5 MB), left by an interrupted run" in caplog.text
    assert live.exists() and elsewhere.exists() and legacy.exists() and other.exists()
    assert f"{legacy}: left by an earlier run (owner unknown)" in caplog.text
    assert dest.read_bytes() == b"model"
    # a sweep of the whole folder (what train does to its run and checkpoint folders) takes every
    # destination's leftovers of dead processes, and still keeps the rest
    atomic.remove_leftovers(tmp_path)
    assert not other.exists()
    assert live.exists() and elsewhere.exists() and legacy.exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "metrics.json"
    atomic.atomic_write_text(dest, "old")

    def fail(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(dest, fail)
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_files_and_folders_get_the_usual_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    atomic.atomic_write_text(tmp_path / "f.txt", "x")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert atomic.temp_dir(tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_csv_text_quotes_what_needs_quoting() -> None:
    rows = [["a,b", 'say "hi"', "two\nlines", None], {"x": "plain", "y": 1.5, "extra": "ignored"}]
    text = atomic.csv_text(rows, ["x", "y", "z", "w"])
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert back == [["x", "y", "z", "w"], ["a,b", 'say "hi"', "two\nlines", ""], ["plain", "1.5", "", ""]]
