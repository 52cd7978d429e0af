"""Find duplicate images within and across the splits of a data set: the leak audit.

Three kinds of pair are found, for every data set `preprocess` prepares:

* ``exact``: the same decoded pixels;
* ``flip``: one image is the horizontal mirror of the other (pixel for pixel);
* ``near``: the same photograph saved again with other JPEG settings, slightly cropped or
  shifted, rescaled, or with mild colour, brightness or contrast changes (and any of these
  mirrored).

Exact and mirrored copies share a flip-aware SHA-1 of the pixels (`pixel_key`). Near
duplicates are found in two steps, the usual shape of a near-duplicate search:

1. **Candidates.** Each image is described by the `DCT` x `DCT` lowest DCT-II coefficients of
   a grey thumbnail (DC left out, unit length): the numbers a perceptual hash such as
   ``imagehash.phash`` keeps only the signs of. Keeping the numbers finds more re-cropped
   copies among an image's nearest neighbours (docs/duplicates.md). Every image's `NEIGHBOURS`
   nearest images by cosine similarity, each as it is or mirrored (a mirror's coefficients are
   the image's with signs flipped, `mirror_descriptor`), are candidates: an exact search, one
   matrix product per block of images.
2. **Verification.** Nearest neighbours include look-alikes (two butterflies of one species on
   a white background). Each candidate pair is compared on its grey thumbnails (`THUMB` px, or
   the images' own size when smaller), band-passed (a difference of Gaussian blurs, so a shared
   plain background and the overall shape count for nothing and detail decides), by their
   normalised cross-correlation over the overlap at the best shift (up to `MAX_SHIFT` of the
   side; found for every shift at once with FFTs) and zoom (`ZOOMS`, either image enlarged, to
   undo small crops). The pair's ``distance`` is 1 minus that correlation: 0 for a copy, about
   1 for unrelated images. A pair is a near-duplicate when its distance is at most the data
   set's ``near_duplicate_threshold``.

Pairs are joined into groups (connected components). `outcome` turns an audit into what
`preprocess` writes: ``duplicates.json``, the manifest's counts, thumbnails for the report and the
train copies to drop. `cnnbench leak-eval` (`cnnbench.data.leak_eval`) measures precision and
recall; the figures are in docs/duplicates.md.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from cnnbench.data.packed import SPLITS
from cnnbench.errors import ConfigError

__all__ = [
    "pixel_key", "Fingerprint", "fingerprint", "Fingerprints", "ImageRef", "Pair", "Audit", "audit",
    "candidate_pairs", "verify", "SPLIT_PAIRS", "KINDS", "THUMB", "NEIGHBOURS", "ZOOMS", "MAX_SHIFT",
    "DEFAULT_THRESHOLD", "THRESHOLD_RANGE", "METHOD", "Outcome", "outcome", "keep_rows", "threshold_setting",
    "note", "log_findings", "FILE", "THUMBS_FILE", "thumb_side", "grey_of",
]

log = logging.getLogger("cnnbench.duplicates")

SPLIT_PAIRS: tuple[tuple[str, str], ...] = (
    ("train", "train"), ("val", "val"), ("test", "test"), ("train", "val"), ("train", "test"), ("val", "test"),
)
KINDS = ("exact", "flip", "near")
THUMB = 64  # side of the grey thumbnails that are compared (images smaller than this: their own size)
DCT = 8  # the descriptor is the DCT-II block of DCT x DCT lowest frequencies of the thumbnail, DC left out
NEIGHBOURS = 3  # candidates per image: its nearest images by descriptor
MIN_SIMILARITY = 0.5  # candidates below this cosine similarity are not verified (true copies measured >= 0.74)
ZOOMS = (1.0, 1.07, 1.14)  # enlargements tried (either image), to undo small crops
MAX_SHIFT = 0.125  # largest shift tried, as a fraction of the side
DEFAULT_THRESHOLD = 0.2  # near-duplicate when 1 - correlation <= this (see docs/duplicates.md)
THRESHOLD_RANGE = (0.0, 1.0)  # a distance; at 1 any two unrelated images would pass
# Band-pass of the verification: the difference of two Gaussian blurs (sigmas as fractions of the
# thumbnail side). Measured on the labelled sets (docs/duplicates.md): at 64 px a light blur first
# makes half-pixel misalignments cheap; at 32 px (CIFAR-10) detail is scarce and only the coarse
# blur is taken off.
_BAND = {64: (0.01, 0.04), 32: (0.0, 0.06)}
_BLOCK = 32  # rows per block of the all-pairs search (temporary memory: about 3 x _BLOCK x N x 4 bytes)
_VERIFY_PIXELS = 2**20  # pairs verified per FFT batch x thumbnail pixels (1024 pairs at 32 px, 256 at 64)
_MIRROR_SIGNS = np.tile((-1.0) ** np.arange(DCT), DCT)[1:].astype(np.float32)  # (u, v) -> (-1)**v, DC left out
METHOD = (
    "exact and mirrored copies: SHA-1 of the decoded pixels of each image or its mirror; near-duplicates: "
    f"each image's {NEIGHBOURS} nearest images (or mirror images) by the {DCT}x{DCT} low-frequency DCT of a grey "
    f"thumbnail ({THUMB} px, or the images' own size when smaller), verified by the normalised correlation of the "
    f"band-passed thumbnails at the best shift (up to {MAX_SHIFT:g} of the side) and zoom "
    f"({', '.join(f'{z:g}' for z in ZOOMS)}); distance = 1 - correlation"
)

ThumbSource = Callable[[np.ndarray], np.ndarray]  # positions -> (n, side, side) uint8 grey thumbnails


# --------------------------------------------------------------------------- one image
def pixel_key(im: Image.Image) -> tuple[bytes, bool, bool]:
    """Flip-aware hash of a decoded image: ``(digest, mirrored, symmetric)``.

    The digest is the SHA-1 of the raw pixel bytes of the image or of its horizontal
    mirror, whichever byte string is smaller, so an image and its mirror share one digest.
    ``mirrored`` says the mirror was hashed, ``symmetric`` that the image equals its own
    mirror. Two images with one digest are exact copies when both have the same
    ``mirrored`` (or either is symmetric), mirror images of each other otherwise. SHA-1
    is the fastest hashlib digest here (hardware SHA) and ample against accidental
    collisions; a collision could only invent a duplicate, never hide one.
    """
    raw = im.tobytes()
    mirror = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    mirrored = mirror < raw
    digest = hashlib.sha1(mirror if mirrored else raw, usedforsecurity=False).digest()
    return digest, mirrored, raw == mirror


@dataclass(frozen=True)
class Fingerprint:
    """What the audit keeps of one image."""

    digest: bytes  # `pixel_key`
    mirrored: bool
    symmetric: bool
    desc: np.ndarray  # (DCT*DCT - 1,) float32, unit length: the candidate search's descriptor
    thumb: np.ndarray  # (side, side) uint8 grey thumbnail: what verification compares


def thumb_side(width: int, height: int) -> int:
    """The side of the thumbnails of images of this size: `THUMB`, or less for smaller images."""
    return max(DCT, min(THUMB, width, height))


def grey_thumbnail(im: Image.Image, side: int) -> np.ndarray:
    """The image in grey (Pillow's ITU-R 601 luma), resized to side x side (antialiased)."""
    grey = im.convert("L")
    if grey.size != (side, side):
        grey = grey.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(grey, dtype=np.uint8)


def descriptor(thumbs: np.ndarray) -> np.ndarray:
    """Unit-length low-frequency DCT-II coefficients (DC left out) of grey thumbnails ``(n, T, T)``:
    what a perceptual hash (e.g. imagehash.phash) keeps only the signs of."""
    coeff = sfft.dctn(thumbs.astype(np.float32), axes=(-2, -1), norm="ortho")[..., :DCT, :DCT]
    flat = coeff.reshape(*thumbs.shape[:-2], DCT * DCT)[..., 1:]
    norm = np.linalg.norm(flat, axis=-1, keepdims=True)
    return (flat / np.maximum(norm, 1e-6)).astype(np.float32)


def fingerprint(im: Image.Image, side: int) -> Fingerprint:
    """Fingerprint one decoded image (any size; RGB or grey) for `audit`, with a thumbnail of
    `side` pixels (`thumb_side` of the data set's images).

    Raises:
        ValueError: the image has no pixels; callers treat it as a bad image.
    """
    if im.width < 1 or im.height < 1:
        raise ValueError(f"image of size {im.width}x{im.height} has no pixels")
    digest, mirrored, symmetric = pixel_key(im)
    thumb = grey_thumbnail(im, side)
    return Fingerprint(digest, mirrored, symmetric, descriptor(thumb), thumb)


class Fingerprints:
    """The fingerprints of many images, stacked: (DCT*DCT - 1) * 4 + side**2 + about 60 bytes an image."""

    def __init__(self, capacity: int, side: int, keep_thumbs: bool = True) -> None:
        self.side = side
        self.digest: list[bytes] = []
        self.mirrored = np.zeros(capacity, bool)
        self.symmetric = np.zeros(capacity, bool)
        self.desc = np.zeros((capacity, DCT * DCT - 1), np.float32)
        self.thumbs = np.zeros((capacity if keep_thumbs else 0, side, side), np.uint8)

    def __len__(self) -> int:
        return len(self.digest)

    def add(self, fp: Fingerprint) -> int:
        """Store one fingerprint; return its position."""
        i = len(self.digest)
        self.digest.append(fp.digest)
        self.mirrored[i], self.symmetric[i], self.desc[i] = fp.mirrored, fp.symmetric, fp.desc
        if fp.thumb.shape != (self.side, self.side):
            raise ValueError(f"thumbnail of shape {fp.thumb.shape}, expected {(self.side, self.side)}: one audit "
                             "compares thumbnails of one size")
        if len(self.thumbs):
            self.thumbs[i] = fp.thumb
        return i

    def thumbs_of(self, positions: np.ndarray) -> np.ndarray:
        """The stored thumbnails of `positions` (a `ThumbSource`)."""
        return self.thumbs[positions]


# --------------------------------------------------------------------------- candidates
def mirror_descriptor(desc: np.ndarray) -> np.ndarray:
    """The descriptor of the mirrored images, from theirs: mirroring the columns of an image
    multiplies its DCT-II coefficient (u, v) by (-1)**v, so nothing has to be decoded again."""
    return desc * _MIRROR_SIGNS


def candidate_pairs(desc: np.ndarray, neighbours: int = NEIGHBOURS, min_similarity: float = MIN_SIMILARITY,
                    progress: bool = False) -> np.ndarray:
    """Each image's `neighbours` nearest images by descriptor (cosine similarity, the other
    image as it is or mirrored), those with similarity at least `min_similarity`.

    An exact search in blocks of `_BLOCK` rows: one matrix product per block and mirror.

    Returns:
        float64 array of rows ``(i, j, flip, similarity)`` with ``i < j``, each pair once:
        ``flip`` 1 when ``j``'s mirror is the closer.
    """
    n = len(desc)
    mirror = mirror_descriptor(desc)
    k = min(neighbours, n - 1)
    found: list[np.ndarray] = []
    if k < 1:
        return np.empty((0, 4))
    desc_t, mirror_t = np.ascontiguousarray(desc.T), np.ascontiguousarray(mirror.T)
    for start in tqdm(range(0, n, _BLOCK), desc="near-duplicate candidates", unit="block", leave=False,
                      disable=not progress):
        rows = desc[start:start + _BLOCK]
        ar = np.arange(len(rows))
        flip = rows @ mirror_t
        sim = np.maximum(rows @ desc_t, flip)
        sim[ar, ar + start] = -np.inf  # not its own neighbour
        # the k largest per row by k passes of argmax: far cheaper than argpartition for small k
        for _ in range(k):
            c = sim.argmax(1)
            s = sim[ar, c]
            keep = s >= min_similarity
            mirrored = flip[ar, c] >= s  # the mirror is (at least) as close
            found.append(np.stack([ar[keep] + start, c[keep], mirrored[keep], s[keep]], 1).astype(np.float64))
            sim[ar, c] = -np.inf
    if not found:
        return np.empty((0, 4))
    rows = np.concatenate(found)
    i, j = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    rows[:, 0], rows[:, 1] = lo, hi
    # (i, j) and (j, i) are one pair, with one flip flag (a mirror relation is symmetric)
    _, first = np.unique(lo * n + hi, return_index=True)
    return rows[np.sort(first)]


# --------------------------------------------------------------------------- verification
def _band_pass(thumbs: np.ndarray) -> np.ndarray:
    """Grey thumbnails as float32, band-passed (`_BAND`): the detail, without the plain background."""
    x = thumbs.astype(np.float32)
    side = x.shape[-1]
    fine, coarse = (f * side for f in _BAND[64 if side >= 64 else 32])
    return (ndimage.gaussian_filter(x, sigma=(0, fine, fine), mode="reflect")
            - ndimage.gaussian_filter(x, sigma=(0, coarse, coarse), mode="reflect"))


def _zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Enlarge a stack of square images about their centre by `factor` (bilinear), same size."""
    if factor == 1.0:
        return x
    side = x.shape[-1]
    coords = (np.arange(side) + 0.5 - side / 2) / factor + side / 2 - 0.5
    lo = np.clip(np.floor(coords).astype(int), 0, side - 1)
    hi = np.clip(lo + 1, 0, side - 1)
    w = (coords - np.floor(coords)).astype(np.float32)
    rows = x[:, lo, :] * (1 - w)[None, :, None] + x[:, hi, :] * w[None, :, None]
    return rows[:, :, lo] * (1 - w)[None, None, :] + rows[:, :, hi] * w[None, None, :]


def _overlap_ncc(a: np.ndarray, b: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``a[y, x]`` and ``b[y + dy, x + dx]`` over their overlap,
    one shift per pair."""
    n, side = a.shape[0], a.shape[-1]
    m = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    canvas = np.zeros((n, side + 2 * m, side + 2 * m), np.float32)
    inside = np.zeros_like(canvas)
    canvas[:, m:m + side, m:m + side] = b
    inside[:, m:m + side, m:m + side] = 1.0
    grid = np.arange(side)
    rows = (m + dy)[:, None, None] + grid[None, :, None]
    cols = (m + dx)[:, None, None] + grid[None, None, :]
    pick = (np.arange(n)[:, None, None], rows, cols)
    bs, mask = canvas[pick], inside[pick]
    am = a * mask
    num = (am * bs).sum((1, 2))
    den = np.sqrt((am * am).sum((1, 2)) * (bs * bs).sum((1, 2)))
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0)


