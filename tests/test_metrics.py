"""medpy-equivalent Dice/Jaccard/HD95/ASD, the empty-mask rule, and the case bootstrap."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from crln_monai.evaluation.metrics import bootstrap, multiclass_metrics, segmentation_metrics, surface_distances


def _cube_pair(n: int = 10, k: int = 2, origin: int = 2, shape=(16, 14, 14)) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros(shape, dtype=bool)
    b = np.zeros(shape, dtype=bool)
    o = origin
    a[o : o + n, o : o + n, o : o + n] = True
    b[o + k : o + k + n, o : o + n, o : o + n] = True
    return a, b


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def test_cubes_offset_along_one_axis_hand_derived():
    # A = [0,10)^3, B = A + 2 e_x (local coordinates; both well inside the array).
    # Overlap = 8*10*10 = 800 voxels: dice = 2*800/2000 = 0.8, jaccard = 800/1200 = 2/3.
    #
    # Surface (connectivity-1 erosion) of a 10-cube = its shell: voxels with any coordinate in {0, 9};
    # 10^3 - 8^3 = 488 voxels. Distances A-shell -> B-shell (B-shell: x in {2, 11} or y/z in {0, 9}):
    #  * lateral faces of A (y or z in {0,9}; 10 x-slices of 36 voxels = 360): for x >= 2 the voxel is in
    #    B and on B's lateral face -> 0 (8 slices, 288 voxels); for x < 2 every B-shell voxel has x >= 2,
    #    and (2, y, z) is one -> 2 - x: 36 voxels at 2 (x = 0), 36 at 1 (x = 1).
    #  * x = 0 face interior (y, z in 1..8; 64 voxels): nearest is (2, y, z) -> 2.
    #  * x = 9 face interior (64 voxels, inside B): nearest B-shell voxel is along an axis, at
    #    min(11 - 9 = 2, 9 - 2 = 7, y, 9 - y, z, 9 - z) = min(2, m), m = distance to the lateral faces:
    #    the ring m = 1 (8^2 - 6^2 = 28 voxels) -> 1, the other 36 -> 2.
    # A->B: 288 zeros, 64 ones, 136 twos. ASD = (64 + 2*136)/488 = 336/488.
    # B->A is the mirror image (x -> 11 - x swaps A and B), so the pooled 976 distances hold 272 twos
    # at sorted indices 704..975; p95 is at index 0.95*975 = 926.25 -> HD95 = 2.
    a, b = _cube_pair()
    m = segmentation_metrics(a, b)
    assert m["dice"] == pytest.approx(0.8)
    assert m["jaccard"] == pytest.approx(2 / 3)
    assert m["hd95"] == pytest.approx(2.0)
    assert m["asd"] == pytest.approx(336 / 488)
    assert np.bincount(surface_distances(a, b).astype(int)).tolist() == [288, 64, 136]
    assert m["empty_prediction"] is False and m["empty_reference"] is False
    # Dice, Jaccard and HD95 are symmetric; by the mirror symmetry ASD is too here.
    assert segmentation_metrics(b, a) == m


def test_identical_masks():
    a, _ = _cube_pair()
    m = segmentation_metrics(a, a)
    assert (m["dice"], m["jaccard"], m["hd95"], m["asd"]) == (1.0, 1.0, 0.0, 0.0)


def test_sphere_vs_shifted_sphere():
    # For two radius-r balls shifted by s, a surface point at angle θ to the shift axis lies about
    # s*|cos θ| from the other surface, so distances reach s and average about s/2.
    shape, radius = (40, 40, 40), 10
    a = _ball(shape, (20, 20, 20), radius)
    for shift in (2, 3, 4):
        b = _ball(shape, (20 + shift, 20, 20), radius)
        ab, ba = segmentation_metrics(a, b), segmentation_metrics(b, a)
        assert abs(ab["hd95"] - shift) <= 1.0
        assert ab["hd95"] == ba["hd95"]  # pooled percentile: symmetric by construction
        assert ab["dice"] == ba["dice"] and ab["jaccard"] == ba["jaccard"]
        assert abs(ab["asd"] - shift / 2) <= 0.5
        assert 0 < ab["dice"] < 1


def test_thin_plates_voxel_vs_mm_spacing():
    # Two one-voxel-thick plates at x = 3 and x = 6, same (y, z) extent: every voxel is surface and its
    # nearest partner is straight across, 3 voxels along x -> hd95 = asd = 3 * spacing_x.
    a = np.zeros((10, 12, 12), dtype=np.uint8)
    b = np.zeros_like(a)
    a[3, 2:10, 2:10] = 1
    b[6, 2:10, 2:10] = 1
    assert segmentation_metrics(a, b)["hd95"] == pytest.approx(3.0)
    for spacing, expected in (((2.0, 1.0, 1.0), 6.0), ((0.5, 1.0, 1.0), 1.5), ((1.0, 0.5, 2.0), 3.0)):
        m = segmentation_metrics(a, b, spacing=spacing)
        assert m["hd95"] == pytest.approx(expected)
        assert m["asd"] == pytest.approx(expected)
        assert m["dice"] == 0.0


def test_isotropic_spacing_scales_distances():
    a, b = _cube_pair()
    vox = segmentation_metrics(a, b)
    mm = segmentation_metrics(a, b, spacing=0.625)
    assert mm["hd95"] == pytest.approx(0.625 * vox["hd95"])
    assert mm["asd"] == pytest.approx(0.625 * vox["asd"])
    assert mm["dice"] == vox["dice"]


def test_pooled_hd95_differs_from_max_of_directional_p95():
    # pred = 10x10 square; ref = the same square + 3 isolated pixels far away.
    # pred->ref: 36 shell pixels, all 0. ref->pred: 36 zeros + 3 pixels at sqrt(72), sqrt(52), sqrt(52)
    # from the corner (11, 11); its p95 is at index 0.95*38 = 36.1 -> between two sqrt(52) -> sqrt(52).
    # Pooled: 75 distances, 72 zeros; index 0.95*74 = 70.3 -> 0. MONAI (max of directional p95) = sqrt(52).
    pred = np.zeros((20, 20), dtype=bool)
    pred[2:12, 2:12] = True
    ref = pred.copy()
    ref[17, 17] = ref[17, 15] = ref[15, 17] = True
    m = segmentation_metrics(pred, ref)
    assert m["hd95"] == 0.0
    assert m["asd"] == 0.0
    assert m["dice"] == pytest.approx(200 / 203)
    from monai.metrics import compute_hausdorff_distance

    def one_hot(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([~x, x]))[None].float()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        monai_hd95 = float(compute_hausdorff_distance(one_hot(pred), one_hot(ref), percentile=95))
    assert monai_hd95 == pytest.approx(math.sqrt(52), abs=1e-4)


def test_crop_is_exact_embedding_and_border_surface():
    # Embedding the masks in a larger array changes nothing; a mask touching the array border has
    # its border voxels as surface (outside counts as background, as in medpy).
    a, b = _cube_pair()
    big_a = np.zeros((40, 30, 33), dtype=bool)
    big_b = np.zeros_like(big_a)
    big_a[5:21, 7:21, 3:17] = a
    big_b[5:21, 7:21, 3:17] = b
    assert segmentation_metrics(big_a, big_b) == segmentation_metrics(a, b)
    # Cube flush with the array corner: its shell still has 488 voxels.
    corner = np.zeros((12, 12, 12), dtype=bool)
    corner[:10, :10, :10] = True
    assert surface_distances(corner, corner).shape == (488,)


def test_empty_rules():
    a, _ = _cube_pair()
    empty = np.zeros_like(a)
    m = segmentation_metrics(empty, a)
    assert m == {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0, "empty_prediction": True, "empty_reference": False}
    m = segmentation_metrics(a, empty)
    assert m["dice"] == 0.0 and m["jaccard"] == 0.0
    assert math.isnan(m["hd95"]) and math.isnan(m["asd"])
    assert m["empty_prediction"] is False and m["empty_reference"] is True
    m = segmentation_metrics(empty, empty)
    assert m == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "empty_prediction": True, "empty_reference": True}


def test_torch_input_equals_numpy_input():
    a, b = _cube_pair()
    expected = segmentation_metrics(a, b, spacing=(0.5, 1.0, 2.0))
    got = segmentation_metrics(torch.from_numpy(a), torch.from_numpy(b.astype(np.float32)), spacing=(0.5, 1.0, 2.0))
    assert got == expected


def test_bad_inputs_raise():
    a, b = _cube_pair()
    with pytest.raises(ValueError, match=r"pred \(16, 14, 14\) and label \(16, 14, 13\)"):
        segmentation_metrics(a, b[..., :13])
    with pytest.raises(ValueError, match="binary"):
        segmentation_metrics(a.astype(np.int64) * 2, b)
    with pytest.raises(ValueError, match="size-0/1"):
        segmentation_metrics(a[None], b[None])
    with pytest.raises(ValueError, match="one value per axis"):
        segmentation_metrics(a, b, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="> 0"):
        segmentation_metrics(a, b, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(TypeError, match="pred"):
        segmentation_metrics(a.tolist(), b)


def test_multiclass_metrics_match_binary_per_class():
    pred = np.zeros((16, 14, 14), dtype=np.int64)
    label = np.zeros_like(pred)
    a, b = _cube_pair(n=4, k=1, origin=1)
    pred[a] = 1
    label[b] = 1
    pred[8:12, 8:12, 8:12] = 2
    label[8:12, 8:12, 8:13] = 2
    out = multiclass_metrics(torch.from_numpy(pred), label, num_classes=3, spacing=(1.0, 2.0, 1.0))
    assert sorted(out) == [1, 2]
    for c in (1, 2):
        assert out[c] == segmentation_metrics(pred == c, label == c, spacing=(1.0, 2.0, 1.0))
    assert out[2]["dice"] == pytest.approx(2 * 64 / (64 + 80))
    with pytest.raises(ValueError, match="label"):
        multiclass_metrics(pred, label + 1, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        multiclass_metrics(pred, label, num_classes=1)


def test_bootstrap_reproducible_seeded_and_nan_aware():
    values = np.array([0.9, 0.8, 0.85, 0.7, 0.95, 0.6, 0.88, 0.91])
    first = bootstrap(values, num_resamples=100, seed=0)
    assert first == bootstrap(values, num_resamples=100, seed=0)
    assert first != bootstrap(values, num_resamples=100, seed=1)
    mean, std = first
    assert abs(mean - values.mean()) < 0.05 and 0 < std < values.std()
    # Hand check with the same Generator draws.
    idx = np.random.default_rng(3).integers(0, values.size, size=(5, values.size))
    means = values[idx].mean(axis=1)
    assert bootstrap(values, num_resamples=5, seed=3) == pytest.approx((means.mean(), means.std()))
    # NaN cases are ignored by the per-resample nan-mean.
    with_nan = np.append(values, np.nan)
    mean_nan, std_nan = bootstrap(with_nan, num_resamples=200, seed=0)
    assert math.isfinite(mean_nan) and math.isfinite(std_nan)
    assert abs(mean_nan - values.mean()) < 0.05
    assert all(math.isnan(v) for v in bootstrap([np.nan, np.nan], num_resamples=10))
    assert bootstrap([0.5], num_resamples=10) == (0.5, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap([])
    with pytest.raises(ValueError, match="num_resamples"):
        bootstrap(values, num_resamples=0)
