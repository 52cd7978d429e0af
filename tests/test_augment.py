"""Batched augmentation: the pad-crop pipeline (CIFAR-10) and the random resized crop (butterflies),
checked against torchvision's own transforms image by image."""

import pytest
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from cnnbench import augment
from cnnbench.augment import ResizedCropFlip, augment_batch, augment_kernel, crop_boxes, pad_crop_flip
from cnnbench.spec import AugmentSpec

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def test_pad_crop_flip_crops_and_flips_on_the_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    same = pad_crop_flip(x, padding=0, flip=False, gen=gen)
    assert torch.equal(same, x)
    out = pad_crop_flip(x, padding=2, flip=False, gen=gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # every crop is a window of the zero-padded image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert any(torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8]) for dy in range(5) for dx in range(5))
    flips = [pad_crop_flip(x, padding=0, flip=True, gen=gen) for _ in range(20)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flips) and any(torch.equal(f[0], x[0]) for f in flips)


def replay(seed: int, n: int, h: int, w: int, min_scale: float, flip: bool):
    """The boxes and flips a ResizedCropFlip call with this seed draws (same generator, same order)."""
    gen = torch.Generator().manual_seed(seed)
    top, left, ch, cw = crop_boxes(n, h, w, (min_scale, 1.0), gen, torch.device("cpu"))
    flipped = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return top, left, ch, cw, flipped


@pytest.mark.parametrize("kernel", ["torch", "numba"])
@pytest.mark.parametrize("shape", [(3, 40, 56), (3, 32, 32), (3, 17, 23)])
@pytest.mark.parametrize("flip", [True, False])
def test_resized_crop_equals_torchvision_image_by_image(shape, flip, kernel):
    torch.manual_seed(1)
    c, h, w = shape
    images = torch.randint(0, 256, (30, c, h, w), dtype=torch.uint8)
    idx = torch.randint(0, 30, (13,))
    aug = ResizedCropFlip(0.2, flip, MEAN, STD, kernel=kernel)
    assert aug.kernel_for(torch.device("cpu")) == kernel
    out = aug(images, idx, torch.Generator().manual_seed(5))
    assert out.shape == (13, c, h, w) and out.dtype == torch.float32
    top, left, ch, cw, flipped = replay(5, 13, h, w, 0.2, flip)
    assert flipped.any() == flip
    for i in range(13):
        ref = TF.resized_crop(images[idx[i]].float(), int(top[i]), int(left[i]), int(ch[i]), int(cw[i]), [h, w],
                              antialias=False)
        if flipped[i]:
            ref = TF.horizontal_flip(ref)
        ref = (ref / 255 - MEAN[0]) / STD[0]
        torch.testing.assert_close(out[i], ref, atol=1e-4, rtol=0)


def test_tiles_give_the_same_batch_and_out_is_filled():
    torch.manual_seed(2)
    images = torch.randint(0, 256, (20, 3, 24, 24), dtype=torch.uint8)
    idx = torch.randint(0, 20, (11,))
    whole = ResizedCropFlip(0.35, True, MEAN, STD, tile=64, kernel="torch")(images, idx,
                                                                           torch.Generator().manual_seed(3))
    for tile in (1, 3, 4):
        aug = ResizedCropFlip(0.35, True, MEAN, STD, tile=tile, kernel="torch")
        assert aug.tile_size(11, 3 * 24 * 24, torch.device("cpu")) == tile
        buf = torch.full((11, 3, 24, 24), float("nan"))
        got = aug(images, idx, torch.Generator().manual_seed(3), out=buf)
        assert got is buf and torch.equal(got, whole)
    with pytest.raises(ValueError, match=r"shape \(11, 3, 24, 24\)"):
        ResizedCropFlip(0.35, True, MEAN, STD)(images, idx, torch.Generator(), out=torch.empty(11, 3, 24, 23))


def test_numba_kernel_is_the_cpu_default_agrees_with_torch_and_repeats_exactly():
    torch.manual_seed(4)
    images = torch.randint(0, 256, (40, 3, 64, 48), dtype=torch.uint8)
    idx = torch.randint(0, 40, (24,))
    auto = ResizedCropFlip(0.08, True, MEAN, STD)
    assert auto.kernel_for(torch.device("cpu")) == "numba" and auto.kernel_for(torch.device("cuda")) == "torch"
    fast = auto(images, idx, torch.Generator().manual_seed(7), out=torch.full((24, 3, 64, 48), float("nan")))
    ops = ResizedCropFlip(0.08, True, MEAN, STD, kernel="torch")(images, idx, torch.Generator().manual_seed(7))
    torch.testing.assert_close(fast, ops, atol=1e-5, rtol=0)  # same boxes and flips, float rounding apart
    threads = torch.get_num_threads()
    for n in (1, 2):  # one job per (image, channel): the same bits whatever the thread count
        torch.set_num_threads(n)
        try:
            again = auto(images, idx, torch.Generator().manual_seed(7))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(again, fast)
    assert augment_kernel(auto, torch.device("cpu")) == "numba (resized crop)"
    assert augment_kernel(None, torch.device("cpu")) == "torch (pad crop)"


def test_kernel_choice_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="kernel must be one of auto, numba, torch, not 'c'"):
        ResizedCropFlip(0.5, True, MEAN, STD, kernel="c")
    monkeypatch.setattr(augment, "cpu_kernel", lambda: None)  # as without numba installed
    with pytest.raises(ValueError, match="needs the numba package"):
        ResizedCropFlip(0.5, True, MEAN, STD, kernel="numba")
    assert ResizedCropFlip(0.5, True, MEAN, STD).kernel_for(torch.device("cpu")) == "torch"


