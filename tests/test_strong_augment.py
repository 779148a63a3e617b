"""Tests for crln_monai.data.StrongAugment (docs/method.md#strong-view)."""

from __future__ import annotations

import pytest
import torch

from crln_monai.data.strong_augment import StrongAugment, _cutmix_box_mask, _sample_beta

ALL_OFF = dict(rescale=False, cutmix=False, brightness=False, noise=False, rotate_flip=False, renormalise=False)


def only(**kwargs) -> StrongAugment:
    """A StrongAugment with every step off except the ones named in kwargs."""
    return StrongAugment(**{**ALL_OFF, **kwargs})


def coded_batch(batch: int, height: int, width: int, depth: int, dtype=torch.float32):
    """Image, label and confidence where every voxel of the batch carries a unique code.

    Returns image ``(B, 2, H, W, D)`` (channel 0 = code, channel 1 = -code), label ``(B, H, W, D)``
    (the code as long) and confidence (code / 2**16), so after any pure move of voxels the three
    still agree voxel by voxel.
    """
    code = torch.arange(batch * height * width * depth).reshape(batch, height, width, depth)
    image = torch.stack([code, -code], dim=1).to(dtype)
    return image, code.clone(), code.to(dtype) / 2**16


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- identity, layout, dtype


@pytest.mark.parametrize("singleton", [False, True])
def test_every_step_off_is_identity(singleton):
    image, label, conf = coded_batch(2, 8, 6, 4)
    if singleton:
        label, conf = label.unsqueeze(1), conf.unsqueeze(1)
    out = StrongAugment(**ALL_OFF)(image, label, conf, gen(0))
    for given, got in zip((image, label, conf), out):
        assert torch.equal(given, got) and given.shape == got.shape and given.dtype == got.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("singleton", [False, True])
def test_full_pipeline_keeps_shape_dtype_device_layout(dtype, singleton):
    image = torch.rand(2, 1, 32, 32, 8, dtype=dtype)
    label = torch.randint(0, 2, (2, 32, 32, 8))
    conf = torch.rand(2, 32, 32, 8, dtype=dtype)
    if singleton:
        label, conf = label.unsqueeze(1), conf.unsqueeze(1)
    out_image, out_label, out_conf = StrongAugment()(image, label, conf, gen(3))
    assert out_image.shape == image.shape and out_image.dtype == dtype and out_image.device == image.device
    assert out_label.shape == label.shape and out_label.dtype == torch.long and out_label.device == label.device
    assert out_conf.shape == conf.shape and out_conf.dtype == dtype
    assert set(out_label.unique().tolist()) <= {-1, 0, 1}
    assert float(out_image.min()) >= 0.0 and float(out_image.max()) <= 1.0
    assert not torch.equal(out_image, image)
    assert bool(((out_conf == 0) | (out_label != -1)).all())  # padded voxels have zero confidence


def test_generator_reproducibility():
    image = torch.rand(2, 1, 32, 24, 8)
    label = torch.randint(0, 3, (2, 32, 24, 8))
    conf = torch.rand(2, 32, 24, 8)
    augment = StrongAugment(brightness_prob=1.0, noise_prob=1.0, rotate_flip_prob=1.0)
    first = augment(image, label, conf, gen(11))
    second = augment(image, label, conf, gen(11))
    other = augment(image, label, conf, gen(12))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])


# --------------------------------------------------------------------------- rescale


@pytest.mark.parametrize("height,width", [(32, 24), (32, 32)])
def test_rescale_with_unit_scale_is_identity(height, width):
    image, label, conf = coded_batch(2, height, width, 8)
    image = image / image.abs().max()  # keep the bicubic rounding error small in absolute terms
    out_image, out_label, out_conf = only(rescale=True, scale_range=(1.0, 1.0))(image, label, conf, gen(0))
    torch.testing.assert_close(out_image, image, atol=1e-5, rtol=0)
    assert torch.equal(out_label, label) and torch.equal(out_conf, conf)


