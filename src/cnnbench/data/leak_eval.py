"""How well the leak audit (`cnnbench.data.duplicates`) finds near-duplicates: a labelled set.

Real near-duplicates are rare and unlabelled, so the positives are made: source images of
the real data (the CIFAR-10 archive, the butterfly zip) are copied with one of `TRANSFORMS`
at one of its strengths (re-encoding, centre crops, off-centre crops, rescaling,
brightness, contrast, saturation, a colour cast, mirroring, and a mix). Each copy joins the
untouched source images, which are the negatives: among them are the hard ones, photographs
of the same species or class on the same kind of background, and the audit's candidate
search puts exactly those before the verification (every image's nearest neighbours).

Scoring counts pairs. A true pair is a copy and its source image (and a copy and any image
listed in `KNOWN_DUPLICATES`, pairs of the real data judged by eye to be one photograph).
Recall is the share of true pairs the audit reports; precision the share of reported pairs
that involve a copy and are true. Pairs the audit reports among the untouched images are
not scored; they are listed (`found_in_source`), for a reader to judge.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from cnnbench.data import duplicates as dup

__all__ = ["SourceImage", "TRANSFORMS", "KNOWN_DUPLICATES", "load_sources", "evaluate", "Labelled", "Score"]

FLIP = Image.Transpose.FLIP_LEFT_RIGHT
LOOSEST = 0.6  # the audit of the labelled set reports pairs up to this distance; `score` cuts lower


@dataclass(frozen=True)
class SourceImage:
    name: str
    label: str
    image: Image.Image


def _jpeg(im: Image.Image, quality: float) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")


def _crop(im: Image.Image, fraction: float, ox: float = 0.5, oy: float = 0.5) -> Image.Image:
    """Keep a window of (1 - fraction) of each side, placed at (ox, oy) in [0, 1], resized back."""
    w, h = im.size
    cw, ch = w * (1 - fraction), h * (1 - fraction)
    x0, y0 = (w - cw) * ox, (h - ch) * oy
    return im.resize((w, h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))


def _rescale(im: Image.Image, factor: float) -> Image.Image:
    w, h = im.size
    small = im.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.BILINEAR)


def _cast(im: Image.Image, strength: float) -> Image.Image:
    """A colour cast: red up and blue down by `strength` (e.g. 0.1 = 10 %)."""
    a = np.asarray(im, np.float32) * np.array([1 + strength, 1.0, 1 - strength], np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _mix(im: Image.Image, strength: float) -> Image.Image:
    """Mirrored, cropped off-centre, brighter and re-encoded at once."""
    step = _crop(im.transpose(FLIP), strength, 0.3, 0.7)
    return _jpeg(ImageEnhance.Brightness(step).enhance(1 + strength), 70)


# name -> (function(image, strength), strengths): what "near-duplicate" covers, mildest first.
TRANSFORMS: dict[str, tuple[Callable[[Image.Image, float], Image.Image], tuple[float, ...]]] = {
    "jpeg quality": (_jpeg, (90, 70, 50, 30)),
    "centre crop (share of side cut)": (_crop, (0.04, 0.08, 0.12)),
    "off-centre crop (share of side cut)": (lambda im, f: _crop(im, f, 0.0, 1.0), (0.03, 0.06, 0.09)),
    "rescale down and up (factor)": (_rescale, (0.75, 0.5, 0.35)),
    "brightness (factor)": (lambda im, f: ImageEnhance.Brightness(im).enhance(f), (0.8, 1.2)),
    "contrast (factor)": (lambda im, f: ImageEnhance.Contrast(im).enhance(f), (0.75, 1.25)),
    "saturation (factor)": (lambda im, f: ImageEnhance.Color(im).enhance(f), (0.6, 1.4)),
    "colour cast (red +, blue -)": (_cast, (0.05, 0.1)),
    "mirror + jpeg (quality)": (lambda im, q: _jpeg(im.transpose(FLIP), q), (90, 60)),
    "mix: mirror, crop, brighter, jpeg 70": (_mix, (0.03, 0.06)),
}

# Pairs of the mirror (../shared/data/mirror) that are one photograph, judged by eye from
# thumbnails side by side. Butterflies: every pair of source images the audit reports up to
# `REVIEWED_UP_TO` was judged, and these are the ones that are one photograph (re-encoded,
# cropped, or with the background replaced; the last but one carries two labels). A copy of one
# is a true duplicate of the other too. The rest of the pairs up to that distance are look-alikes.
REVIEWED_UP_TO = 0.25
KNOWN_DUPLICATES: tuple[tuple[str, str], ...] = (
    ("valid/EMPEROR GUM MOTH/3.jpg", "valid/EMPEROR GUM MOTH/5.jpg"),
    ("test/ULYSES/5.jpg", "train/ULYSES/005.jpg"),
    ("train/BROOKES BIRDWING/147.jpg", "valid/BROOKES BIRDWING/5.jpg"),
    ("valid/GLITTERING SAPPHIRE/1.jpg", "valid/GLITTERING SAPPHIRE/2.jpg"),
    ("test/POPINJAY/5.jpg", "valid/POPINJAY/5.jpg"),
    ("test/MONARCH/3.jpg", "valid/MONARCH/1.jpg"),
    ("train/CRIMSON PATCH/093.jpg", "valid/CRIMSON PATCH/2.jpg"),
    ("train/EASTERN DAPPLE WHITE/010.jpg", "train/EASTERN DAPPLE WHITE/095.jpg"),
    ("test/BLUE SPOTTED CROW/1.jpg", "train/BLUE SPOTTED CROW/078.jpg"),
    ("train/CRIMSON PATCH/015.jpg", "valid/CRIMSON PATCH/5.jpg"),
    ("train/POPINJAY/008.jpg", "train/POPINJAY/073.jpg"),
    ("train/PINE WHITE/095.jpg", "valid/PINE WHITE/4.jpg"),
    ("train/BIRD CHERRY ERMINE MOTH/040.jpg", "train/BIRD CHERRY ERMINE MOTH/091.jpg"),
    ("test/RED SPOTTED PURPLE/3.jpg", "train/RED SPOTTED PURPLE/003.jpg"),
    ("train/ORCHARD SWALLOW/005.jpg", "train/ORCHARD SWALLOW/050.jpg"),
    ("test/PIPEVINE SWALLOW/3.jpg", "train/PIPEVINE SWALLOW/092.jpg"),
    ("train/EASTERN COMA/048.jpg", "train/QUESTION MARK/066.jpg"),
    ("test/CRIMSON PATCH/3.jpg", "train/CRIMSON PATCH/016.jpg"),
    # The CIFAR-10 mirror: every pair the audit reports up to 0.2 is one photograph.
    ("data_batch_3[430]", "data_batch_4[68]"),
    ("data_batch_1[119]", "data_batch_3[79]"),
    ("data_batch_2[327]", "data_batch_5[653]"),
    ("data_batch_5[886]", "test_batch[939]"),
    ("data_batch_4[159]", "data_batch_5[263]"),
    ("data_batch_3[79]", "data_batch_4[62]"),
    ("data_batch_4[3]", "data_batch_4[478]"),
    ("data_batch_1[547]", "test_batch[546]"),
    ("data_batch_3[124]", "test_batch[180]"),
    ("data_batch_2[514]", "data_batch_4[889]"),
    ("data_batch_1[523]", "data_batch_5[238]"),
    ("data_batch_2[70]", "test_batch[896]"),
    ("data_batch_3[304]", "test_batch[104]"),
    ("data_batch_4[108]", "test_batch[149]"),
    ("data_batch_3[79]", "data_batch_4[570]"),
    ("data_batch_1[694]", "data_batch_4[141]"),
    ("data_batch_4[433]", "data_batch_5[963]"),
)


def load_sources(kind: str, archive: Path) -> list[SourceImage]:
    """Every image of a raw archive as decoded RGB: the butterfly zip (``<split>/<class>/<file>``)
    or the CIFAR-10 python tar (named ``<batch>[<row>]``)."""
    if kind == "butterflies":
        out = []
        with zipfile.ZipFile(archive) as zf:
            for name in sorted(n for n in zf.namelist() if n.lower().endswith(".jpg")):
                parts = PurePosixPath(name).parts
                with Image.open(io.BytesIO(zf.read(name))) as im:
                    out.append(SourceImage(name, parts[-2], im.convert("RGB")))
        return out
    if kind == "cifar10":
        from cnnbench.data.cifar import CIFAR10

        batches = CIFAR10.read(archive)
        out = []
        for member, images, labels in (*batches.train, batches.test):
            out += [SourceImage(f"{member}[{i}]", batches.classes[y], Image.fromarray(x))
                    for i, (x, y) in enumerate(zip(images, labels))]
        return out
    raise ValueError(f"no archive reader for data-set kind {kind!r}; expected butterflies or cifar10")


@dataclass
class Score:
    """Precision and recall of the audit on one labelled set."""

    dataset: str
    threshold: float
    source_images: int
    copies: int
    true_pairs: int
    found_true: int
    false_pairs: int
    hard_negatives: int  # same-class source pairs that reached verification (the hard negatives tested)
    per_transform: dict[str, dict[str, Any]]  # transform -> strength -> {"copies", "found"}
    found_in_source: list[dict[str, Any]]
    seconds: float
    real_known: int = 0  # KNOWN_DUPLICATES pairs among the source images
    real_found: int = 0  # of those, reported
    real_other: int = 0  # other source pairs reported (look-alikes when threshold <= REVIEWED_UP_TO)

    @property
    def recall(self) -> float:
        return self.found_true / self.true_pairs if self.true_pairs else float("nan")

    @property
    def precision(self) -> float:
        found = self.found_true + self.false_pairs
        return self.found_true / found if found else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "recall": self.recall, "precision": self.precision}

    @property
    def real_precision(self) -> float:
        """On the source's own pairs, judged by eye (only meaningful up to `REVIEWED_UP_TO`)."""
        found = self.real_found + self.real_other
        return self.real_found / found if found else float("nan")