def _fft_size(side: int, max_shift: int) -> int:
    """The smallest fast FFT length whose circular correlation has no wrap-around up to `max_shift`."""
    return sfft.next_fast_len(side + max_shift + 1, real=True)


def _aligned_ncc(fa: np.ndarray, fb: np.ndarray, a: np.ndarray, b: np.ndarray, max_shift: int) -> np.ndarray:
    """The correlation of each pair at the shift (up to `max_shift` pixels) where their
    cross-correlation, computed for every shift at once from the FFTs ``fa`` and ``fb``, peaks."""
    size = _fft_size(a.shape[-1], max_shift)
    corr = sfft.irfft2(np.conj(fa) * fb, s=(size, size), workers=-1)
    shifts = np.r_[0:max_shift + 1, -max_shift:0]
    window = corr[:, shifts[:, None], shifts[None, :]].reshape(len(a), -1)
    best = window.argmax(1)
    dy, dx = shifts[best // len(shifts)], shifts[best % len(shifts)]
    return _overlap_ncc(a, b, dy, dx)


def verify(thumbs_of: ThumbSource, pairs: np.ndarray, progress: bool = False) -> np.ndarray:
    """The distance (1 - correlation, in [0, 2]) of each candidate pair ``(i, j, flip, ...)``:
    the best over zooms of either image of the correlation at the best shift."""
    if not len(pairs):
        return np.empty(0, np.float32)
    out = np.empty(len(pairs), np.float32)
    first = thumbs_of(np.asarray(pairs[:1, 0], np.int64))
    batch = max(1, _VERIFY_PIXELS // (first.shape[-1] * first.shape[-2]))
    for start in tqdm(range(0, len(pairs), batch), desc="verify near-duplicate candidates",
                      unit="batch", leave=False, disable=not progress):
        chunk = pairs[start:start + batch]
        i, j, flip = (chunk[:, 0].astype(np.int64), chunk[:, 1].astype(np.int64), chunk[:, 2].astype(bool))
        a = _band_pass(thumbs_of(i))
        b = thumbs_of(j)
        b = _band_pass(np.where(flip[:, None, None], b[:, :, ::-1], b))
        side = a.shape[-1]
        max_shift = max(1, int(round(MAX_SHIFT * side)))
        size = (_fft_size(side, max_shift),) * 2
        fa, fb = sfft.rfft2(a, s=size, workers=-1), sfft.rfft2(b, s=size, workers=-1)
        best = _aligned_ncc(fa, fb, a, b, max_shift)
        for factor in ZOOMS[1:]:
            za, zb = _zoom(a, factor), _zoom(b, factor)
            best = np.maximum(best, _aligned_ncc(sfft.rfft2(za, s=size, workers=-1), fb, za, b, max_shift))
            best = np.maximum(best, _aligned_ncc(fa, sfft.rfft2(zb, s=size, workers=-1), a, zb, max_shift))
        out[start:start + len(chunk)] = 1.0 - np.clip(best, -1.0, 1.0)
    return out


# --------------------------------------------------------------------------- the audit
@dataclass(frozen=True)
class ImageRef:
    """Where one audited image comes from: its split, its name in the source (a file, or
    ``<batch>[<row>]``), its class, and its position in the stored split (None when it is
    not stored, e.g. a dropped train copy)."""

    split: str
    name: str
    label: str
    index: int | None


@dataclass(frozen=True)
class Pair:
    """Two audited images (positions in the audit, ``a`` before ``b``) and how they match."""

    a: int
    b: int
    kind: str  # exact, flip or near
    distance: float  # 0 for exact and flip copies


@dataclass
class Audit:
    """Every duplicate pair among the audited images, and their groups."""

    refs: list[ImageRef]
    pairs: list[Pair]
    threshold: float
    groups: list[list[int]] = field(default_factory=list)  # positions, each group sorted by split then name

    def __post_init__(self) -> None:
        if not self.groups:  # given when only the refs change (see `outcome`): no second search
            self.groups = _groups(self.refs, self.pairs)

    def counts(self) -> list[dict[str, Any]]:
        """Pairs per split pair of `SPLIT_PAIRS` and kind, with the same class and with different ones."""
        tally: Counter = Counter()
        for p in self.pairs:
            splits = _ordered_splits(self.refs[p.a].split, self.refs[p.b].split)
            same = self.refs[p.a].label == self.refs[p.b].label
            tally[splits, p.kind, same] += 1
        return [
            {"splits": f"{a}-{b}", "kind": kind, "same_class": tally[(a, b), kind, True],
             "different_class": tally[(a, b), kind, False]}
            for (a, b) in SPLIT_PAIRS for kind in KINDS
        ]

    def eval_partners(self) -> dict[int, tuple[int, Pair]]:
        """Train image position -> (a val or test image it duplicates, that pair), the closest
        such partner of each train image."""
        best: dict[int, tuple[int, Pair]] = {}
        for p in self.pairs:
            for train, other in ((p.a, p.b), (p.b, p.a)):
                if self.refs[train].split == "train" and self.refs[other].split != "train":
                    if train not in best or p.distance < best[train][1].distance:
                        best[train] = (other, p)
        return best

    def leaked(self, split: str, dropped: Iterable[int] = ()) -> set[int]:
        """Positions of the `split` images that duplicate a train image still in train
        (any kind), i.e. those whose accuracy measures memory."""
        gone = set(dropped)
        out: set[int] = set()
        for p in self.pairs:
            for mine, other in ((p.a, p.b), (p.b, p.a)):
                if self.refs[mine].split == split and self.refs[other].split == "train" and other not in gone:
                    out.add(mine)
        return out

    def group_records(self, dropped: Iterable[int] = ()) -> list[dict[str, Any]]:
        """The groups as JSON records: label conflicts first, then groups across splits."""
        gone = set(dropped)
        by_group: dict[int, list[Pair]] = {}
        where = {m: g for g, members in enumerate(self.groups) for m in members}
        for p in self.pairs:
            by_group.setdefault(where[p.a], []).append(p)
        records = []
        for g, members in enumerate(self.groups):
            refs = [self.refs[m] for m in members]
            classes = sorted({r.label for r in refs})
            splits = sorted({r.split for r in refs}, key=SPLITS.index)
            pos = {m: k for k, m in enumerate(members)}
            records.append({
                "kinds": sorted({p.kind for p in by_group[g]}, key=KINDS.index),
                "splits": splits,
                "classes": classes,
                "label_conflict": len(classes) > 1,
                "members": [
                    {"split": r.split, "file": r.name, "index": r.index, "class": r.label,
                     "dropped": m in gone}
                    for m, r in zip(members, refs)
                ],
                "pairs": sorted(
                    ({"a": min(pos[p.a], pos[p.b]), "b": max(pos[p.a], pos[p.b]), "kind": p.kind,
                      "distance": round(float(p.distance), 4)} for p in by_group[g]),
                    key=lambda q: (q["a"], q["b"])),
            })
        records.sort(key=lambda r: (not r["label_conflict"], len(r["splits"]) == 1,
                                    SPLITS.index(r["members"][0]["split"]), r["members"][0]["file"]))
        return [{"id": i, **r} for i, r in enumerate(records)]


def _ordered_splits(a: str, b: str) -> tuple[str, str]:
    return (a, b) if SPLITS.index(a) <= SPLITS.index(b) else (b, a)


def _groups(refs: Sequence[ImageRef], pairs: Sequence[Pair]) -> list[list[int]]:
    """Connected components of the duplicate pairs, each sorted by split then name."""
    if not pairs:
        return []
    a = np.array([p.a for p in pairs])
    b = np.array([p.b for p in pairs])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(refs), len(refs)))
    _, label = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for node in sorted(set(a.tolist()) | set(b.tolist())):
        members.setdefault(int(label[node]), []).append(node)
    return [sorted(m, key=lambda i: (SPLITS.index(refs[i].split), refs[i].name)) for m in members.values()]


