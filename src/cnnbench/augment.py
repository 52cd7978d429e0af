"""Batched training augmentation on the device: one call per batch, no per-image Python.

Two pipelines, chosen by ``augment.crop`` in params.yaml:

- ``pad`` (CIFAR-10): zero padding, random crop back to size, random horizontal flip
  (torchvision's ``RandomCrop(32, 4)`` + ``RandomHorizontalFlip``), then ``Normalize``.
- ``resized`` (butterflies): torchvision's ``RandomResizedCrop`` (crop area fraction in
  ``(min_scale, 1)``, aspect ratio in (3/4, 4/3), bilinear resize back to the stored size) +
  ``RandomHorizontalFlip`` + ``Normalize``. The crop boxes are drawn as torchvision draws them
  (up to ten tries per image, then the centre crop), and the resize reproduces
  ``F.interpolate(mode="bilinear", align_corners=False)`` on each crop, so each image equals
  ``torchvision.transforms.v2.functional.resized_crop`` of that box (to float rounding). Crops are
  never larger than the output, so torchvision's antialiasing, which only acts when shrinking, does
  not apply.

Two implementations of the resized crop (``kernel``):

- ``torch``: separable, on the uint8 store with row copies (``index_select``): columns first, then
  rows, with one transpose between. On a GPU the whole batch goes through at once; on the CPU it goes
  in tiles of a few images so that the intermediates stay close to the core's cache (faster than one
  pass over the batch; see ``CPU_TILE_BYTES``). Tiles are a fixed number of images per call, not a
  loop over images, and give bit-identical results to one pass.
- ``numba`` (the CPU default when numba is installed): one compiled kernel per batch, parallel over
  (image, channel), that reads each needed source row once, resamples it horizontally, blends row
  pairs vertically and normalises straight into the output: one pass over the 38.5 MB float batch
  where the chain of torch operations needs about a dozen. Same boxes, flips and formula; the two
  agree to float rounding (about 1e-6) and each is deterministic.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .spec import AugmentSpec

try:  # the fused CPU kernel of the resized crop; without numba the torch-ops path serves the CPU too
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps a broken install usable
    numba = None

# Float bytes of one CPU tile's images: two 224 px images. On the 2-core development machine
# (2 MiB L2 per core) that ran fastest; `cnnbench bench --tiles 1,2,4,8,64` measures it on another
# CPU, and docs/benchmarks.md has the numbers.
CPU_TILE_BYTES = 5 * 2**18
RATIO = (3 / 4, 4 / 3)


def normalize(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float ``(x / 255 - mean) / std``."""
    return (x_uint8.float().div_(255.0) - mean) / std


