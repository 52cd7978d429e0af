"""Hostile archives through the real pipeline: a data mirror serves them, `download` verifies and
stores them (their checksums are right: the mirror is the attacker), `preprocess` must refuse them.

Each case checks the message (exit status 1, one line naming the archive and the member or the
limit), that no pickle code ran (a marker file is never created), that nothing was written
outside the project's data directory, and that no prepared data set appeared.
"""

from __future__ import annotations

import json
import stat
import zipfile
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
    jpeg,
    make_mirror,
    make_project,
    read_params,
    set_key,
    write_params,
    write_tar,
)

ABS_TARGET = "/tmp/cnnbench-reliability-absolute-evil"


def _code_pickles(marker: Path) -> dict[str, bytes]:
    """Pickles that create ``marker`` if unpickled by a plain pickle.load."""
    cmd = f"touch {marker}".encode()
    code = f"open({str(marker)!r}, 'w').close()".encode()
    return {
        "posix.system": b"cposix\nsystem\n(S'" + cmd + b"'\ntR.",
        "builtins.exec": b"\x80\x02cbuiltins\nexec\nq\x00X" + len(code).to_bytes(4, "little") + code + b"\x85R.",
    }


def forge_declared_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size that the local and central zip headers declare for ``member``."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, name_len_at, name_at, size_at in ((b"PK\x03\x04", 26, 30, 22), (b"PK\x01\x02", 28, 46, 24)):
        i = data.find(sig)
        while i >= 0:
            n = int.from_bytes(data[i + name_len_at : i + name_len_at + 2], "little")
            if data[i + name_at : i + name_at + n] == name:
                data[i + size_at : i + size_at + 4] = size.to_bytes(4, "little")
            i = data.find(sig, i + 4)
    path.write_bytes(bytes(data))


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


# Each case: (dataset, builder(tmp, marker) -> archive bytes, params edits, fragments of the message).
def _cifar_pickle(which: str, member: str):
    def build(tmp: Path, marker: Path) -> bytes:
        members = cifar_members()
        members[f"cifar-10-batches-py/{member}"] = _code_pickles(marker)[which]
        return write_tar(tmp / CIFAR_NAME, members).read_bytes()
    return build


def _cifar_extra(name: str, link: str | None = None):
    def build(tmp: Path, marker: Path) -> bytes:
        members = cifar_members()
        links = {}
        if link is None:
            members[name] = b"evil"
        else:
            members.pop(name, None)
            links[name] = link
        return write_tar(tmp / CIFAR_NAME, members, links).read_bytes()
    return build


def _zip(extra=None, compression=None, forge=None):
    def build(tmp: Path, marker: Path) -> bytes:
        files, rows = good_butterflies()
        infos = [(info if isinstance(info, zipfile.ZipInfo) else zipfile.ZipInfo(info), data)
                 for info, data in (extra or [])]
        path = butterfly_zip(tmp / BUTTERFLY_NAME, files, rows, infos, compression)
        for member, size in (forge or {}).items():
            forge_declared_size(path, member, size)
        return path.read_bytes()
    return build


BOMB = [("train/ALPHA/bomb.jpg", b"\0" * 40_000_000)]  # deflates to ~40 KB
HUGE = {f"train/ALPHA/{i}.jpg": 0xFFFF0000 for i in range(2)} | {"train/BETA/0.jpg": 0xFFFF0000}