@pytest.mark.parametrize("height,width", [(32, 24), (32, 32)])
def test_rescale_zoom_two_label_follows_image_nearest(height, width):
    depth = 8
    h = torch.arange(height, dtype=torch.float32).view(height, 1, 1).expand(height, width, depth)
    w = torch.arange(width, dtype=torch.float32).view(1, width, 1).expand(height, width, depth)
    d = torch.arange(depth).view(1, 1, depth)
    image = torch.stack([h, w]).unsqueeze(0).repeat(2, 1, 1, 1, 1)  # channels = in-plane coordinates
    label = ((h.long() * width + w.long()) * depth + d).unsqueeze(0).repeat(2, 1, 1, 1)
    conf = label.float() / 2**16
    out_image, out_label, out_conf = only(rescale=True, scale_range=(2.0, 2.0))(image, label, conf, gen(0))

    # Output pixel i of an axis of size N reads source coordinate i/2 + N/4 - 1/4 (zoom about the centre).
    src_h = torch.arange(height) / 2 + height / 4 - 0.25
    src_w = torch.arange(width) / 2 + width / 4 - 0.25
    torch.testing.assert_close(out_image[:, 0], src_h.view(1, -1, 1, 1).expand_as(out_image[:, 0]), atol=0.1, rtol=0)
    torch.testing.assert_close(out_image[:, 1], src_w.view(1, 1, -1, 1).expand_as(out_image[:, 1]), atol=0.1, rtol=0)
    nearest_h, nearest_w = src_h.round().long(), src_w.round().long()  # no ties: fractions are .25/.75
    expected = (nearest_h.view(-1, 1, 1) * width + nearest_w.view(1, -1, 1)) * depth + d
    assert torch.equal(out_label, expected.unsqueeze(0).expand_as(out_label))
    # The label is the nearest voxel to the image's (continuous) source coordinate.
    assert bool(((out_image[:, 0] - (out_label // depth // width).float()).abs() <= 0.5).all())
    assert bool(((out_image[:, 1] - (out_label // depth % width).float()).abs() <= 0.5).all())
    assert torch.equal(out_conf, out_label.float() / 2**16)


def test_rescale_shrink_pads_label_minus_one_and_zero_confidence_exactly():
    height, width, depth = 32, 24, 8
    image = 1.0 + torch.rand(2, 1, height, width, depth)
    label = torch.randint(0, 3, (2, height, width, depth))
    conf = 0.5 + 0.5 * torch.rand(2, height, width, depth)
    out_image, out_label, out_conf = only(rescale=True, scale_range=(0.5, 0.5))(image, label, conf, gen(0))
    # s = 0.5 leaves a border of N * (1 - s) / 2 voxels: 8 along H, 6 along W.
    border = torch.ones(height, width, dtype=torch.bool)
    border[8:24, 6:18] = False
    border = border.view(1, height, width, 1).expand_as(out_label)
    assert bool((out_label[border] == -1).all()) and bool((out_conf[border] == 0).all())
    assert bool((out_label[~border] >= 0).all()) and bool((out_conf[~border] >= 0.5).all())
    assert bool((out_image[:, 0][border] > 0.5).all())  # image is reflect-padded, not zero-filled


# --------------------------------------------------------------------------- rotate + flip


def _reflections(plane: torch.Tensor, turns) -> list[torch.Tensor]:
    return [torch.flip(torch.rot90(plane, k, dims=(0, 1)), dims=(a,)) for k in turns for a in (0, 1)]


@pytest.mark.parametrize("height,width,turns", [(32, 32, (0, 1, 2, 3)), (32, 24, (0, 2))])
def test_rotate_flip_moves_image_label_confidence_identically(height, width, turns):
    depth = 8
    image, label, conf = coded_batch(2, height, width, depth)
    seen = set()
    for seed in range(16):
        out_image, out_label, out_conf = only(rotate_flip=True, rotate_flip_prob=1.0)(image, label, conf, gen(seed))
        assert torch.equal(out_label, out_image[:, 0].long()) and torch.equal(out_image[:, 1], -out_image[:, 0])
        assert torch.equal(out_conf, out_image[:, 0] / 2**16)
        for b in range(2):
            matches = [
                i for i, cand in enumerate(_reflections(label[b], turns)) if torch.equal(out_label[b], cand)
            ]
            assert matches, "output is not a rot90 + flip of the input"
            seen.add(tuple(matches))  # the (k, axis) pairs giving this reflection
            assert not torch.equal(out_label[b], label[b])  # always a reflection, never the identity
    # square planes reach all four reflections of the square; non-square only the two flips
    assert len(seen) == (4 if height == width else 2)


def test_rotate_flip_probability_zero_is_identity():
    image, label, conf = coded_batch(2, 16, 16, 4)
    out = only(rotate_flip=True, rotate_flip_prob=0.0)(image, label, conf, gen(0))
    assert all(torch.equal(a, b) for a, b in zip(out, (image, label, conf)))


# --------------------------------------------------------------------------- CutMix


def test_cutmix_pastes_label_and_confidence_with_the_image_full_depth_box():
    batch, height, width, depth = 3, 32, 24, 8
    image, label, conf = coded_batch(batch, height, width, depth)
    per_sample = height * width * depth
    mixed_samples = 0
    for seed in range(12):
        out_image, out_label, out_conf = only(cutmix=True)(image, label, conf, gen(seed))
        assert torch.equal(out_label, out_image[:, 0].long()) and torch.equal(out_image[:, 1], -out_image[:, 0])
        assert torch.equal(out_conf, out_image[:, 0] / 2**16)
        assert torch.equal(out_label % per_sample, label % per_sample)  # voxels keep their position
        source = out_label // per_sample  # which sample each voxel came from
        for b in range(batch):
            pasted = source[b] != b
            if not bool(pasted.any()):
                continue
            mixed_samples += 1
            assert source[b][pasted].unique().numel() == 1  # one partner per sample
            assert torch.equal(pasted, pasted[..., :1].expand_as(pasted))  # full depth
            plane = pasted[..., 0]
            rows, cols = plane.any(dim=1), plane.any(dim=0)
            assert torch.equal(plane, rows[:, None] & cols[None, :])  # axis-aligned box
            assert bool(rows.nonzero().diff(dim=0).eq(1).all()) and bool(cols.nonzero().diff(dim=0).eq(1).all())
    assert mixed_samples > 0


def test_cutmix_box_mask_side_and_centre_range():
    # beta = 1e4 pins lambda to 0.5 +- 0.01: side = floor(N * sqrt(0.5)) -> 22 on H = 32, 16 on W = 24.
    height, width = 32, 24
    mask = _cutmix_box_mask(400, height, width, 1e4, gen(0), torch.device("cpu"))
    assert mask.shape == (400, height, width) and mask.dtype == torch.bool
    for axis, size, half in ((2, height, 11), (1, width, 8)):
        line = mask.any(dim=axis)  # (B, N): rows (axis 2 reduced) or columns
        index = torch.arange(size)
        low = torch.where(line, index, size).amin(dim=1)
        high = torch.where(line, index + 1, 0).amax(dim=1)
        # box = [c - half, c + half) clipped to [0, N) with integer c in [N // 8, N)
        centre_low, centre_high = size // 8, size - 1
        assert int(high.min()) == centre_low + half and int(low.max()) == centre_high - half
        assert bool(((low == 0) | (high == size) | (high - low == 2 * half)).all())
        assert bool((high - low <= 2 * half).all())


def _box_extents(mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Per in-plane axis: (low, high, N) of each sample's box, ``[low, high)`` after border clipping."""
    extents = []
    for axis, size in ((2, mask.shape[1]), (1, mask.shape[2])):
        line = mask.any(dim=axis)  # (B, N)
        index = torch.arange(size)
        low = torch.where(line, index, size).amin(dim=1)
        high = torch.where(line, index + 1, 0).amax(dim=1)
        extents.append((low, high, size))
    return extents


def test_cutmix_lambda_batch_shares_one_box_size_and_sample_does_not():
    # Clipping can shorten a box, so compare the boxes that touch no border: their sides are the unclipped ones.
    batch, height, width = 64, 64, 48
    sides = {}
    for mode in ("batch", "sample"):
        mask = _cutmix_box_mask(batch, height, width, 4.0, gen(0), torch.device("cpu"), mode)
        sides[mode] = []
        for low, high, size in _box_extents(mask):
            inside = (low > 0) & (high < size)
            assert int(inside.sum()) >= 5  # enough unclipped boxes on this axis for the comparison to mean something
            unclipped = (high - low)[inside]
            if mode == "batch":
                assert bool(((high - low) <= unclipped.max()).all())  # clipped boxes are only shorter
            sides[mode].append(unclipped.unique())
        centres = [((low + high) // 2) for low, high, _ in _box_extents(mask)]
        assert all(c.unique().numel() > 1 for c in centres)  # centres are drawn per sample in both modes
    assert all(s.numel() == 1 for s in sides["batch"])  # one λ: one side length per axis for the batch
    assert all(s.numel() > 1 for s in sides["sample"])  # one λ per sample: the sides differ


def test_strong_augment_passes_cutmix_lambda_to_the_box():
    batch, height, width, depth = 16, 32, 32, 2
    image, label, conf = coded_batch(batch, height, width, depth)
    per_sample = height * width * depth
    for mode in ("batch", "sample"):
        out_label = only(cutmix=True, cutmix_lambda=mode)(image, label, conf, gen(7))[1]
        generator = gen(7)  # replay the draws: the partner permutation, then the boxes
        partner = torch.randperm(batch, generator=generator)
        box = _cutmix_box_mask(batch, height, width, 4.0, generator, torch.device("cpu"), mode)
        expected_source = torch.where(box, partner[:, None, None], torch.arange(batch)[:, None, None])
        assert torch.equal(out_label[..., 0] // per_sample, expected_source)


def test_cutmix_lambda_is_checked():
    with pytest.raises(ValueError, match=r"cutmix_lambda must be one of \('batch', 'sample'\), got 'image'"):
        StrongAugment(cutmix_lambda="image")
    with pytest.raises(ValueError, match="cutmix_lambda must be one of"):
        _cutmix_box_mask(2, 8, 8, 4.0, gen(0), torch.device("cpu"), "image")


@pytest.mark.parametrize("beta", [4.0, 0.5])
def test_beta_sampler_moments(beta):
    draws = _sample_beta(beta, 40000, gen(0), torch.device("cpu"))
    assert bool(((draws >= 0) & (draws <= 1)).all())
    assert abs(float(draws.mean()) - 0.5) < 0.01
    assert abs(float(draws.var()) - 1.0 / (4.0 * (2.0 * beta + 1.0))) < 0.005


# --------------------------------------------------------------------------- photometric, renormalise


def test_brightness_scales_each_sample_in_range_and_clips():
    image = torch.rand(4, 1, 16, 16, 4) * 0.7 + 0.1
    label = torch.zeros(4, 16, 16, 4, dtype=torch.long)
    conf = torch.ones(4, 16, 16, 4)
    out, out_label, out_conf = only(brightness=True, brightness_prob=1.0)(image, label, conf, gen(5))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    for b in range(4):
        unclipped = out[b] < 1.0
        ratio = out[b][unclipped] / image[b][unclipped]
        torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio))  # one factor per sample
        assert 0.75 <= float(ratio.mean()) <= 1.25
        assert torch.equal(out[b][~unclipped], torch.ones_like(out[b][~unclipped]))
    assert torch.equal(out_label, label) and torch.equal(out_conf, conf)
    unchanged = only(brightness=True, brightness_prob=0.0)(image, label, conf, gen(5))[0]
    assert torch.equal(unchanged, image)


def test_noise_is_clipped():
    image = torch.full((2, 1, 16, 16, 4), 0.5)
    label = torch.zeros(2, 16, 16, 4, dtype=torch.long)
    conf = torch.ones(2, 16, 16, 4)
    out = only(noise=True, noise_prob=1.0, noise_std=1.0, noise_clip=0.2)(image, label, conf, gen(1))[0]
    delta = out - image
    assert float(delta.abs().max()) == pytest.approx(0.2, abs=1e-6)
    assert float(delta.std()) > 0.1
    unchanged = only(noise=True, noise_prob=0.0)(image, label, conf, gen(1))[0]
    assert torch.equal(unchanged, image)


def test_renormalise_per_sample_per_channel_and_constant_volume():
    image = torch.randn(2, 2, 8, 8, 4) * 5 + 3
    image[1, 1] = 7.0  # constant volume
    label = torch.zeros(2, 8, 8, 4, dtype=torch.long)
    conf = torch.ones(2, 8, 8, 4)
    out = only(renormalise=True)(image, label, conf, gen(0))[0]
    assert torch.isfinite(out).all() and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out[1, 1], torch.zeros_like(out[1, 1]))
    for b, c in [(0, 0), (0, 1), (1, 0)]:
        assert float(out[b, c].min()) == 0.0 and float(out[b, c].max()) == 1.0
        expected = (image[b, c] - image[b, c].min()) / (image[b, c].max() - image[b, c].min())
        torch.testing.assert_close(out[b, c], expected)


# --------------------------------------------------------------------------- validation


def test_bad_inputs_raise():
    image, label, conf = coded_batch(2, 8, 8, 4)
    augment = StrongAugment()
    with pytest.raises(TypeError, match="pseudo_label"):
        augment(image, label.float(), conf)
    with pytest.raises(TypeError, match="image"):
        augment(image[:, 0, ..., 0], label, conf)
    with pytest.raises(ValueError, match="pseudo_label and confidence"):
        augment(image, label[:, :4], conf)
    with pytest.raises(ValueError, match="pseudo_label and confidence"):
        augment(image, label.unsqueeze(1), conf)
    with pytest.raises(ValueError, match="scale_range"):
        StrongAugment(scale_range=(1.5, 0.5))
    with pytest.raises(ValueError, match="noise_prob"):
        StrongAugment(noise_prob=1.5)
    with pytest.raises(ValueError, match="cutmix_beta"):
        StrongAugment(cutmix_beta=0.0)


# --------------------------------------------------------------------------- CUDA (skipped without a GPU)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_stays_on_device_without_host_sync_and_is_reproducible(dtype):
    device = torch.device("cuda")
    image = torch.rand(2, 1, 112, 112, 80, device=device, dtype=dtype)
    label = torch.randint(0, 2, (2, 112, 112, 80), device=device)
    conf = torch.rand(2, 112, 112, 80, device=device, dtype=dtype)
    augment = StrongAugment(brightness_prob=1.0, noise_prob=1.0, rotate_flip_prob=1.0)
    augment(image, label, conf, torch.Generator(device).manual_seed(0))  # warm-up (lazy CUDA init may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        first = augment(image, label, conf, torch.Generator(device).manual_seed(0))
        second = augment(image, label, conf, torch.Generator(device).manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for given, got in zip((image, label, conf), first):
        assert got.device == given.device and got.dtype == given.dtype and got.shape == given.shape
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert float(first[0].min()) >= 0.0 and float(first[0].max()) <= 1.0
    with pytest.raises(ValueError, match="generator"):
        augment(image, label, conf, torch.Generator().manual_seed(0))


@pytest.mark.gpu
@pytest.mark.parametrize("height,width", [(32, 32), (32, 24)])
def test_cuda_geometric_steps_move_everything_identically(height, width):
    image, label, conf = (t.cuda() for t in coded_batch(3, height, width, 8))
    for seed in range(4):
        augment = only(cutmix=True, rotate_flip=True, rotate_flip_prob=1.0)
        out_image, out_label, out_conf = augment(image, label, conf, torch.Generator("cuda").manual_seed(seed))
        assert torch.equal(out_label, out_image[:, 0].long()) and torch.equal(out_conf, out_image[:, 0] / 2**16)
    shrunk_label, shrunk_conf = only(rescale=True, scale_range=(0.5, 0.5))(image, label, conf)[1:]
    border = shrunk_label == -1
    assert int(border.sum()) == 3 * 8 * (height * width - (height // 2) * (width // 2))
    assert bool((shrunk_conf[border] == 0).all())


def test_unit_range_false_keeps_z_scored_intensities_unclipped_and_unrenormalised():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 1, 16, 16, 4) * 3.0  # z-scored-like values far outside [0, 1]
    label = torch.zeros(2, 16, 16, 4, dtype=torch.long)
    conf = torch.ones(2, 16, 16, 4)
    aug = StrongAugment(rescale=False, cutmix=False, noise=False, rotate_flip=False, brightness_prob=1.0, unit_range=False)
    out, _, _ = aug(image, label, conf, generator=gen)
    factor = out / image  # one brightness factor per sample, nothing clipped or renormalised
    for b in range(2):
        assert torch.allclose(factor[b], factor[b].flatten()[0].expand_as(factor[b]), atol=1e-5)
        assert 0.75 <= float(factor[b].flatten()[0]) <= 1.25
    assert float(out.min()) < -1.0 and float(out.max()) > 2.0
    unit = StrongAugment(rescale=False, cutmix=False, noise=False, rotate_flip=False, brightness_prob=1.0)
    out_unit, _, _ = unit(image, label, conf, generator=torch.Generator().manual_seed(0))
    assert float(out_unit.min()) == 0.0 and float(out_unit.max()) == 1.0


def test_a_batch_of_slices_is_augmented_as_volumes_of_depth_one():
    """(B, C, H, W) slices (the 2-D configuration) get the same draws and results as (B, C, H, W, 1) volumes."""
    image, label, conf = coded_batch(4, 8, 8, 1)
    augment = StrongAugment(unit_range=False)
    volumes = augment(image, label, conf, generator=torch.Generator().manual_seed(3))
    slices = augment(image[..., 0], label[..., 0], conf[..., 0], generator=torch.Generator().manual_seed(3))
    for volume, plane in zip(volumes, slices):
        assert plane.shape == volume.shape[:-1]
        assert torch.equal(plane, volume[..., 0])
    assert not torch.equal(slices[0], image[..., 0])  # something was done
