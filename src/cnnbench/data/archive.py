"""Read the members of a downloaded ``.zip``, ``.tar``, ``.tar.gz``/``.tgz`` (or ``.tar.bz2``/``.tar.xz``)
in memory, never extracting anything to disk.

Before any member is read the whole member list is checked, and the archive is refused outright
when a member has an absolute path, a drive letter or a ``..`` component, is a symbolic or hard
link (or a device or fifo, in a tar), appears twice, or when the declared sizes add up to more
than the data set's ``max_uncompressed_bytes`` (a zip bomb, or the wrong file). The kind of
archive is told from its content, not its name.

Member names are normalised (`norm_name`): backslashes become ``/`` and a leading ``./`` is
dropped; folders are not listed in `Archive.files` but in `Archive.dirs` (an empty class folder
is only visible as a folder member).
"""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from cnnbench.errors import DataError

__all__ = ["Archive", "open_archive", "member_problem", "norm_name", "check_zip_members", "READ_ERRORS"]

# What reading a member of a damaged archive raises (the member is then a bad image, not a crash).
READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError, NotImplementedError)


def norm_name(name: str) -> str:
    """A member name as the data sets' indexes write it: ``/`` separators, no leading ``./``."""
    name = name.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def member_problem(name: str) -> str | None:
    """Why a member name is unsafe to use as a path (None when it is safe)."""
    parts = re.split(r"[\\/]", name)
    if name.startswith(("/", "\\")):
        return "absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "drive letter"
    if ".." in parts:
        return "'..' path component"
    return None


def _unsafe(name: str, archive: Path, problem: str, hint: str) -> DataError:
    return DataError(
        f"unsafe member {name!r} in {archive}: {problem}. Archives with absolute paths, drive letters, "
        f"'..' components or links are refused; {hint}"
    )


def _check_total(total: int, archive: Path, limit: int, limit_key: str) -> None:
    if total > limit:
        raise DataError(
            f"{archive} declares {total} bytes uncompressed, more than the limit {limit_key} = {limit}; "
            f"refusing it (a zip bomb or the wrong file). If the archive is genuine, raise {limit_key}"
        )


def check_zip_members(zf: zipfile.ZipFile, archive: Path, max_uncompressed_bytes: int, *,
                      limit_key: str, hint: str) -> int:
    """Refuse an unsafe zip; return the total declared uncompressed size.

    Raises:
        DataError: a member has an absolute path, a drive letter or a ``..`` component or is a
            symlink (the message names it and ends with `hint`: what to do), or the declared sizes
            add up to more than `max_uncompressed_bytes` (the message names `limit_key`).
    """
    total = 0
    for info in zf.infolist():
        problem = member_problem(info.filename)
        if problem is None and stat.S_ISLNK(info.external_attr >> 16):
            problem = "symbolic link"
        if problem is not None:
            raise _unsafe(info.filename, archive, problem, hint)
        total += info.file_size
    _check_total(total, archive, max_uncompressed_bytes, limit_key)
    return total


def _check_tar_member(member: tarfile.TarInfo, archive: Path, hint: str) -> None:
    problem = member_problem(member.name)
    if problem is None and not (member.isfile() or member.isdir()):
        kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "device or fifo"
        target = f" -> {member.linkname!r}" if member.issym() or member.islnk() else ""
        problem = f"{kind}{target}, not a regular file"
    if problem is not None:
        raise _unsafe(member.name, archive, problem, hint)