def _copies(prints: Fingerprints) -> list[Pair]:
    """Exact and mirrored pairs: images with one flip-aware pixel digest."""
    by_digest: dict[bytes, list[int]] = {}
    for i, digest in enumerate(prints.digest):
        by_digest.setdefault(digest, []).append(i)
    pairs = []
    for members in by_digest.values():
        for i, j in itertools.combinations(members, 2):
            same = prints.mirrored[i] == prints.mirrored[j] or prints.symmetric[i] or prints.symmetric[j]
            pairs.append(Pair(i, j, "exact" if same else "flip", 0.0))
    return pairs


def audit(refs: Sequence[ImageRef], prints: Fingerprints, threshold: float = DEFAULT_THRESHOLD,
          thumbs_of: ThumbSource | None = None, progress: bool = True) -> Audit:
    """Every exact, mirrored and near-duplicate pair among the fingerprinted images.

    Args:
        refs: where each image comes from, in the order of `prints`.
        prints: their fingerprints.
        threshold: largest distance (1 - correlation) of a near-duplicate, in `THRESHOLD_RANGE`.
        thumbs_of: where the thumbnails come from, when `prints` keeps none (e.g. computed from
            the packed images, so a large data set holds them only for the pairs being verified).
    """
    if len(refs) != len(prints):
        raise ValueError(f"{len(refs)} image references but {len(prints)} fingerprints")
    if not THRESHOLD_RANGE[0] <= threshold < THRESHOLD_RANGE[1]:
        raise ValueError(f"threshold {threshold} outside [{THRESHOLD_RANGE[0]}, {THRESHOLD_RANGE[1]})")
    copies = _copies(prints)
    known = {(p.a, p.b) for p in copies}
    candidates = candidate_pairs(prints.desc[: len(prints)], progress=progress)
    fresh = np.array([(int(c[0]), int(c[1])) not in known for c in candidates], bool)
    candidates = candidates[fresh] if len(candidates) else candidates
    distance = verify(thumbs_of or prints.thumbs_of, candidates, progress=progress)
    near = [Pair(int(c[0]), int(c[1]), "near", float(d)) for c, d in zip(candidates, distance) if d <= threshold]
    return Audit(list(refs), sorted(copies + near, key=lambda p: (p.a, p.b)), threshold)


