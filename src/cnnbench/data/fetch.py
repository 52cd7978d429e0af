"""Get a data set's archive onto disk, verified, from the first source that has it.

Sources, in order (see `fetch_dataset`):

1. a local **mirror** laid out as ``<mirror>/<dataset>/<filename>`` with a
   ``SHA256SUMS`` file (``sha256sum`` format, paths relative to the mirror);
   the environment variable ``CNNBENCH_DATA_MIRROR`` overrides the ``data_mirror``
   param;
2. ``url`` (CIFAR-10: the official archive, checked against ``md5``);
3. ``archive``: a URL, a local file (any archive: ``.zip``, ``.tar``, ``.tar.gz``...), both
   checked against ``sha256`` when set, or a local *folder*, packed into one deterministic zip
   (whose sha256 is recorded, and checked against ``sha256`` when set);
4. ``kaggle_handle`` via ``kagglehub``, whose extracted files are repacked into one
   deterministic zip so that later stages always read a single archive.

The result is a directory holding the archive and ``source.json`` (where it came
from, checksums, size). It is built under a hidden sibling name and renamed into
place at the end. Progress bars are tqdm's; set ``TQDM_DISABLE=1`` to silence them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from cnnbench.atomic import atomic_write, replace_dir, temp_dir
from cnnbench.errors import ChecksumError, ConfigError, DataError, DownloadError

__all__ = [
    "locate_archive",
    "DownloadError",
    "ChecksumError",
    "MIRROR_ENV",
    "TIMEOUT_S",
    "sha256sum",
    "md5sum",
    "resolve_mirror",
    "read_sha256sums",
    "download_url",
    "fetch_dataset",
    "read_source",
]

log = logging.getLogger("cnnbench.fetch")

MIRROR_ENV = "CNNBENCH_DATA_MIRROR"
TIMEOUT_S = 60.0  # seconds for connect and for each read; a stalled server fails instead of hanging
_CHUNK = 1 << 20
_USER_AGENT = "cnnbench-fetch/0.1 (+python-urllib)"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest DOS timestamp: fixed so repacked zips are reproducible


# --------------------------------------------------------------------------- checksums
def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256sum(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    return _hash_file(Path(path), "sha256")


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks (only to compare with published md5s)."""
    return _hash_file(Path(path), "md5")


@dataclass
class _Digest:
    sha256: str
    md5: str
    bytes: int


class _Hasher:
    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)  # only to compare with published md5s
        self.bytes = 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._md5.update(chunk)
        self.bytes += len(chunk)

    def digest(self) -> _Digest:
        return _Digest(self._sha.hexdigest(), self._md5.hexdigest(), self.bytes)


def _expected(md5: str | None, sha256: str | None) -> str:
    """``"; it had to match md5 <hash>"`` for the checksums that were given, else ``""``."""
    given = [f"{algo} {value.strip().lower()}" for algo, value in (("md5", md5), ("sha256", sha256)) if value]
    return f"; expected {' and '.join(given)}" if given else ""


def _check(digest: _Digest, what: str, *, md5: str | None, sha256: str | None) -> None:
    """Raise ChecksumError if an expected checksum (None or "" = not given) does not match."""
    for algo, expected, actual in (("md5", md5, digest.md5), ("sha256", sha256, digest.sha256)):
        if expected and expected.strip().lower() != actual:
            raise ChecksumError(
                f"checksum mismatch for {what}: expected {algo} {expected.strip().lower()}, "
                f"got {actual} ({digest.bytes} bytes). The file is corrupt or the source changed; "
                "nothing was kept. Retry, or fix the configured checksum if the source changed on purpose."
            )


# --------------------------------------------------------------------------- mirror
def resolve_mirror(param_value: str | None) -> Path | None:
    """Return the mirror directory to use, or None when no mirror is configured.

    The environment variable ``CNNBENCH_DATA_MIRROR`` (when set and non-empty) wins
    over `param_value` (the ``data_mirror`` param). Relative paths are resolved
    against the current working directory.

    Raises:
        ConfigError: the configured mirror is not an existing directory.
    """
    env = os.environ.get(MIRROR_ENV, "").strip()
    if env:
        value, origin = env, f"environment variable {MIRROR_ENV}"
    elif param_value is not None and str(param_value).strip():
        value, origin = str(param_value).strip(), "param data_mirror"
    else:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.is_dir():
        raise ConfigError(
            f"data mirror {value!r} from {origin} (resolved to {path}) is not a directory; "
            f"point {origin} at a folder laid out as <mirror>/<dataset>/<file> with a SHA256SUMS, "
            "or unset it to download from the official sources"
        )
    return path.resolve()