CASES = {
    "cifar-pickle-os-system": ("cifar10", _cifar_pickle("posix.system", "data_batch_2"), {},
                               ["refusing to load global posix.system", "data_batch_2"]),
    "cifar-pickle-exec": ("cifar10", _cifar_pickle("builtins.exec", "batches.meta"), {},
                          ["refusing to load global builtins.exec", "batches.meta"]),
    "cifar-tar-dotdot": ("cifar10", _cifar_extra("cifar-10-batches-py/../../evil"), {},
                         ["unsafe member path 'cifar-10-batches-py/../../evil'"]),
    "cifar-tar-absolute": ("cifar10", _cifar_extra(ABS_TARGET), {}, [f"unsafe member path '{ABS_TARGET}'"]),
    "cifar-tar-symlink-batch": ("cifar10", _cifar_extra("cifar-10-batches-py/data_batch_1", "/etc/passwd"), {},
                                ["'cifar-10-batches-py/data_batch_1' -> '/etc/passwd'", "symbolic link"]),
    "cifar-tar-symlink-other": ("cifar10", _cifar_extra("cifar-10-batches-py/escape", "../../.."), {},
                                ["'cifar-10-batches-py/escape' -> '../../..'", "symbolic link"]),
    "zip-dotdot": ("butterflies", _zip([("train/../../evil.jpg", jpeg())]), {},
                   ["unsafe member 'train/../../evil.jpg'", "'..' path component"]),
    "zip-absolute": ("butterflies", _zip([(ABS_TARGET + ".jpg", jpeg())]), {},
                     [f"unsafe member '{ABS_TARGET}.jpg'", "absolute path"]),
    "zip-symlink": ("butterflies", _zip([(_symlink_info("train/ALPHA/link.jpg"), b"/etc/passwd")]), {},
                    ["unsafe member 'train/ALPHA/link.jpg'", "symbolic link"]),
    "zip-bomb-deflate": ("butterflies", _zip(BOMB, zipfile.ZIP_DEFLATED),
                         {"datasets.butterflies.max_uncompressed_bytes": 10_000_000},
                         ["declares", "datasets.butterflies.max_uncompressed_bytes = 10000000"]),
    "zip-bomb-declared": ("butterflies", _zip(forge=HUGE), {},  # the default 8 GiB limit of params.yaml
                          ["more than the limit datasets.butterflies.max_uncompressed_bytes = 8589934592"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_archive_is_refused(tmp_path, case):
    dataset, build, edits, fragments = CASES[case]
    marker = tmp_path / "PWNED"
    filename = CIFAR_NAME if dataset == "cifar10" else BUTTERFLY_NAME
    mirror = make_mirror(tmp_path / "mirror", {f"{dataset}/{filename}": build(tmp_path / "build", marker)})
    root = make_project(tmp_path / "project")
    doc = read_params(root)
    set_key(doc, "datasets.butterflies.noisy_classes", [])
    for key, value in edits.items():
        set_key(doc, key, value)
    write_params(root, doc)
    before = files_under(tmp_path)

    rc, err = cli(root, "-q", "download", "--dataset", dataset, mirror=mirror)
    assert rc == 0, err
    rc, err = cli(root, "preprocess", "--dataset", dataset, mirror=mirror)
    assert rc == 1, err
    line = [ln for ln in err.splitlines() if ln.startswith("cnnbench preprocess: error:")]
    assert len(line) == 1, err
    assert filename in line[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in line[0], line[0]

    assert not marker.exists(), "the pickle's code ran"
    new = files_under(tmp_path) - before
    assert new == {f"project/data/raw/{dataset}/{filename}", f"project/data/raw/{dataset}/source.json"}, new
    assert not Path(ABS_TARGET).exists() and not Path(ABS_TARGET + ".jpg").exists()
    assert not (root / "data" / "prepared").exists() or list((root / "data" / "prepared").iterdir()) == []


@pytest.mark.parametrize("on_bad_image", ["skip", "fail"])
def test_member_lying_about_its_size_is_cut_at_the_declared_size(tmp_path, on_bad_image):
    """A member that declares 1000 bytes but inflates to 40 MB is read only up to its declared
    size, fails its CRC and is handled as a bad image: skipped and listed, or fatal with `fail`."""
    files, rows = good_butterflies()
    rows.append(("train/ALPHA/bomb.jpg", "ALPHA", "train"))
    path = butterfly_zip(tmp_path / "b" / BUTTERFLY_NAME, files, rows, [(zipfile.ZipInfo("train/ALPHA/bomb.jpg"),
                         BOMB[0][1])], zipfile.ZIP_DEFLATED)
    forge_declared_size(path, "train/ALPHA/bomb.jpg", 1000)
    mirror = make_mirror(tmp_path / "mirror", {f"butterflies/{BUTTERFLY_NAME}": path})
    root = make_project(tmp_path / "project")
    doc = read_params(root)
    set_key(doc, "datasets.butterflies.noisy_classes", [])
    set_key(doc, "datasets.butterflies.image_size", 32)
    set_key(doc, "datasets.butterflies.on_bad_image", on_bad_image)
    write_params(root, doc)
    assert cli(root, "-q", "download", "--dataset", "butterflies", mirror=mirror)[0] == 0
    rc, err = cli(root, "-q", "preprocess", "--dataset", "butterflies", mirror=mirror)
    if on_bad_image == "fail":
        assert rc == 1 and "bad image 'train/ALPHA/bomb.jpg'" in err and "cannot be read" in err, err
        assert not (root / "data/prepared/butterflies").exists()
        return
    assert rc == 0, err
    manifest = json.loads((root / "data/prepared/butterflies/manifest.json").read_text())
    reasons = {e["file"]: e["reason"] for e in manifest["excluded"]}
    assert "cannot be read" in reasons["train/ALPHA/bomb.jpg"] and "CRC" in reasons["train/ALPHA/bomb.jpg"], reasons
    assert manifest["splits"]["train"]["count"] == len([r for r in rows if r[2] == "train"]) - 1