# --------------------------------------------------------------------------- what preprocess writes
REPORT_THUMB = 64  # side of the RGB thumbnails of cross-split groups kept for the report
THUMB_GROUPS = 48  # groups spanning splits that get thumbnails (the first ones; the report shows 24)
THUMB_MEMBERS = 16  # members of one group that get thumbnails (the first ones)
THUMBS_FILE = "duplicate_thumbs.npy"
FILE = "duplicates.json"
FORMAT = "cnnbench-duplicates-v2"
_MAX_EXAMPLES = 10  # groups copied into the manifest (all of them are in FILE)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """Pillow's ``convert("L")`` of a stack of uint8 RGB images (ITU-R 601-2 luma, same rounding)."""
    x = rgb.astype(np.uint32)
    return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


@dataclass
class Outcome:
    """What the audit of one data set leaves: the manifest's summary, ``duplicates.json``, the report's
    thumbnails and, with ``drop_train_duplicates_of_eval``, the train images to leave out."""

    summary: dict[str, Any]
    record: dict[str, Any]
    thumbs: np.ndarray  # (n, REPORT_THUMB, REPORT_THUMB, 3) uint8
    dropped: dict[int, str]  # position in the train split array -> reason (for excluded.csv)


def outcome(dataset: str, result: Audit, arrays: dict[str, np.ndarray], drop: bool, drop_key: str) -> Outcome:
    """Turn an audit into what `preprocess` writes.

    Args:
        result: the audit; each ref's ``index`` is its position in ``arrays[split]``.
        arrays: each split's images as decoded, before any is dropped.
        drop: leave out the train images that duplicate a val or test image (``drop_key`` names the setting).
    """
    all_partners = result.eval_partners()
    partners = all_partners if drop else {}
    dropped_positions = set(partners)
    dropped = {}
    for train, (other, pair) in partners.items():
        ref, eval_ref = result.refs[train], result.refs[other]
        how = {"exact": "an exact copy", "flip": "a mirror image", "near": f"a near-duplicate (distance {pair.distance:.3f})"}
        dropped[int(ref.index)] = f"dropped: {how[pair.kind]} of {eval_ref.split} image {eval_ref.name} ({drop_key}: true)"
    shift = _index_after_drop(arrays["train"].shape[0], set(dropped))
    refs = [ImageRef(r.split, r.name, r.label, shift(r.index) if r.split == "train" else r.index) for r in result.refs]
    records = Audit(refs, result.pairs, result.threshold, result.groups).group_records(dropped_positions)
    thumbs = _report_thumbs(records, result.refs, arrays)
    leaked = sorted(int(result.refs[p].index) for p in result.leaked("test", dropped_positions))
    summary = {
        "method": METHOD,
        "near_duplicate_threshold": result.threshold,
        "images_audited": {s: sum(1 for r in result.refs if r.split == s) for s in SPLITS},
        "group_count": len(records),
        "cross_split_groups": sum(1 for g in records if len(g["splits"]) > 1),
        "label_conflict_groups": sum(1 for g in records if g["label_conflict"]),
        "images_in_groups": sum(len(g["members"]) for g in records),
        "pairs": result.counts(),
        "train_duplicates_of_eval": len(all_partners),
        "drop_train_duplicates_of_eval": drop,
        "dropped_train": len(dropped),
        "test_clean_count": sum(1 for r in result.refs if r.split == "test") - len(leaked),
        "file": FILE,
    }
    record = {"format": FORMAT, "dataset": dataset, **summary, "test_leaked": leaked, "thumbs_file": THUMBS_FILE,
              "groups": records}
    return Outcome({**summary, "examples": records[:_MAX_EXAMPLES]}, record, thumbs, dropped)