@dataclass
class Labelled:
    """A labelled set after one audit at the loosest threshold: every verified pair with its distance
    and its label, so `score` can be read at any threshold."""

    dataset: str
    refs: list[dup.ImageRef]
    pairs: list[dup.Pair]  # every pair the audit verified (exact and mirror copies at distance 0)
    base_of: dict[int, int]  # copy position -> its source image's position
    case_of: dict[int, tuple[str, float]]  # copy position -> (transform, strength)
    also: dict[int, set[int]]  # source position -> sources known to be the same photograph
    hard_negatives: int  # same-class source pairs that reached verification
    seconds: float  # fingerprints + audit

    def _true(self, copy: int, other: int) -> bool:
        base = self.base_of[copy]
        other_base = self.base_of.get(other, other)
        return other_base == base or other_base in self.also[base]

    def score(self, threshold: float) -> Score:
        """Precision and recall when pairs up to `threshold` are reported."""
        found = {(p.a, p.b) for p in self.pairs if p.distance <= threshold}
        per: dict[str, dict[str, Any]] = {name: {} for name in TRANSFORMS}
        true_pairs = found_true = false_pairs = 0
        for copy, base in self.base_of.items():
            partners = [base, *self.also[base]]
            hits = sum((min(copy, o), max(copy, o)) in found for o in partners)
            true_pairs, found_true = true_pairs + len(partners), found_true + hits
            name, strength = self.case_of[copy]
            cell = per[name].setdefault(f"{strength:g}", {"copies": 0, "found": 0})
            cell["copies"] += 1
            cell["found"] += int(hits == len(partners))
        in_source = []
        for p in self.pairs:
            if p.distance > threshold:
                continue
            copy_a, copy_b = p.a in self.base_of, p.b in self.base_of
            if not (copy_a or copy_b):
                in_source.append({"a": self.refs[p.a].name, "b": self.refs[p.b].name, "kind": p.kind,
                                  "distance": round(p.distance, 4)})
            elif not self._true(p.a if copy_a else p.b, p.b if copy_a else p.a):
                false_pairs += 1
            elif copy_a and copy_b:  # two copies of one photograph found together: true, and counted
                true_pairs, found_true = true_pairs + 1, found_true + 1
        known = {tuple(sorted((self.refs[a].name, self.refs[b].name))) for a, others in self.also.items() for b in others}
        real_found = sum(tuple(sorted((p["a"], p["b"]))) in known for p in in_source)
        return Score(self.dataset, threshold, len(self.refs) - len(self.base_of), len(self.base_of), true_pairs,
                     found_true, false_pairs, self.hard_negatives, per, in_source, self.seconds,
                     real_known=len(known), real_found=real_found, real_other=len(in_source) - real_found)


