"""cnnbench.data.fetch: downloads over a real localhost HTTP server and file://, the mirror, kagglehub."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import logging
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnnbench.data import fetch
from cnnbench.data.fetch import ChecksumError, DownloadError
from cnnbench.errors import ConfigError, DataError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, so it takes more than one chunk


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture(autouse=True)
def _no_proxies_no_mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(fetch.MIRROR_ENV, raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/truncated":
            # Announce more than we send, then hang up: a dropped connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, served directory) of a real HTTP server on 127.0.0.1."""
    root = tmp_path_factory.mktemp("www")
    (root / "payload.bin").write_bytes(PAYLOAD)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- download_url
def test_download_http_verifies_md5_and_sha256(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "dl" / "payload.bin"
    out = fetch.download_url(f"{base}/payload.bin", dest, md5=_md5(PAYLOAD), sha256=_sha(PAYLOAD))
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["payload.bin"]


@pytest.mark.parametrize("form", ["file_url", "plain_path"])
def test_download_local_file(served: tuple[str, Path], tmp_path: Path, form: str) -> None:
    _, root = served
    src = root / "payload.bin"
    url = src.as_uri() if form == "file_url" else str(src)
    dest = tmp_path / "payload.bin"
    fetch.download_url(url, dest, sha256=_sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("scheme", ["http", "file"])
@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_download_wrong_checksum_leaves_nothing(
    served: tuple[str, Path], tmp_path: Path, scheme: str, algo: str
) -> None:
    base, root = served
    url = f"{base}/payload.bin" if scheme == "http" else (root / "payload.bin").as_uri()
    wrong = "0" * (32 if algo == "md5" else 64)
    actual = _md5(PAYLOAD) if algo == "md5" else _sha(PAYLOAD)
    dest = tmp_path / "payload.bin"
    with pytest.raises(ChecksumError) as err:
        fetch.download_url(url, dest, **{algo: wrong})
    msg = str(err.value)
    assert wrong in msg and actual in msg and url in msg
    assert _leftovers(tmp_path) == []  # neither dest nor its temporary file


def test_download_truncated_transfer_leaves_nothing(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "payload.bin"
    with pytest.raises(DownloadError, match=r"1000 of \d+ bytes"):
        fetch.download_url(f"{base}/truncated", dest)
    assert _leftovers(tmp_path) == []


def test_download_http_error(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch.download_url(f"{base}/nope.bin", tmp_path / "x.bin")
    assert _leftovers(tmp_path) == []


def test_download_unreachable_is_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        fetch.download_url("http://127.0.0.1:9/x.bin", tmp_path / "x.bin")
    assert _leftovers(tmp_path) == []


def test_checksums(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    assert fetch.sha256sum(path) == _sha(PAYLOAD)
    assert fetch.md5sum(path) == _md5(PAYLOAD)


# --------------------------------------------------------------------------- mirror helpers
def test_resolve_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert fetch.resolve_mirror(None) is None
    assert fetch.resolve_mirror(str(a)) == a.resolve()
    monkeypatch.chdir(tmp_path)
    assert fetch.resolve_mirror("a") == a.resolve()  # relative to the working directory
    monkeypatch.setenv(fetch.MIRROR_ENV, "b")
    assert fetch.resolve_mirror(str(a)) == b.resolve()  # the environment wins over the param
    assert fetch.resolve_mirror(None) == b.resolve()
    monkeypatch.setenv(fetch.MIRROR_ENV, "")
    assert fetch.resolve_mirror("a") == a.resolve()  # empty means unset


def test_resolve_mirror_not_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="nowhere.*param data_mirror"):
        fetch.resolve_mirror(str(tmp_path / "nowhere"))
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(fetch.MIRROR_ENV, str(tmp_path / "file"))
    with pytest.raises(ConfigError, match=f"file.*{fetch.MIRROR_ENV}"):
        fetch.resolve_mirror(str(tmp_path))


def test_read_sha256sums_formats(tmp_path: Path) -> None:
    h1, h2, h3 = "a" * 64, "B" * 64, "c" * 64
    (tmp_path / "SHA256SUMS").write_text(
        f"# comment\n\n{h1}  cifar10/x.tar.gz\n{h2} *butterflies/y z.zip\n{h3}  ./other/f\n"
    )
    assert fetch.read_sha256sums(tmp_path) == {
        "cifar10/x.tar.gz": h1,
        "butterflies/y z.zip": "b" * 64,
        "other/f": h3,
    }
    (tmp_path / "SHA256SUMS").write_text(f"{h1}  ok\nnot a checksum line\n")
    with pytest.raises(DownloadError, match=r"SHA256SUMS:2"):
        fetch.read_sha256sums(tmp_path)


def test_read_sha256sums_real_mirror(mirror_dir: Path) -> None:
    sums = fetch.read_sha256sums(mirror_dir)
    assert set(sums) >= {"cifar10/cifar-10-python.tar.gz", "butterflies/butterfly-images40-species.zip"}


# --------------------------------------------------------------------------- fetch_dataset
CIFAR_NAME = "cifar-10-python.tar.gz"


def _cifar_cfg(url: str = "http://127.0.0.1:9/unreachable.tar.gz", md5: str = "0" * 32) -> dict:
    return {"url": url, "md5": md5, "filename": CIFAR_NAME, "val_fraction": 0.1, "split_seed": 0}


def test_fetch_from_real_mirror(mirror_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw" / "cifar10"
    record = fetch.fetch_dataset("cifar10", _cifar_cfg(), out, mirror_dir)
    expected = fetch.read_sha256sums(mirror_dir)[f"cifar10/{CIFAR_NAME}"]
    src = mirror_dir / "cifar10" / CIFAR_NAME
    assert record["source"] == "mirror"
    assert record["location"] == str(src)
    assert record["sha256"] == expected == fetch.sha256sum(out / CIFAR_NAME)
    assert record["md5"] == fetch.md5sum(out / CIFAR_NAME)
    assert record["bytes"] == src.stat().st_size
    assert record["dataset"] == "cifar10" and record["filename"] == CIFAR_NAME
    assert json.loads((out / "source.json").read_text()) == record
    assert sorted(p.name for p in out.iterdir()) == [CIFAR_NAME, "source.json"]
    assert _leftovers(out.parent) == ["cifar10"]  # no staging directory left behind


def _fake_mirror(root: Path, content: bytes, listed: bytes | None, with_sums: bool = True) -> Path:
    (root / "cifar10").mkdir(parents=True)
    (root / "cifar10" / CIFAR_NAME).write_bytes(content)
    if with_sums:
        lines = f"{_sha(listed)}  cifar10/{CIFAR_NAME}\n" if listed is not None else f"{'1' * 64}  other/file\n"
        (root / "SHA256SUMS").write_text(lines)
    return root


def test_fetch_corrupt_mirror_file_is_an_error(tmp_path: Path) -> None:
    mirror = _fake_mirror(tmp_path / "mirror", b"corrupted bytes", listed=b"the real archive")
    out = tmp_path / "raw" / "cifar10"
    with pytest.raises(ChecksumError) as err:
        fetch.fetch_dataset("cifar10", _cifar_cfg(), out, mirror)
    assert _sha(b"the real archive") in str(err.value)
    assert _sha(b"corrupted bytes") in str(err.value)
    assert not out.exists()
    assert _leftovers(out.parent) == []


@pytest.mark.parametrize("problem", ["no_entry", "no_sha256sums"])
def test_fetch_unverifiable_mirror_falls_through_to_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, problem: str
) -> None:
    mirror = _fake_mirror(tmp_path / "mirror", b"mirror copy", listed=None, with_sums=problem == "no_entry")
    official = tmp_path / "official.tar.gz"
    official.write_bytes(PAYLOAD)
    out = tmp_path / "raw" / "cifar10"
    with caplog.at_level(logging.WARNING, logger="cnnbench.fetch"):
        record = fetch.fetch_dataset("cifar10", _cifar_cfg(official.as_uri(), _md5(PAYLOAD)), out, mirror)
    assert record["source"] == "url" and record["location"] == official.as_uri()
    assert (out / CIFAR_NAME).read_bytes() == PAYLOAD
    assert any("SHA256SUMS" in r.getMessage() for r in caplog.records if r.name == "cnnbench.fetch")


def test_fetch_url_md5_mismatch(tmp_path: Path) -> None:
    official = tmp_path / "official.tar.gz"
    official.write_bytes(PAYLOAD)
    out = tmp_path / "raw" / "cifar10"
    with pytest.raises(ChecksumError, match=f"expected md5 {'0' * 32}, got {_md5(PAYLOAD)}"):
        fetch.fetch_dataset("cifar10", _cifar_cfg(official.as_uri(), "0" * 32), out, None)
    assert _leftovers(out.parent) == []


def test_fetch_env_mirror_overrides_param(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _fake_mirror(tmp_path / "env_mirror", b"env archive", listed=b"env archive")
    bad = _fake_mirror(tmp_path / "param_mirror", b"param archive", listed=b"something else")
    monkeypatch.setenv(fetch.MIRROR_ENV, str(good))
    mirror = fetch.resolve_mirror(str(bad))
    record = fetch.fetch_dataset("cifar10", _cifar_cfg(), tmp_path / "out", mirror)
    assert record["source"] == "mirror" and record["location"].startswith(str(good.resolve()))
    assert (tmp_path / "out" / CIFAR_NAME).read_bytes() == b"env archive"


def test_fetch_failure_keeps_out_dir_atomic(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    parent = tmp_path / "raw"
    out = parent / "cifar10"
    # A dropped connection: no out_dir, no staging directory.
    with pytest.raises(DownloadError, match="incomplete transfer"):
        fetch.fetch_dataset("cifar10", _cifar_cfg(f"{base}/truncated"), out, None)
    assert _leftovers(parent) == []
    # A complete earlier result survives a failed re-run untouched ...
    ok = fetch.fetch_dataset("cifar10", _cifar_cfg(f"{base}/payload.bin", _md5(PAYLOAD)), out, None)
    with pytest.raises(DownloadError):
        fetch.fetch_dataset("cifar10", _cifar_cfg(f"{base}/truncated"), out, None)
    assert json.loads((out / "source.json").read_text()) == ok
    assert _leftovers(parent) == ["cifar10"]
    # ... and a successful re-run replaces it wholesale.
    (out / "stale.txt").write_text("from an older run")
    fetch.fetch_dataset("cifar10", _cifar_cfg(f"{base}/payload.bin", _md5(PAYLOAD)), out, None)
    assert sorted(p.name for p in out.iterdir()) == [CIFAR_NAME, "source.json"]
    assert _leftovers(parent) == ["cifar10"]


# --------------------------------------------------------------------------- butterflies sources
ZIP_NAME = "butterfly-images40-species.zip"


def _bfly_cfg(**overrides: object) -> dict:
    cfg = {
        "kaggle_handle": "gpiosenka/butterfly-images40-species",
        "archive": None,
        "sha256": None,
        "filename": ZIP_NAME,
    }
    cfg.update(overrides)
    return cfg


def test_fetch_archive_local_path_and_url(served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = served
    monkeypatch.chdir(root)
    record = fetch.fetch_dataset("butterflies", _bfly_cfg(archive="payload.bin", sha256=_sha(PAYLOAD)), tmp_path / "a", None)
    assert record["source"] == "path" and record["location"] == str(root / "payload.bin")
    assert (tmp_path / "a" / ZIP_NAME).read_bytes() == PAYLOAD
    record = fetch.fetch_dataset("butterflies", _bfly_cfg(archive=f"{base}/payload.bin"), tmp_path / "b", None)
    assert record["source"] == "url" and record["sha256"] == _sha(PAYLOAD)
    with pytest.raises(ChecksumError):
        fetch.fetch_dataset("butterflies", _bfly_cfg(archive="payload.bin", sha256="f" * 64), tmp_path / "c", None)
    assert not (tmp_path / "c").exists()
    with pytest.raises(DownloadError, match="archive = 'missing.zip'"):
        fetch.fetch_dataset("butterflies", _bfly_cfg(archive="missing.zip"), tmp_path / "d", None)


def _kaggle_tree(root: Path) -> Path:
    files = {
        "butterflies and moths.csv": b"class id,filepaths,labels,data set\n",
        "train/ADONIS/1.jpg": b"jpeg-1",
        "train/ADONIS/2.jpg": b"jpeg-2",
        "valid/ADONIS/1.jpg": b"jpeg-3",
        "test/ZEBRA/1.jpg": b"jpeg-4",
        "EfficientNetB0-100-(224 X 224)- 97.59.h5": b"model",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_fetch_kagglehub_repacks_deterministically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kagglehub

    tree = _kaggle_tree(tmp_path / "kaggle_cache")
    calls: list[str] = []

    def fake_download(handle: str, *args: object, **kwargs: object) -> str:
        calls.append(handle)
        return str(tree)

    monkeypatch.setattr(kagglehub, "dataset_download", fake_download)
    first = fetch.fetch_dataset("butterflies", _bfly_cfg(), tmp_path / "one", None)
    for path in tree.rglob("*"):  # new timestamps must not change the archive
        os.utime(path, (1_700_000_000, 1_700_000_000))
    second = fetch.fetch_dataset("butterflies", _bfly_cfg(), tmp_path / "two", None)
    assert calls == ["gpiosenka/butterfly-images40-species"] * 2
    assert first["source"] == "kaggle" and first["location"] == "kaggle:gpiosenka/butterfly-images40-species"
    assert first["sha256"] == second["sha256"] == fetch.sha256sum(tmp_path / "two" / ZIP_NAME)
    with zipfile.ZipFile(tmp_path / "one" / ZIP_NAME) as zf:
        names = zf.namelist()
        assert names == sorted(names) and "train/ADONIS/1.jpg" in names and len(names) == 6
        assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        assert zf.read("valid/ADONIS/1.jpg") == b"jpeg-3"


def test_fetch_kagglehub_failure_is_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kagglehub

    def broken(handle: str, *args: object, **kwargs: object) -> str:
        raise ConnectionError("no network")

    monkeypatch.setattr(kagglehub, "dataset_download", broken)
    with pytest.raises(DownloadError, match="no network.*datasets.butterflies.source.archive"):
        fetch.fetch_dataset("butterflies", _bfly_cfg(), tmp_path / "out", None)
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- a local folder as the source
def _image_tree(root: Path) -> Path:
    files = {"train/cat/1.png": b"png-1", "train/cat/2.jpg": b"jpeg-2", "test/cat/1.png": b"png-3",
             "labels.csv": b"file,label\n"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "train" / "dog").mkdir()  # an empty class folder must stay visible to preprocess
    return root


def _folder_cfg(folder: Path, **overrides: object) -> dict:
    return {"archive": str(folder), "sha256": None, "filename": "mine.zip", **overrides}


def test_fetch_folder_is_packed_into_a_deterministic_zip(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "images")
    first = fetch.fetch_dataset("mine", _folder_cfg(tree), tmp_path / "one", None)
    assert first["source"] == "folder" and first["location"] == str(tree) and first["filename"] == "mine.zip"
    assert first["sha256"] == fetch.sha256sum(tmp_path / "one" / "mine.zip")
    assert json.loads((tmp_path / "one" / "source.json").read_text()) == first
    with zipfile.ZipFile(tmp_path / "one" / "mine.zip") as zf:
        assert zf.namelist() == ["labels.csv", "test/cat/1.png", "train/cat/1.png", "train/cat/2.jpg", "train/dog/"]
        assert zf.getinfo("train/dog/").is_dir() and zf.read("train/cat/2.jpg") == b"jpeg-2"
    for path in tree.rglob("*"):  # new timestamps must not change the archive
        os.utime(path, (1_700_000_000, 1_700_000_000))
    # the recorded sha256 can be pinned: the same folder packs to the same bytes
    second = fetch.fetch_dataset("mine", _folder_cfg(tree, sha256=first["sha256"]), tmp_path / "two", None)
    assert second["sha256"] == first["sha256"]
    (tree / "train" / "cat" / "3.png").write_bytes(b"new")
    with pytest.raises(ChecksumError, match="the zip of folder"):
        fetch.fetch_dataset("mine", _folder_cfg(tree, sha256=first["sha256"]), tmp_path / "three", None)
    assert _leftovers(tmp_path / "three") == [] and not (tmp_path / "three").exists()


def test_fetch_folder_errors(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "images")
    with pytest.raises(ConfigError, match=r"datasets.mine.source.filename = 'mine.tar.gz' does not end in .zip"):
        fetch.fetch_dataset("mine", _folder_cfg(tree, filename="mine.tar.gz"), tmp_path / "a", None)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DownloadError, match="datasets.mine.source.archive is the folder .*empty, which holds no files"):
        fetch.fetch_dataset("mine", _folder_cfg(tmp_path / "empty"), tmp_path / "b", None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_fetch_tar_gz_file_is_copied_as_it_is(tmp_path: Path) -> None:
    import tarfile

    tree = _image_tree(tmp_path / "images")
    with tarfile.open(tmp_path / "mine.tar.gz", "w:gz") as tar:
        tar.add(tree, "images")
    data = (tmp_path / "mine.tar.gz").read_bytes()
    record = fetch.fetch_dataset("mine", _folder_cfg(tmp_path / "mine.tar.gz", filename="mine.tar.gz", sha256=_sha(data)),
                                 tmp_path / "out", None)
    assert record["source"] == "path" and (tmp_path / "out" / "mine.tar.gz").read_bytes() == data


def test_read_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cnnbench download --dataset cifar10"):
        fetch.read_source(tmp_path, "cifar10")
    (tmp_path / "source.json").write_text('{"source": "mirror"}')
    assert fetch.read_source(tmp_path, "cifar10") == {"source": "mirror"}
