"""Interrupted or corrupt downloads from a real HTTP server on localhost, through `cnnbench download`.

The server drops the connection half-way (with and without a Content-Length), serves a
truncated file, or serves wrong bytes. In every case: exit status 1, an error that names the
file and the checksums, nothing under data/ (no partial file, no staging folder), and a rerun
against a healthy server recovers (and `preprocess` then reads what was fetched).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relsupport import (
    BUTTERFLY_NAME,
    CIFAR_NAME,
    butterfly_zip,
    cifar_members,
    cli,
    files_under,
    good_butterflies,
    make_project,
    read_params,
    set_key,
    write_params,
    write_tar,
)

SERVED: dict[str, bytes] = {}  # file name -> the genuine bytes


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /<mode>/<file>: good, drop (Content-Length, then hang up half-way), drop-unsized
    (no Content-Length, hang up half-way), truncated (a complete response of the first half),
    wrong (the right length, other bytes)."""

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        _, mode, name = self.path.split("/", 2)
        data = SERVED.get(name)
        if data is None:
            self.send_error(404)
            return
        half = data[: len(data) // 2]
        body = {"good": data, "drop": half, "drop-unsized": half, "truncated": half,
                "wrong": bytes(b ^ 0x5A for b in data)}[mode]
        self.send_response(200)
        if mode != "drop-unsized":
            self.send_header("Content-Length", str(len(data) if mode == "drop" else len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if mode.startswith("drop"):
            self.connection.shutdown(socket.SHUT_RDWR)  # hang up mid-transfer
        self.close_connection = True


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("served")
    # ~1.8 MB of random pixels: the transfer spans several 1 MiB reads, so "half-way" is mid-stream.
    cifar = write_tar(tmp / CIFAR_NAME, cifar_members(n=100)).read_bytes()
    files, rows = good_butterflies()
    bfly = butterfly_zip(tmp / BUTTERFLY_NAME, files, rows).read_bytes()
    SERVED.update({CIFAR_NAME: cifar, BUTTERFLY_NAME: bfly})
    return {"cifar10": cifar, "butterflies": bfly}


def _project(tmp: Path, base: str, mode: str, archives: dict[str, bytes]) -> Path:
    root = make_project(tmp / "p") if not (tmp / "p").exists() else tmp / "p"
    doc = read_params(root)
    set_key(doc, "datasets.cifar10.source.url", f"{base}/{mode}/{CIFAR_NAME}")
    set_key(doc, "datasets.cifar10.source.md5", hashlib.md5(archives["cifar10"]).hexdigest())
    set_key(doc, "datasets.butterflies.source.archive", f"{base}/{mode}/{BUTTERFLY_NAME}")
    set_key(doc, "datasets.butterflies.source.sha256", hashlib.sha256(archives["butterflies"]).hexdigest())
    set_key(doc, "datasets.butterflies.noisy_classes", [])
    write_params(root, doc)
    return root


CASES = {
    # mode: words the error must contain besides the file and checksum
    "drop": ["incomplete transfer", "closed early"],
    "drop-unsized": ["checksum mismatch"],
    "truncated": ["checksum mismatch"],
    "wrong": ["checksum mismatch"],
}


@pytest.mark.parametrize("dataset", ["cifar10", "butterflies"])
@pytest.mark.parametrize("mode", list(CASES))
def test_bad_transfer_keeps_nothing_and_rerun_recovers(tmp_path, server, archives, mode, dataset):
    filename = CIFAR_NAME if dataset == "cifar10" else BUTTERFLY_NAME
    algo = "md5" if dataset == "cifar10" else "sha256"
    expected = hashlib.new(algo, archives[dataset]).hexdigest()
    root = _project(tmp_path, server, mode, archives)

    rc, err = cli(root, "download", "--dataset", dataset, mirror=None)
    assert rc == 1, err
    line = [ln for ln in err.splitlines() if ln.startswith("cnnbench download: error:")]
    assert len(line) == 1, err
    msg = line[0]
    assert f"{mode}/{filename}" in msg, msg  # names the file (its URL)
    assert f"expected {algo} {expected}" in msg, msg  # and the checksum it had to match
    for word in CASES[mode]:
        assert word in msg, msg
    if "checksum mismatch" in msg:
        assert ", got " in msg  # the checksum it actually got
    # Nothing was kept: no archive, no partial file, no staging folder.
    assert files_under(root / "data") == set(), files_under(root / "data")
    raw_root = root / "data" / "raw"
    assert not raw_root.exists() or list(raw_root.iterdir()) == [], list(raw_root.iterdir())

    # A rerun against a healthy server recovers, and the next stage reads the result.
    root = _project(tmp_path, server, "good", archives)
    rc, err = cli(root, "-q", "download", "--dataset", dataset, mirror=None)
    assert rc == 0, err
    raw = root / "data" / "raw" / dataset
    assert (raw / filename).read_bytes() == archives[dataset]
    source = json.loads((raw / "source.json").read_text())
    assert source[algo] == expected and source["bytes"] == len(archives[dataset])
    assert files_under(root / "data") == {f"raw/{dataset}/{filename}", f"raw/{dataset}/source.json"}
    rc, err = cli(root, "-q", "preprocess", "--dataset", dataset, mirror=None)
    assert rc == 0, err
    assert (root / "data" / "prepared" / dataset / "manifest.json").is_file()