def evaluate(dataset: str, sources: Sequence[SourceImage], per_case: int = 10, seed: int = 0,
             progress: bool = False) -> Labelled:
    """Copy `per_case` random source images per transform and strength (numpy Generator seeded
    with `seed`), fingerprint and audit copies and sources together, and label every pair."""
    rng = np.random.default_rng(seed)
    cases = [(t, s) for t, (_, strengths) in TRANSFORMS.items() for s in strengths]
    bases = rng.choice(len(sources), size=min(len(sources), per_case * len(cases)), replace=False)
    images = [s.image for s in sources]
    refs = [dup.ImageRef("train", s.name, s.label, i) for i, s in enumerate(sources)]
    case_of: dict[int, tuple[str, float]] = {}
    base_of: dict[int, int] = {}
    for k, base in enumerate(bases):
        name, strength = cases[k % len(cases)]
        images.append(TRANSFORMS[name][0](sources[base].image, strength))
        case_of[len(refs)], base_of[len(refs)] = (name, strength), int(base)
        refs.append(dup.ImageRef("test", f"{sources[base].name}~{name}={strength:g}", sources[base].label, None))

    started = time.perf_counter()
    side = dup.thumb_side(*images[0].size)
    prints = dup.Fingerprints(len(images), side)
    for im in images:
        prints.add(dup.fingerprint(im, side))
    result = dup.audit(refs, prints, LOOSEST, progress=progress)
    seconds = time.perf_counter() - started

    index = {s.name: i for i, s in enumerate(sources)}
    also: dict[int, set[int]] = defaultdict(set)
    for a, b in KNOWN_DUPLICATES:
        if a in index and b in index:
            also[index[a]].add(index[b])
            also[index[b]].add(index[a])
    return Labelled(dataset, refs, result.pairs, base_of, case_of, also,
                    _hard_negatives(prints, refs, base_of), seconds)