class Archive:
    """An opened, checked archive: its files (normalised name -> size) and folders, read in memory."""

    def __init__(self, path: Path, handle: zipfile.ZipFile | tarfile.TarFile, entries: dict[str, object],
                 dirs: set[str], total_bytes: int) -> None:
        self.path = path
        self.kind = "zip" if isinstance(handle, zipfile.ZipFile) else "tar"
        self._handle = handle
        self._entries = entries  # normalised name -> ZipInfo | TarInfo, files only, in archive order
        self.files: dict[str, int] = {n: _size(e) for n, e in entries.items()}
        self.dirs = dirs
        self.total_bytes = total_bytes

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def read(self, name: str) -> bytes:
        """The bytes of file member `name` (a normalised name); raises one of `READ_ERRORS` when damaged."""
        entry = self._entries[name]
        if isinstance(self._handle, zipfile.ZipFile):
            return self._handle.read(entry)  # type: ignore[arg-type]
        f = self._handle.extractfile(entry)  # type: ignore[arg-type]
        if f is None:  # a checked archive holds only files and folders; this is a bug, not bad data
            raise RuntimeError(f"{self.path}: {name} is not a regular file")
        with f:
            return f.read()

    def read_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes | None, str | None]]:
        """``(name, bytes, None)`` or ``(name, None, why it cannot be read)`` for each of `names`, in
        archive order: a compressed tar is then read in one forward pass."""
        wanted = set(names)
        for name in self._entries:
            if name not in wanted:
                continue
            try:
                yield name, self.read(name), None
            except READ_ERRORS as e:
                yield name, None, f"{self.kind} member cannot be read ({type(e).__name__}: {e})"


def _size(entry: object) -> int:
    return int(entry.file_size if isinstance(entry, zipfile.ZipInfo) else entry.size)  # type: ignore[attr-defined]


def _add(entries: dict[str, object], dirs: set[str], raw: str, entry: object, is_dir: bool,
         archive: Path, hint: str) -> None:
    name = norm_name(raw).rstrip("/")
    if not name:
        return
    if is_dir:
        dirs.add(name)
        return
    if name in entries:
        raise DataError(f"{archive} holds {name!r} twice; cannot tell which copy is meant. {hint}")
    entries[name] = entry


def _open_zip(path: Path, limit: int, limit_key: str, hint: str) -> Archive:
    zf = zipfile.ZipFile(path)
    try:
        total = check_zip_members(zf, path, limit, limit_key=limit_key, hint=hint)
        entries: dict[str, object] = {}
        dirs: set[str] = set()
        for info in zf.infolist():
            _add(entries, dirs, info.filename, info, info.is_dir(), path, hint)
    except BaseException:
        zf.close()
        raise
    return Archive(path, zf, entries, dirs, total)


def _open_tar(path: Path, limit: int, limit_key: str, hint: str) -> Archive:
    tar = tarfile.open(path, "r:*")
    try:
        members = tar.getmembers()  # reads the whole (decompressed) tar once: every check comes first
        entries: dict[str, object] = {}
        dirs: set[str] = set()
        for member in members:
            _check_tar_member(member, path, hint)
            _add(entries, dirs, member.name, member, member.isdir(), path, hint)
        _check_total(sum(m.size for m in members if m.isfile()), path, limit, limit_key)
    except BaseException:
        tar.close()
        raise
    return Archive(path, tar, entries, dirs, sum(m.size for m in members if m.isfile()))


def open_archive(path: Path, *, max_uncompressed_bytes: int, limit_key: str, hint: str, redo: str) -> Archive:
    """Open and check a zip or tar archive (told from its content); use it as a context manager.

    Args:
        path: the archive.
        max_uncompressed_bytes: refuse archives whose members declare more bytes than this.
        limit_key: the param that sets it (e.g. ``datasets.mine.max_uncompressed_bytes``), for messages.
        hint: what to do about an unsafe archive (ends the message).
        redo: what to do about an unreadable one, e.g. "run `cnnbench download --dataset mine` again".

    Raises:
        DataError: the file is neither a readable zip nor a readable tar (also when it is truncated or
            corrupt), or it is unsafe or too large (see the module docstring); the message names it.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _open_zip(path, max_uncompressed_bytes, limit_key, hint)
        if tarfile.is_tarfile(path):
            return _open_tar(path, max_uncompressed_bytes, limit_key, hint)
    except DataError:
        raise
    except READ_ERRORS as e:
        raise DataError(f"{path} is not a readable archive ({type(e).__name__}: {e}); {redo}") from e
    raise DataError(
        f"{path} is not a readable archive: neither a zip nor a tar (.tar, .tar.gz, .tgz) file; {redo}"
    )