def read_sha256sums(mirror: Path) -> dict[str, str]:
    """Parse ``<mirror>/SHA256SUMS`` into ``{relative_path: lowercase_hex}``.

    Accepts the output of ``sha256sum`` (``HASH  path``), the binary marker
    (``HASH *path``), GNU's backslash-escaped names, blank lines and ``#`` comments.

    Raises:
        FileNotFoundError: no SHA256SUMS in the mirror.
        DownloadError: a malformed line (the message names file and line number).
    """
    sums_path = Path(mirror) / "SHA256SUMS"
    text = sums_path.read_text(encoding="utf-8")
    sums: dict[str, str] = {}
    line_re = re.compile(r"^(\\?)([0-9a-fA-F]{64}) [ *](.+)$")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            raise DownloadError(
                f"{sums_path}:{lineno}: malformed line {line!r}; expected '<64 hex digits>  <path>' "
                "as written by `sha256sum`"
            )
        escaped, digest, name = m.groups()
        if escaped:
            name = name.replace("\\\\", "\0").replace("\\n", "\n").replace("\\r", "\r").replace("\0", "\\")
        while name.startswith("./"):
            name = name[2:]
        sums[name] = digest.lower()
    return sums


# --------------------------------------------------------------------------- downloads
def _progress(total: int | None, desc: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, mininterval=0.5, leave=False)


def _to_url(url_or_path: str) -> str:
    """http(s)/file URLs pass through; anything else is a local path turned into file://."""
    scheme = urllib.parse.urlsplit(url_or_path).scheme.lower()
    if scheme in ("http", "https", "file"):
        return url_or_path
    if scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive letter
        raise DownloadError(f"unsupported URL scheme {scheme!r} in {url_or_path!r}; use http(s)://, file:// or a path")
    path = Path(url_or_path).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    return path.as_uri()


def _receive(
    src: IO[bytes],
    dest: Path,
    *,
    total: int | None,
    what: str,
    md5: str | None = None,
    sha256: str | None = None,
) -> _Digest:
    """Stream `src` into a temporary file next to `dest`; verify; rename to `dest`.

    `dest` only ever appears complete and verified: a short read (fewer than `total`
    bytes) or a checksum mismatch raises DownloadError, and the temporary file is
    removed on any error.
    """
    hasher = _Hasher()

    def write(out: IO[bytes]) -> None:
        with _progress(total, dest.name) as bar:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                bar.update(len(chunk))
        if total is not None and hasher.bytes != total:
            raise DownloadError(
                f"incomplete transfer of {what} (for {dest.name}): got {hasher.bytes} of {total} bytes "
                f"(the connection was closed early){_expected(md5, sha256)}; nothing was kept, retry"
            )
        _check(hasher.digest(), f"{what} (for {dest.name})", md5=md5, sha256=sha256)

    atomic_write(dest, write)
    return hasher.digest()


def _download(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None) -> _Digest:
    url = _to_url(url)
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:  # noqa: S310 - schemes checked
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            log.info("downloading %s -> %s (%s bytes)", url, dest, total if total is not None else "unknown")
            return _receive(resp, dest, total=total, what=url, md5=md5, sha256=sha256)
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise DownloadError(
            f"download of {url} failed: {e.reason}. Check the URL and your network, "
            f"or set a local mirror ({MIRROR_ENV} or the data_mirror param)"
        ) from e
    except Exception as e:  # timeouts, connection resets, http.client errors
        raise DownloadError(
            f"download of {url} failed: {type(e).__name__}: {e}{_expected(md5, sha256)}; nothing was kept, retry"
        ) from e