def _hard_negatives(prints: dup.Fingerprints, refs: Sequence[dup.ImageRef], base_of: dict[int, int]) -> int:
    """How many same-class pairs of source images the candidate search sent to verification."""
    candidates = dup.candidate_pairs(prints.desc[: len(prints)])
    return int(sum(1 for c in candidates
                   if int(c[0]) not in base_of and int(c[1]) not in base_of
                   and refs[int(c[0])].label == refs[int(c[1])].label))


# --------------------------------------------------------------------------- speed at full size
FULL_SIZE = {"cifar10": {"train": 45000, "val": 5000, "test": 10000},
             "butterflies": {"train": 12594, "val": 500, "test": 500}}


def full_size_images(sources: Sequence[SourceImage], counts: dict[str, int], seed: int = 0
                     ) -> dict[str, tuple[list[Image.Image], list[str]]]:
    """Real images enough for a full-size data set: the sources, each used several times, every use
    but the first a random crop (up to 20 % of the side), mirror and brightness change of it, so the
    audit meets realistic neighbours (and many near-duplicates: a pessimistic load)."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list[Image.Image], list[str]]] = {}
    use = 0
    for split, n in counts.items():
        images, labels = [], []
        for _ in range(n):
            src = sources[use % len(sources)]
            im = src.image
            if use >= len(sources):
                im = _crop(im, float(rng.uniform(0.02, 0.2)), float(rng.uniform()), float(rng.uniform()))
                im = ImageEnhance.Brightness(im.transpose(FLIP) if rng.uniform() < 0.5 else im).enhance(
                    float(rng.uniform(0.8, 1.2)))
            images.append(im)
            labels.append(src.label)
            use += 1
        out[split] = (images, labels)
    return out


def time_audit(kind: str, data: dict[str, tuple[list[Image.Image], list[str]]],
               threshold: float = dup.DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Time the audit as `preprocess` runs it (fingerprints, then the audit), with the peak memory it
    allocates (tracemalloc: numpy's arrays included) beside the size of the packed arrays."""
    import tracemalloc

    from cnnbench.data import cifar

    counts = {s: len(v[0]) for s, v in data.items()}
    classes = sorted({c for _, labels in data.values() for c in labels})
    if kind == "cifar10":
        splits = {s: (np.stack([np.asarray(im, np.uint8) for im in ims]), np.array([classes.index(c) for c in labels]))
                  for s, (ims, labels) in data.items()}
        names = {s: [f"{s}[{i}]" for i in range(n)] for s, n in counts.items()}
        packed_bytes = sum(a.nbytes for a, _ in splits.values())
        tracemalloc.start()
        started = time.perf_counter()
        outcome = cifar.audit_splits(splits, names, classes, threshold, drop=False)
    else:
        side = dup.thumb_side(*data["train"][0][0].size)
        packed_bytes = sum(counts.values()) * 224 * 224 * 3
        tracemalloc.start()
        started = time.perf_counter()
        prints = dup.Fingerprints(sum(counts.values()), side)
        refs = []
        for split, (ims, labels) in data.items():
            for i, (im, label) in enumerate(zip(ims, labels)):
                prints.add(dup.fingerprint(im, side))
                refs.append(dup.ImageRef(split, f"{split}/{i}", label, i))
        fingerprint_seconds = time.perf_counter() - started
        result = dup.audit(refs, prints, threshold)
        outcome = None
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    summary = outcome.summary if outcome is not None else None
    row = {"dataset": kind, "images": sum(counts.values()), "seconds": round(seconds, 1),
           "peak_audit_mib": round(peak / 2**20, 1), "packed_mib": round(packed_bytes / 2**20, 1),
           "groups": summary["group_count"] if summary else len(result.groups)}
    if outcome is None:
        row["fingerprint_seconds"] = round(fingerprint_seconds, 1)
    return row
