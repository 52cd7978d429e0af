"""Small synthetic image data sets on disk, for the imagefolder and csv kinds and the worked example.

`make_image_folder` writes ``train/<class>/``, optionally ``val/<class>/``, and ``test/<class>/`` of
synthetic pictures: each class is one shape in one colour (circle/red, square/green, triangle/blue,
cross/yellow, ring/magenta, bar/cyan) at a random place and size on a noisy grey background, so a
small network can learn them. Sizes (20..80 px, mostly non-square), colour modes (RGB, L, RGBA, P,
CMYK, LA, I;16) and formats (PNG, JPEG, BMP, GIF, WebP when Pillow has it) vary from image to image,
and ``corrupt`` files in train are not readable images (a truncated PNG, a text file, an empty file).
Everything follows from ``seed``: the same call writes the same bytes.
"""

from __future__ import annotations

import csv
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, features

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")
COLOURS = ((220, 40, 40), (40, 180, 60), (50, 70, 230), (230, 210, 40), (200, 60, 200), (40, 200, 210))
# (mode, format) pairs Pillow can write, cycled through the images
_FORMATS = [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "GIF"), ("CMYK", "JPEG"), ("RGB", "JPEG"),
            ("RGB", "BMP"), ("LA", "PNG"), ("P", "PNG"), ("I;16", "PNG")]
if features.check("webp"):
    _FORMATS += [("RGB", "WEBP"), ("RGBA", "WEBP")]
_EXT = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp"}


def draw(cls: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One RGBA picture of class `cls`: its shape in its colour on noise (transparent corners for RGBA)."""
    w, h = size
    noise = rng.integers(90, 150, size=(h, w, 1), dtype=np.uint8).repeat(3, axis=2)
    im = Image.fromarray(noise, "RGB").convert("RGBA")
    pen = ImageDraw.Draw(im)
    side = int(min(w, h) * rng.uniform(0.5, 0.8))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    box, colour = (x0, y0, x0 + side - 1, y0 + side - 1), COLOURS[cls % len(COLOURS)] + (255,)
    shape = SHAPES[cls % len(SHAPES)]
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(x0, y0 + side - 1), (x0 + side // 2, y0), (x0 + side - 1, y0 + side - 1)], fill=colour)
    elif shape == "cross":
        t = max(2, side // 4)
        pen.rectangle((x0 + side // 2 - t // 2, y0, x0 + side // 2 + t // 2, y0 + side - 1), fill=colour)
        pen.rectangle((x0, y0 + side // 2 - t // 2, x0 + side - 1, y0 + side // 2 + t // 2), fill=colour)
    elif shape == "ring":
        pen.ellipse(box, outline=colour, width=max(2, side // 6))
    else:
        pen.rectangle((x0, y0 + side // 3, x0 + side - 1, y0 + 2 * side // 3), fill=colour)
    pen.rectangle((0, 0, 2, 2), fill=(0, 0, 0, 0))  # a transparent corner: RGBA/LA keep real alpha
    return im


def encode(im: Image.Image, mode: str, fmt: str) -> bytes:
    """`im` (RGBA) converted to `mode` and saved as `fmt`."""
    if mode == "I;16":
        grey = np.asarray(im.convert("L"), dtype=np.uint16) * 257
        out = Image.fromarray(grey)  # uint16 -> mode I;16
    elif mode == "P":
        out = im.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        out = im.convert(mode) if mode != "RGBA" else im
    buf = io.BytesIO()
    out.save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def _corrupt_bytes(k: int, rng: np.random.Generator) -> tuple[str, bytes]:
    kind = k % 3
    if kind == 0:
        full = encode(draw(0, (40, 30), rng), "RGB", "PNG")
        return ".png", full[: len(full) // 2]  # truncated
    if kind == 1:
        return ".jpg", b"this is not an image\n"
    return ".jpg", b""


def make_image_folder(root: Path, classes: int = 3, per_class: int = 12, test_per_class: int = 4,
                      with_val: bool = False, val_per_class: int = 3, corrupt: int = 2, seed: int = 0) -> dict:
    """Write a synthetic image folder under `root`; return what is in it.

    Returns ``{"classes": [...], "counts": {split: images written per split, corrupt ones excluded},
    "corrupt": [relative paths], "modes": {relative path: mode}, "formats": {relative path: format}}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = list(SHAPES[:classes]) if classes <= len(SHAPES) else [f"class{c:02d}" for c in range(classes)]
    plan = [("train", per_class)] + ([("val", val_per_class)] if with_val else []) + [("test", test_per_class)]
    info: dict = {"classes": sorted(names), "counts": {}, "corrupt": [], "modes": {}, "formats": {}}
    k = 0
    for split, n in plan:
        info["counts"][split] = classes * n
        for c, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mode, fmt = _FORMATS[k % len(_FORMATS)]
                k += 1
                size = (int(rng.integers(20, 81)), int(rng.integers(20, 81)))
                rel = f"{split}/{name}/{i:03d}{_EXT[fmt]}"
                (root / rel).write_bytes(encode(draw(c, size, rng), mode, fmt))
                info["modes"][rel], info["formats"][rel] = mode, fmt
    for j in range(corrupt):
        ext, data = _corrupt_bytes(j, rng)
        rel = f"train/{names[j % classes]}/bad{j:02d}{ext}"
        (root / rel).write_bytes(data)
        info["corrupt"].append(rel)
    return info


def write_csv_index(root: Path, csv_name: str = "labels.csv", with_split: bool = True) -> Path:
    """A ``file,label[,split]`` CSV at ``root/csv_name`` listing every file of the image folder under `root`
    (paths relative to `root`, the CSV's folder)."""
    rows = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != csv_name):
        rel = path.relative_to(root).as_posix()
        split, label = rel.split("/")[:2]
        rows.append([rel, label] + ([split] if with_split else []))
    target = Path(root) / csv_name
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label"] + (["split"] if with_split else []))
        writer.writerows(rows)
    return target


def pack(src: Path, dest: Path, top: str = "") -> Path:
    """Pack the folder `src` into `dest` (``.zip``, ``.tar`` or ``.tar.gz``/``.tgz``, from its name), its
    files under the folder `top` inside the archive when given."""
    files = sorted(p for p in Path(src).rglob("*") if p.is_file())
    prefix = f"{top}/" if top else ""
    name = dest.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, prefix + p.relative_to(src).as_posix())
        return dest
    mode = "w:gz" if name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(dest, mode) as tar:
        for p in files:
            tar.add(p, prefix + p.relative_to(src).as_posix(), recursive=False)
    return dest