def pad_crop_flip(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole uint8 batch at once."""
    b, c, h, w = x.shape
    dev = x.device
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=dev)
        rows = (torch.arange(h, device=dev)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=dev)[None, :] + dx[:, None])[:, None, None, :]
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        x = padded[bi, ci, rows, cols]
    if flip:
        mask = torch.rand(b, generator=gen, device=dev) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], gen: torch.Generator,
               device: torch.device, ratio: tuple[float, float] = RATIO, attempts: int = 10):
    """``RandomResizedCrop.get_params`` for ``n`` images at once: (top, left, h, w), int64 each.

    Every image gets up to ``attempts`` draws of area fraction U(scale) and log-uniform aspect
    ratio; the first whose rounded size fits the image is used, else the centre crop torchvision
    falls back to.
    """
    area = height * width
    target = torch.empty(n, attempts, device=device).uniform_(scale[0], scale[1], generator=gen) * area
    aspect = torch.exp(torch.empty(n, attempts, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=gen))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # index of the first draw that fits (0 if none)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)
    # torchvision's fallback: the largest centred crop whose ratio lies in `ratio`
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, fw)
    h = torch.where(found, h, fh)
    u = torch.rand(2, n, device=device, generator=gen)
    top = torch.where(found, (u[0] * (height - h + 1)).long().clamp(max=height - h), (height - fh) // 2)
    left = torch.where(found, (u[1] * (width - w + 1)).long().clamp(max=width - w), (width - fw) // 2)
    return top, left, h, w


def bilinear_taps(start: torch.Tensor, length: torch.Tensor, size: int):
    """Source indices and weights of ``F.interpolate(bilinear, align_corners=False)`` resizing the
    span [start, start + length) of an axis to ``size`` samples: out = (1 - w) * src[i0] + w * src[i1]."""
    pos = torch.arange(size, device=start.device, dtype=torch.float32)[None, :] + 0.5
    src = (pos * (length.float()[:, None] / size) - 0.5).clamp(min=0)
    last = (length - 1)[:, None]
    i0 = torch.minimum(src.floor().long(), last)
    i1 = torch.minimum(i0 + 1, last)
    return start[:, None] + i0, start[:, None] + i1, src - i0


def _resized_crop_flip_rows(store, idx, top, left, ch, cw, flip, gain, offset, out):  # pragma: no cover - compiled
    """The numba kernel: ``out[b, c]`` = crop ``(top, left, ch, cw)[b]`` of ``store[idx[b], c]`` resized
    bilinearly (``align_corners=False``) to ``out``'s size, mirrored where ``flip[b]``, times
    ``gain[c]`` plus ``offset[c]``. Horizontal pass over each source row of the crop, then vertical
    blends of row pairs; one job per (image, channel), each writing only its own plane."""
    n_out, n_ch, height, width = out.shape
    half = np.float32(0.5)
    for job in numba.prange(n_out * n_ch):
        b = job // n_ch
        c = job - b * n_ch
        src = store[idx[b], c]
        t, l, crop_h, crop_w = top[b], left[b], ch[b], cw[b]
        # column taps (as bilinear_taps), reversed for a flipped image
        x0 = np.empty(width, np.int64)
        x1 = np.empty(width, np.int64)
        wx = np.empty(width, np.float32)
        step_x = np.float32(crop_w) / np.float32(width)
        for x in range(width):
            p = max((np.float32(x) + half) * step_x - half, np.float32(0.0))
            i0 = min(int(p), crop_w - 1)
            at = width - 1 - x if flip[b] else x
            x0[at] = l + i0
            x1[at] = l + min(i0 + 1, crop_w - 1)
            wx[at] = p - np.float32(i0)
        rows = np.empty((crop_h, width), np.float32)
        for r in range(crop_h):
            line = src[t + r]
            for x in range(width):
                a = np.float32(line[x0[x]])
                rows[r, x] = a + wx[x] * (np.float32(line[x1[x]]) - a)
        g, o = gain[c], offset[c]
        step_y = np.float32(crop_h) / np.float32(height)
        for y in range(height):
            p = max((np.float32(y) + half) * step_y - half, np.float32(0.0))
            i0 = min(int(p), crop_h - 1)
            i1 = min(i0 + 1, crop_h - 1)
            wy = p - np.float32(i0)
            r0, r1, dst = rows[i0], rows[i1], out[b, c, y]
            for x in range(width):
                a = r0[x]
                dst[x] = (a + wy * (r1[x] - a)) * g + o


@functools.cache
def cpu_kernel():
    """The compiled numba kernel, built on first use (a GPU job never builds it); None without numba,
    or, with a warning, when numba cannot cache it: ``cache=True`` makes numba look for a writable
    cache directory (NUMBA_CACHE_DIR, ``__pycache__`` beside this file, then one under the home
    directory) when the kernel is defined, and raises when there is none, e.g. a read-only install
    run by a user without a writable home. The torch kernel then does the resampling."""
    if numba is None:
        return None
    try:
        return numba.njit(parallel=True, cache=True, nogil=True)(_resized_crop_flip_rows)
    except RuntimeError as err:  # "cannot cache function ...: no locator available for file ..."
        warnings.warn(f"numba cannot cache the resized-crop kernel ({err}); the CPU uses the torch kernel "
                      f"instead (slower, same results to float rounding). Set NUMBA_CACHE_DIR to a writable "
                      f"directory to use numba's.", RuntimeWarning, stacklevel=2)
        return None


KERNELS = ("auto", "numba", "torch")


class ResizedCropFlip:
    """Random resized crop + horizontal flip + normalisation of a batch drawn from a uint8 store."""

    def __init__(self, min_scale: float, flip: bool, mean: torch.Tensor, std: torch.Tensor,
                 tile: int | None = None, kernel: str = "auto") -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        if kernel == "numba" and cpu_kernel() is None:
            raise ValueError("kernel 'numba' needs the numba package (pip install numba) and a writable cache "
                             "directory for it (NUMBA_CACHE_DIR); see the warning above, or use kernel 'torch'")
        self.scale = (float(min_scale), 1.0)
        self.flip = flip
        # (x / 255 - mean) / std  ==  x * gain + offset
        self.gain = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.offset = (-mean / std).view(1, -1, 1, 1)
        self.tile = tile
        self.kernel = kernel
        self._work: dict[str, torch.Tensor] = {}

    def kernel_for(self, device: torch.device) -> str:
        """``numba`` or ``torch``: what resamples on ``device`` (numba only ever on the CPU)."""
        if device.type == "cpu" and self.kernel in ("auto", "numba") and cpu_kernel() is not None:
            return "numba"
        return "torch"

    def _buf(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        buf = self._work.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
            buf = self._work[name] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def tile_size(self, batch: int, image_numel: int, device: torch.device) -> int:
        if self.tile:
            return min(self.tile, batch)
        if device.type != "cpu":
            return batch
        return max(1, min(batch, CPU_TILE_BYTES // (4 * image_numel)))

    def __call__(self, images: torch.Tensor, idx: torch.Tensor, gen: torch.Generator,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``images[idx]`` (uint8 N x C x H x W) into a float batch of the same size.

        ``out``, when given, receives the batch (reusing it saves an allocation per step).
        """
        n, c, h, w = images.shape
        b, dev = idx.shape[0], images.device
        boxes = crop_boxes(b, h, w, self.scale, gen, dev)
        flipped = (torch.rand(b, device=dev, generator=gen) < 0.5) if self.flip else None
        return self.resample(images, idx, boxes, flipped, out=out)

    def resample(self, images: torch.Tensor, idx: torch.Tensor, boxes: tuple[torch.Tensor, ...],
                 flipped: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
        """The crop ``boxes`` (top, left, height, width per image, as :func:`crop_boxes` draws them)
        of ``images[idx]``, mirrored where ``flipped``, resized back to the stored size and
        normalised, by this device's kernel: the deterministic half of :meth:`__call__`."""
        n, c, h, w = images.shape
        b, dev = idx.shape[0], images.device
        top, left, ch, cw = boxes
        if out is None:
            out = torch.empty(b, c, h, w, device=dev)
        elif out.shape != (b, c, h, w) or out.dtype != torch.float32 or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous float32 tensor of shape {(b, c, h, w)}, not {tuple(out.shape)}")
        if self.kernel_for(dev) == "numba":
            threads = torch.get_num_threads()
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
            if flipped is None:
                flipped = torch.zeros(b, dtype=torch.bool)
            cpu_kernel()(images.contiguous().numpy(), idx.numpy(), top.numpy(), left.numpy(), ch.numpy(),
                        cw.numpy(), flipped.numpy(),
                        self.gain.reshape(-1).numpy(), self.offset.reshape(-1).numpy(), out.numpy())
            # numba's OpenMP pool is torch's too: after the kernel it leaves this thread's count at
            # NUMBA_NUM_THREADS (every core), and a one-thread job would then compete with its neighbours.
            torch.set_num_threads(threads)
            return out
        x0, x1, wx = bilinear_taps(left, cw, w)
        y0, y1, wy = bilinear_taps(top, ch, h)
        if flipped is not None:  # flipping the output = reading its columns in reverse
            x0, x1, wx = (torch.where(flipped[:, None], t.flip(1), t) for t in (x0, x1, wx))

        k = self.tile_size(b, c * h * w, dev)
        store = images.view(n, c * h * w)
        planes = torch.arange(k * c, device=dev).view(k, c, 1)
        for s in range(0, b, k):
            e = min(s + k, b)
            m = e - s
            # uint8 images of the tile, transposed so that image columns are rows in memory
            u = torch.index_select(store, 0, idx[s:e], out=self._buf("u", (m, c * h * w), torch.uint8, dev))
            ut = self._buf("ut", (m, c, w, h), torch.uint8, dev)
            ut.copy_(u.view(m, c, h, w).transpose(2, 3))
            # columns: two taps per output column, blended in float
            p = planes[:m]
            a = torch.index_select(ut.view(-1, h), 0, (p * w + x0[s:e, None, :]).reshape(-1),
                                   out=self._buf("a", (m * c * w, h), torch.uint8, dev))
            bb = torch.index_select(ut.view(-1, h), 0, (p * w + x1[s:e, None, :]).reshape(-1),
                                    out=self._buf("b", (m * c * w, h), torch.uint8, dev))
            f0 = self._buf("f0", (m, c, w, h), torch.float32, dev).copy_(a.view(m, c, w, h))
            f1 = self._buf("f1", (m, c, w, h), torch.float32, dev).copy_(bb.view(m, c, w, h))
            f0.lerp_(f1, wx[s:e, None, :, None])
            f0.mul_(self.gain).add_(self.offset)  # normalise (commutes with the blends: weights sum to 1)
            # back to rows, then two taps per output row, straight into the output
            g = self._buf("g", (m, c, h, w), torch.float32, dev)
            g.copy_(f0.transpose(2, 3))
            o = out[s:e]
            torch.index_select(g.view(-1, w), 0, (p * h + y0[s:e, None, :]).reshape(-1), out=o.view(-1, w))
            lo = torch.index_select(g.view(-1, w), 0, (p * h + y1[s:e, None, :]).reshape(-1),
                                    out=f1.view(-1, w))
            o.lerp_(lo.view(m, c, h, w), wy[s:e, None, :, None])
        return out


def augment_batch(images: torch.Tensor, idx: torch.Tensor, aug: AugmentSpec, mean: torch.Tensor, std: torch.Tensor,
                  gen: torch.Generator, resized: ResizedCropFlip | None = None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """``images[idx]`` (uint8) -> augmented, normalised float batch (every step a batched tensor op).

    For ``crop: resized`` pass the run's :class:`ResizedCropFlip` as ``resized`` to reuse its
    work buffers (one is made when omitted), and optionally ``out`` to reuse the output.
    """
    if aug.crop == "resized":
        resized = resized or make_augmenter(aug, mean, std)
        return resized(images, idx, gen, out=out)
    x = pad_crop_flip(images[idx], aug.crop_padding, aug.flip, gen)
    return normalize(x, mean, std)


def make_augmenter(aug: AugmentSpec, mean: torch.Tensor, std: torch.Tensor, tile: int | None = None,
                   kernel: str = "auto") -> ResizedCropFlip | None:
    """The reusable resized-crop pipeline when ``aug`` asks for one, else None. ``kernel``: see
    :class:`ResizedCropFlip`; ``tile``: images per tile of the torch kernel (default: see
    :meth:`ResizedCropFlip.tile_size`)."""
    if aug.crop == "resized":
        return ResizedCropFlip(aug.min_scale, aug.flip, mean, std, tile=tile, kernel=kernel)
    return None


def augment_kernel(augmenter: ResizedCropFlip | None, device: torch.device) -> str:
    """What augments a run's batches on ``device``, for its records (no augmenter = the pad crop)."""
    if augmenter is None:
        return "torch (pad crop)"
    return f"{augmenter.kernel_for(device)} (resized crop)"