def test_numba_that_cannot_cache_falls_back_to_the_torch_kernel_with_a_warning(monkeypatch):
    """A read-only install run by a user without a writable cache directory: numba finds no place
    for its cache and raises when the kernel is defined. Importing cnnbench.augment must not
    fail (GPU jobs never use the kernel), and the CPU path must fall back to the torch kernel."""
    from numba.core import caching

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])  # no cache directory anywhere
    augment.cpu_kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="numba cannot cache the resized-crop kernel .*no locator available"):
            aug = ResizedCropFlip(0.5, True, MEAN, STD)
            assert aug.kernel_for(torch.device("cpu")) == "torch"
        store = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8)
        out = aug(store, torch.arange(6), torch.Generator().manual_seed(0))
        assert out.shape == (6, 3, 24, 24) and torch.isfinite(out).all()
    finally:
        augment.cpu_kernel.cache_clear()  # the next test builds the real (cached) kernel again


def test_cpu_tiles_fit_the_cache_and_a_gpu_takes_the_batch_whole():
    aug = ResizedCropFlip(0.35, True, MEAN, STD)
    assert aug.tile_size(64, 3 * 224 * 224, torch.device("cpu")) == 2  # 2 float images = 1.2 MB
    assert aug.tile_size(64, 3 * 32 * 32, torch.device("cpu")) == 64
    assert aug.tile_size(64, 3 * 224 * 224, torch.device("cuda")) == 64


def test_crop_boxes_follow_torchvision_get_params():
    n, h, w = 4000, 60, 80
    top, left, ch, cw = crop_boxes(n, h, w, (0.08, 1.0), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    assert (ch > 0).all() and (cw > 0).all()
    frac = (ch * cw).float() / (h * w)
    ratio = cw.float() / ch.float()
    # torchvision's own draws, for the distribution (rounding widens the bounds by a pixel)
    torch.manual_seed(0)
    tv = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
                       for _ in range(n)])
    tv_frac = (tv[:, 2] * tv[:, 3]).float() / (h * w)
    assert abs(frac.mean().item() - tv_frac.mean().item()) < 0.02
    assert abs(frac.median().item() - tv_frac.float().median().item()) < 0.03
    assert abs(top.float().mean().item() - tv[:, 0].float().mean().item()) < 1.0
    assert abs(left.float().mean().item() - tv[:, 1].float().mean().item()) < 1.0
    assert ratio.min() > 3 / 4 * 0.8 and ratio.max() < 4 / 3 * 1.25
    # a fraction too large for any box of that aspect ratio falls back to torchvision's centre crop
    top, left, ch, cw = crop_boxes(5, 10, 40, (1.0, 1.0), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert ch.tolist() == [10] * 5 and cw.tolist() == [round(10 * 4 / 3)] * 5
    assert top.tolist() == [0] * 5 and left.tolist() == [(40 - 13) // 2] * 5


def test_augment_batch_picks_the_pipeline_from_the_settings():
    torch.manual_seed(3)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    idx = torch.arange(4)
    plain = augment_batch(images, idx, AugmentSpec(crop="pad", crop_padding=0, flip=False, min_scale=None), MEAN, STD,
                          torch.Generator())
    torch.testing.assert_close(plain, (images[:4].float() / 255 - MEAN) / STD)
    resized = augment_batch(images, idx, AugmentSpec(crop="resized", min_scale=0.5, flip=True, crop_padding=None), MEAN, STD,
                            torch.Generator().manual_seed(1))
    again = ResizedCropFlip(0.5, True, MEAN, STD)(images, idx, torch.Generator().manual_seed(1))
    assert torch.equal(resized, again)
    assert not torch.allclose(resized, plain)  # cropped and resampled, not just normalised


def test_resample_is_the_deterministic_half_of_a_call():
    """__call__ = draw the boxes and flips, then resample: the same boxes and flips give the same
    batch (what the GPU check compares across the two kernels)."""
    store = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    idx = torch.tensor([4, 0, 2])
    aug = ResizedCropFlip(0.35, True, MEAN, STD)
    drawn = aug(store, idx, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    boxes = augment.crop_boxes(3, 40, 40, (0.35, 1.0), gen, torch.device("cpu"))
    flips = torch.rand(3, generator=gen) < 0.5
    for kernel in ("numba", "torch"):
        again = ResizedCropFlip(0.35, True, MEAN, STD, kernel=kernel).resample(store, idx, boxes, flips)
        torch.testing.assert_close(again, drawn, atol=1e-5, rtol=0)


def test_the_numba_kernel_leaves_torchs_thread_count_as_it_was():
    """numba's OpenMP pool is torch's: without care a one-thread job runs on every core after the
    first resized-crop batch, and two such jobs on two cores slow each other down."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        aug = ResizedCropFlip(0.35, True, MEAN, STD, kernel="numba")
        aug(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4), torch.Generator().manual_seed(0))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