def _index_after_drop(n: int, gone: set[int]) -> Callable[[int | None], int | None]:
    """Position in the train split once `gone` are left out (None for those)."""
    new = np.cumsum([0 if i in gone else 1 for i in range(n)]) - 1

    def shift(i: int | None) -> int | None:
        return None if i is None or i in gone else int(new[i])
    return shift


def _report_thumbs(records: list[dict[str, Any]], refs: Sequence[ImageRef], arrays: dict[str, np.ndarray]) -> np.ndarray:
    """RGB thumbnails of the first members of the first groups that span splits (`THUMB_GROUPS`,
    `THUMB_MEMBERS`: a bounded file whatever the data); sets each member's ``thumb`` (None: none)."""
    by_name = {(r.split, r.name): r for r in refs}
    thumbs: list[np.ndarray] = []
    spanning = 0
    for group in records:
        spans = len(group["splits"]) > 1
        spanning += spans
        for k, member in enumerate(group["members"]):
            member["thumb"] = None
            if not spans or spanning > THUMB_GROUPS or k >= THUMB_MEMBERS:
                continue
            ref = by_name[member["split"], member["file"]]
            image = Image.fromarray(np.asarray(arrays[ref.split][ref.index]))
            thumbs.append(np.asarray(image.resize((REPORT_THUMB, REPORT_THUMB), Image.Resampling.BILINEAR), np.uint8))
            member["thumb"] = len(thumbs) - 1
    return np.stack(thumbs) if thumbs else np.zeros((0, REPORT_THUMB, REPORT_THUMB, 3), np.uint8)