def download_url(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None) -> Path:
    """Download `url` to `dest`, verifying the given checksum(s); return `dest`.

    `url` may be ``http(s)://``, ``file://`` or a plain local path. The data is
    streamed into a temporary file in `dest`'s directory (with a tqdm progress bar)
    and only renamed to `dest` once complete and verified, so `dest` never holds a
    partial or unverified file. Sockets time out after `TIMEOUT_S` seconds.

    Raises:
        DownloadError: network/HTTP error, timeout, fewer bytes than the announced
            Content-Length, or a checksum mismatch (`ChecksumError`, whose message gives
            the expected and actual values). No file is left behind in any of these cases.
    """
    dest = Path(dest)
    _download(url, dest, md5=md5, sha256=sha256)
    return dest


def _copy_file(src: Path, dest: Path, *, md5: str | None = None, sha256: str | None = None) -> _Digest:
    """Copy a local file with progress, hashing on the way; verify, then rename into place."""
    total = src.stat().st_size
    log.info("copying %s -> %s (%d bytes)", src, dest, total)
    with open(src, "rb") as f:
        return _receive(f, dest, total=total, what=str(src), md5=md5, sha256=sha256)


# --------------------------------------------------------------------------- folders and kaggle
def _repack_zip(src_dir: Path, dest: Path, what: str = "kagglehub returned") -> _Digest:
    """Zip every regular file under `src_dir` into `dest`, reproducibly.

    Members are sorted by path, stored uncompressed (JPEGs do not compress), with a
    fixed timestamp and permissions, so the same files always give the same bytes.
    An empty folder becomes a folder member (an empty class folder stays visible to
    preprocess, which refuses it). `what` starts the error message for an empty tree.
    """
    files: list[tuple[str, Path | None]] = []  # (member name, file; None for an empty folder)
    for root, dirs, names in os.walk(src_dir):
        dirs.sort()
        if not dirs and not names and Path(root) != src_dir:
            files.append((Path(root).relative_to(src_dir).as_posix() + "/", None))
        for name in names:
            path = Path(root) / name
            rel = path.relative_to(src_dir).as_posix()
            if path.is_symlink() and not path.resolve().is_relative_to(src_dir.resolve()):
                log.warning("skipping %s: symlink pointing outside %s", rel, src_dir)
                continue
            if not path.is_file():
                log.warning("skipping %s: not a regular file", rel)
                continue
            files.append((rel, path))
    if not any(path is not None for _, path in files):
        raise DownloadError(f"{what} {src_dir}, which holds no files to pack")
    files.sort(key=lambda item: item[0])

    def write(fh: IO[bytes]) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for rel, path in tqdm(files, desc=f"pack {dest.name}", unit="file", mininterval=0.5, leave=False):
                info = zipfile.ZipInfo(rel, date_time=_ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_STORED
                info.create_system = 3  # unix, so external_attr means mode bits everywhere
                if path is None:
                    info.external_attr = ((0o040755 & 0xFFFF) << 16) | 0x10  # a folder (and MS-DOS's folder bit)
                    zf.writestr(info, b"")
                    continue
                info.external_attr = (0o100644 & 0xFFFF) << 16
                info.file_size = path.stat().st_size
                with open(path, "rb") as src, zf.open(info, "w") as out:
                    shutil.copyfileobj(src, out, _CHUNK)

    atomic_write(dest, write)
    hasher = _Hasher()  # of the bytes on disk: zipfile seeks back to fill in headers while writing
    with open(dest, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.digest()


def _from_folder(name: str, folder: Path, dest: Path, sha256: str | None) -> _Digest:
    """Pack a local folder into the zip `dest` (deterministic: `_repack_zip`); check `sha256` when given."""
    if not dest.name.lower().endswith(".zip"):
        raise ConfigError(
            f"datasets.{name}.source.archive = {str(folder)!r} is a folder, which is packed into a zip, but "
            f"datasets.{name}.source.filename = {dest.name!r} does not end in .zip; name it e.g. {name}.zip"
        )
    log.info("packing folder %s into %s", folder, dest.name)
    digest = _repack_zip(folder, dest, what=f"datasets.{name}.source.archive is the folder")
    try:
        _check(digest, f"the zip of folder {folder}", md5=None, sha256=sha256)
    except ChecksumError:
        dest.unlink(missing_ok=True)
        raise
    return digest


def _from_kaggle(handle: str, dest: Path, name: str) -> tuple[_Digest, str]:
    try:
        import kagglehub
    except ImportError as e:  # pragma: no cover - kagglehub is a declared dependency
        raise DownloadError(
            f"kagglehub is not installed; install it, or set datasets.{name}.source.archive "
            f"to a URL/path of the zip, or use a local mirror ({MIRROR_ENV})"
        ) from e
    log.info("downloading kaggle dataset %s with kagglehub", handle)
    try:
        location = Path(kagglehub.dataset_download(handle))
    except Exception as e:
        raise DownloadError(
            f"kagglehub.dataset_download({handle!r}) failed: {type(e).__name__}: {e}. "
            f"Check network access and Kaggle credentials, or set datasets.{name}.source.archive "
            f"to a URL/path of the zip, or use a local mirror ({MIRROR_ENV})"
        ) from e
    if location.is_file() and zipfile.is_zipfile(location):
        return _copy_file(location, dest), str(location)
    if not location.is_dir():
        raise DownloadError(f"kagglehub returned {location}, which is neither a directory nor a zip file")
    inner = [p for p in location.iterdir() if not p.name.startswith(".")]
    if len(inner) == 1 and inner[0].is_file() and inner[0].name == dest.name and zipfile.is_zipfile(inner[0]):
        return _copy_file(inner[0], dest), str(inner[0])
    log.info("repacking %s into %s", location, dest.name)
    return _repack_zip(location, dest), str(location)


# --------------------------------------------------------------------------- orchestration
def _try_mirror(name: str, filename: str, mirror: Path, dest: Path) -> tuple[_Digest, str] | None:
    """Copy from the mirror when it holds a listed file; None when it cannot serve it."""
    rel = f"{name}/{filename}"
    src = mirror / name / filename
    if not src.is_file():
        log.warning("mirror %s has no %s; trying the next source", mirror, rel)
        return None
    try:
        sums = read_sha256sums(mirror)
    except FileNotFoundError:
        log.warning("mirror %s has %s but no SHA256SUMS to verify it; ignoring the mirror copy", mirror, rel)
        return None
    expected = sums.get(rel)
    if expected is None:
        log.warning(
            "%s/SHA256SUMS has no entry for %s; ignoring the unverifiable mirror copy", mirror, rel
        )
        return None
    return _copy_file(src, dest, sha256=expected), str(src)


def fetch_dataset(name: str, ds_cfg: Mapping[str, Any], out_dir: Path, mirror: Path | None) -> dict[str, Any]:
    """Fetch data set `name` into `out_dir` and return its provenance record.

    `out_dir` ends up holding ``ds_cfg["filename"]`` and ``source.json`` =
    ``{"dataset", "source": "mirror"|"url"|"path"|"folder"|"kaggle", "location", "filename",
    "sha256", "md5", "bytes"}`` (the returned dict). The directory is assembled in a
    hidden sibling and renamed into place (replacing an existing `out_dir`) only
    when complete; on any failure `out_dir` is left as it was (absent stays absent).

    Sources are tried in order: the mirror (``<mirror>/<name>/<filename>``, verified
    against the mirror's SHA256SUMS only; a missing file, SHA256SUMS or entry falls
    through with a warning, a mismatch is an error), then ``ds_cfg["url"]`` (verified
    against ``md5``/``sha256`` when given), then ``ds_cfg["archive"]`` (URL, local file
    or local folder packed into a zip (``"source": "folder"``), verified against ``sha256``
    when given), then ``ds_cfg["kaggle_handle"]``.

    Raises:
        DownloadError: no source could provide a verified archive.
    """
    out_dir = Path(out_dir)
    filename = ds_cfg.get("filename")
    if not isinstance(filename, str) or not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
        raise ConfigError(f"datasets.{name}.source.filename must be a plain file name, got {filename!r}")
    tmp = temp_dir(out_dir)
    dest = tmp / filename
    try:
        record = _fetch_into(name, ds_cfg, dest, None if mirror is None else Path(mirror))
        record = {
            "dataset": name,
            "source": record["source"],
            "location": record["location"],
            "filename": filename,
            "sha256": record["sha256"],
            "md5": record["md5"],
            "bytes": record["bytes"],
        }
        (tmp / "source.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("%s: %s from %s (sha256 %s)", name, filename, record["location"], record["sha256"])
    return record


def _record(source: str, location: str, digest: _Digest) -> dict[str, Any]:
    return {"source": source, "location": location, "sha256": digest.sha256, "md5": digest.md5, "bytes": digest.bytes}


def _archive_attempt(name: str, archive: str, sha: str | None, dest: Path) -> tuple[str, Callable[[], dict[str, Any]]]:
    """The attempt that fetches ``source.archive``: a URL, a local file, or a local folder to pack."""
    if not sha:
        log.warning(
            "datasets.%s.source.sha256 is not set, so %s cannot be verified; its sha256 is recorded in source.json",
            name,
            archive,
        )
    if urllib.parse.urlsplit(archive).scheme.lower() in ("http", "https", "file"):
        return f"archive {archive}", lambda: _record("url", archive, _download(archive, dest, sha256=sha))
    path = Path(archive).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path

    def from_path() -> dict[str, Any]:
        if path.is_dir():
            return _record("folder", str(path), _from_folder(name, path, dest, sha))
        if not path.is_file():
            raise DownloadError(
                f"datasets.{name}.source.archive = {archive!r} (resolved to {path}) is not a file or "
                "folder; fix the path or give a URL"
            )
        return _record("path", str(path), _copy_file(path, dest, sha256=sha))

    return f"archive {path}", from_path


def _fetch_into(name: str, cfg: Mapping[str, Any], dest: Path, mirror: Path | None) -> dict[str, Any]:
    """Try the sources in order; write the archive to `dest`; return the source record."""
    skipped: list[str] = []
    if mirror is not None:
        got = _try_mirror(name, dest.name, mirror, dest)
        if got is not None:
            return _record("mirror", got[1], got[0])
        skipped.append(f"mirror {mirror} cannot serve {name}/{dest.name} (see the warnings above)")

    attempts: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    url = cfg.get("url")
    if url:
        url = str(url)
        attempts.append(
            (f"url {url}", lambda: _record("url", url, _download(url, dest, md5=cfg.get("md5"), sha256=cfg.get("sha256"))))
        )
    if cfg.get("archive"):
        attempts.append(_archive_attempt(name, str(cfg["archive"]), cfg.get("sha256"), dest))
    elif cfg.get("kaggle_handle"):
        handle = str(cfg["kaggle_handle"])
        attempts.append(
            (f"kaggle {handle}", lambda: _record("kaggle", f"kaggle:{handle}", _from_kaggle(handle, dest, name)[0]))
        )

    errors = list(skipped)
    if not attempts:
        errors.append(f"datasets.{name}.source has no url, archive or kaggle_handle")
    for label, attempt in attempts:
        try:
            return attempt()
        except ChecksumError:
            raise  # a corrupt or changed file is never papered over by trying the next source
        except DownloadError as e:
            log.warning("%s failed: %s", label, e)
            errors.append(f"{label}: {e}")
    if mirror is None:
        errors.append(f"no mirror is set ({MIRROR_ENV} or the data_mirror param)")
    raise DownloadError(f"could not fetch data set {name!r}: " + "; ".join(errors))


def read_source(raw_dir: Path, dataset: str) -> dict[str, Any]:
    """Read the ``source.json`` that `fetch_dataset` wrote into `raw_dir`.

    Raises:
        DataError: it is missing or not a JSON object (the message says to run the download stage).
    """
    path = Path(raw_dir) / "source.json"
    if not path.is_file():
        raise DataError(f"{path} not found; run `cnnbench download --dataset {dataset}` first")
    try:
        source = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); run `cnnbench download --dataset {dataset}` again") from e
    if not isinstance(source, dict):
        raise DataError(f"{path} must hold a JSON object; run `cnnbench download --dataset {dataset}` again")
    return source


def locate_archive(raw_dir: Path, cfg: Mapping[str, Any], dataset: str) -> Path:
    """The downloaded archive ``raw_dir/<filename>``; errors say which key or stage to fix."""
    filename = cfg.get("filename")
    if not isinstance(filename, str) or not filename:
        raise ConfigError(
            f"datasets.{dataset}.source.filename (the archive's file name) is missing or empty in {dict(cfg)!r}"
        )
    archive = Path(raw_dir) / filename
    if not archive.is_file():
        raise DataError(f"{archive} not found; run `cnnbench download --dataset {dataset}` first")
    return archive