def keep_rows(array: np.ndarray, gone: Iterable[int]) -> np.ndarray:
    """`array` without the rows `gone`, compacted in place (no second copy of a large split)."""
    gone = set(gone)
    if not gone:
        return array
    write = 0
    for read in range(len(array)):
        if read in gone:
            continue
        if read != write:
            array[write] = array[read]
        write += 1
    return array[:write]


def threshold_setting(cfg: Mapping[str, Any], key: str) -> float:
    """A data set's ``near_duplicate_threshold`` (default `DEFAULT_THRESHOLD`), checked.

    Raises:
        ConfigError: not a number in `THRESHOLD_RANGE` (the message names ``key``).
    """
    value = cfg.get("near_duplicate_threshold", DEFAULT_THRESHOLD)
    lo, hi = THRESHOLD_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value < hi:
        raise ConfigError(
            f"{key}.near_duplicate_threshold must be a number in [{lo:g}, {hi:g}), got {value!r}: it is the largest "
            f"distance (1 - correlation) at which two images count as near-duplicates; {DEFAULT_THRESHOLD:g} is the "
            "measured default (docs/duplicates.md), 0 keeps only exact and mirrored copies"
        )
    return float(value)


def note(summary: Mapping[str, Any], drop_key: str) -> str:
    """The manifest note that sums the audit up."""
    drop = summary["drop_train_duplicates_of_eval"]
    return (
        f"leak audit (exact, mirrored and near-duplicates, threshold {summary['near_duplicate_threshold']:g}): "
        f"{summary['group_count']} group(s) of {summary['images_in_groups']} images, "
        f"{summary['cross_split_groups']} across splits, {summary['label_conflict_groups']} with conflicting labels; "
        f"{summary['train_duplicates_of_eval']} train image(s) duplicate a val or test image"
        + (f", {summary['dropped_train']} dropped ({drop_key}: true)" if drop else f", kept ({drop_key}: false)")
        + f"; {summary['test_clean_count']} test image(s) have no duplicate in train (the clean test split); "
        f"every group is in {FILE}"
    )


def log_findings(dataset: str, summary: Mapping[str, Any]) -> None:
    """Say what needs a reader's attention."""
    if summary["label_conflict_groups"]:
        log.warning("%s: %d duplicate group(s) carry different labels (label errors); see %s", dataset,
                    summary["label_conflict_groups"], FILE)
    log.info("%s: %d duplicate group(s), %d across splits; %d train image(s) duplicate a val or test image%s; "
             "%d clean test image(s)", dataset, summary["group_count"], summary["cross_split_groups"],
             summary["train_duplicates_of_eval"], ", dropped" if summary["drop_train_duplicates_of_eval"] else "",
             summary["test_clean_count"])
