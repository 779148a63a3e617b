"""Tests of crln_monai.data.transforms: weak training pipeline, evaluation pipeline, EnsureLabeld."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from crln_monai.data.transforms import EnsureLabeld, evaluation_transforms, semi_supervised_train_transforms

SPACING = (0.625, 0.625, 1.25)
PATCH = (32, 32, 16)


def write(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), str(path))
    return str(path)


@pytest.fixture
def case(tmp_path) -> dict:
    """A 40x40x24 image with a cubic label."""
    rng = np.random.default_rng(0)
    image = rng.normal(3.0, 2.0, (40, 40, 24)).astype(np.float32)
    label = np.zeros((40, 40, 24), np.uint8)
    label[10:30, 12:28, 6:18] = 1
    return {"image": write(tmp_path / "img.nii.gz", image), "label": write(tmp_path / "lab.nii.gz", label), "case": "c"}


@contextmanager
def raises_in_chain(kind: type[BaseException], match: str) -> Iterator[None]:
    """Like pytest.raises, but also accepts the error as the cause of MONAI's "applying transform" RuntimeError."""
    with pytest.raises(Exception) as info:
        yield
    error: BaseException | None = info.value
    while error is not None and not (isinstance(error, kind) and re.search(match, str(error))):
        error = error.__cause__
    assert error is not None, f"no {kind.__name__} matching {match!r} in the chain of {info.value!r}"


def run(transform, item: dict, seed: int = 0) -> dict:
    transform.set_random_state(seed=seed)
    return transform(dict(item))


def test_train_output_shapes_types_and_range(case):
    out = run(semi_supervised_train_transforms(PATCH), case)
    assert out["image"].shape == (1, *PATCH) and out["label"].shape == (1, *PATCH)
    assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.long
    assert type(out["image"]) is torch.Tensor and type(out["label"]) is torch.Tensor  # track_meta=False
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert set(out["label"].unique().tolist()) <= {0, 1}
    assert out["has_label"] is True and out["case"] == "c"


def test_minmax_to_unit_range_without_augmentation(case, tmp_path):
    transform = semi_supervised_train_transforms((40, 40, 24), rotate_flip=False, brightness=False)
    out = run(transform, case)
    source = nib.load(case["image"]).get_fdata().astype(np.float32)
    expected = (source - source.min()) / (source.max() - source.min())
    np.testing.assert_allclose(out["image"][0].numpy(), expected, atol=1e-6)
    assert out["image"].min() == 0.0 and out["image"].max() == 1.0


def test_brightness_scales_by_075_to_125_and_clips(case):
    plain = run(semi_supervised_train_transforms((40, 40, 24), rotate_flip=False, brightness=False), case)["image"]
    transform = semi_supervised_train_transforms((40, 40, 24), rotate_flip=False, brightness=True)
    factors = []
    for seed in range(20):
        bright = run(transform, case, seed)["image"]
        assert 0.0 <= bright.min() and bright.max() <= 1.0
        inside = (plain > 0.05) & (plain < 0.7)  # never clipped for factors <= 1.25
        ratio = bright[inside] / plain[inside]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-5)  # one factor per volume
        factor = float(ratio[0])
        factors.append(factor)
        assert torch.allclose(bright, (plain * factor).clamp(0, 1), atol=1e-5)
    assert 0.75 <= min(factors) and max(factors) <= 1.25 and max(factors) - min(factors) > 0.2


def test_smaller_volume_is_padded_symmetrically(tmp_path):
    image = np.random.default_rng(1).random((20, 24, 12)).astype(np.float32) + 1
    item = {
        "image": write(tmp_path / "i.nii.gz", image),
        "label": write(tmp_path / "l.nii.gz", np.ones((20, 24, 12), np.uint8)),
    }
    out = run(semi_supervised_train_transforms(PATCH, rotate_flip=False, brightness=False), item)
    assert out["image"].shape == (1, *PATCH)
    label = out["label"][0]
    assert int(label.sum()) == 20 * 24 * 12  # the whole volume inside, zero label in the padding
    nonzero = label.nonzero()
    assert nonzero.min(0).values.tolist() == [6, 4, 2] and nonzero.max(0).values.tolist() == [25, 27, 13]
    assert float(out["image"][0][label == 0].abs().max()) == 0.0  # zero padding of the image
    for seed in range(5):  # with rot/flip (axes 0 and 1 may swap) the output is still the patch
        out = run(semi_supervised_train_transforms(PATCH), item, seed)
        assert out["image"].shape == (1, *PATCH) and int(out["label"].sum()) == 20 * 24 * 12


def test_missing_label_is_filled_with_ignore_value_and_batches_collate(case):
    transform = semi_supervised_train_transforms(PATCH)
    unlabelled = {"image": case["image"], "case": "u"}
    out = run(transform, unlabelled)
    assert out["label"].shape == (1, *PATCH) and out["label"].dtype == torch.long
    assert (out["label"] == -1).all() and out["has_label"] is False
    loader = DataLoader(Dataset([case, unlabelled], transform), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, *PATCH) and batch["label"].shape == (2, 1, *PATCH)
    assert batch["has_label"].tolist() == [True, False]


def test_label_shape_mismatch_names_the_file(case, tmp_path):
    bad = write(tmp_path / "short_label.nii.gz", np.zeros((40, 40, 20), np.uint8))
    message = r"short_label\.nii\.gz: spatial shape \(40, 40, 20\) differs from the image's \(40, 40, 24\)"
    with raises_in_chain(ValueError, message):
        run(semi_supervised_train_transforms(PATCH), {**case, "label": bad})


@pytest.mark.parametrize("value, shown", [(3, r"\[3\.0\]"), (0.5, r"\[0\.5\]"), (-1, r"\[-1\.0\]")])
def test_label_values_out_of_range_name_the_file(case, tmp_path, value, shown):
    label = np.zeros((40, 40, 24), np.float32)
    label[0, 0, 0] = value
    bad = write(tmp_path / "odd_label.nii.gz", label)
    message = rf"odd_label\.nii\.gz: values {shown} are not class indices; declared classes are 0\.\.1"
    with raises_in_chain(ValueError, message):
        run(semi_supervised_train_transforms(PATCH), {**case, "label": bad})


def test_more_classes_are_accepted(case, tmp_path):
    label = np.zeros((40, 40, 24), np.uint8)
    label[:10], label[10:20] = 1, 3
    item = {**case, "label": write(tmp_path / "multi.nii.gz", label)}
    out = run(semi_supervised_train_transforms((40, 40, 24), num_classes=4, rotate_flip=False), item)
    assert set(out["label"].unique().tolist()) == {0, 1, 3}


def _position_coded(tmp_path: Path, shape=(12, 12, 6)) -> dict:
    """Image and label both hold the flat voxel index, so any geometric transform can be traced."""
    index = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return {"image": write(tmp_path / "pi.nii.gz", index), "label": write(tmp_path / "pl.nii.gz", index)}


def test_rot_flip_moves_label_with_image(tmp_path):
    item = _position_coded(tmp_path, (12, 10, 6))
    n = 12 * 10 * 6
    transform = semi_supervised_train_transforms((8, 8, 4), num_classes=n, brightness=False)
    for seed in range(12):
        out = run(transform, item, seed)
        image_index = torch.round(out["image"][0] * (n - 1)).long()  # min-max maps index i to i / (n - 1)
        torch.testing.assert_close(image_index, out["label"][0])


def _reflections(x: np.ndarray) -> list[np.ndarray]:
    return [np.flip(np.rot90(x, k, axes=(0, 1)), 0) for k in range(4)]


def test_rot_flip_distribution_equals_ua_mt_random_rot_flip(tmp_path):
    x = np.arange(4 * 4 * 2).reshape(4, 4, 2)
    # UA-MT: flip(rot90(x, k), axis), k in 0..3, axis in {0, 1}; axis 1 equals axis 0 after two more quarter turns
    for k in range(4):
        np.testing.assert_array_equal(np.flip(np.rot90(x, k), 1), np.flip(np.rot90(x, k + 2), 0))
    ua_mt = [np.flip(np.rot90(x, k), a) for k in range(4) for a in (0, 1)]
    candidates = _reflections(x)
    ua_mt_counts = [sum(np.array_equal(u, c) for u in ua_mt) for c in candidates]
    assert ua_mt_counts == [2, 2, 2, 2]  # UA-MT: the four reflections, each with probability 1/4

    item = _position_coded(tmp_path, (4, 4, 2))
    transform = semi_supervised_train_transforms((4, 4, 2), num_classes=32, brightness=False)
    counts = [0, 0, 0, 0]
    for seed in range(200):
        label = run(transform, item, seed)["label"][0].numpy()
        matches = [i for i, c in enumerate(candidates) if np.array_equal(label, c)]
        assert len(matches) == 1, "the output must be one of the four reflections (never a pure rotation)"
        counts[matches[0]] += 1
    assert min(counts) > 30, counts  # about 50 each


def test_multi_channel_list_of_files(tmp_path):
    rng = np.random.default_rng(2)
    arrays = [rng.normal(c * 10, c + 1, (40, 40, 24)).astype(np.float32) for c in range(2)]
    channels = [write(tmp_path / f"m_{c:04d}.nii.gz", a) for c, a in enumerate(arrays)]
    item = {"image": channels, "label": write(tmp_path / "m.nii.gz", np.zeros((40, 40, 24), np.uint8))}
    out = run(semi_supervised_train_transforms((40, 40, 24), rotate_flip=False, brightness=False), item)
    assert out["image"].shape == (2, 40, 40, 24) and out["label"].shape == (1, 40, 40, 24)
    for c in range(2):  # per-channel min-max
        assert out["image"][c].min() == 0.0 and out["image"][c].max() == 1.0
    source = nib.load(channels[1]).get_fdata()
    expected = (source - source.min()) / (source.max() - source.min())
    np.testing.assert_allclose(out["image"][1].numpy(), expected, atol=1e-5)


def test_multi_channel_4d_file(tmp_path):
    image = np.random.default_rng(3).random((40, 40, 24, 3)).astype(np.float32)
    item = {
        "image": write(tmp_path / "four_d.nii.gz", image),
        "label": write(tmp_path / "l.nii.gz", np.zeros((40, 40, 24), np.uint8)),
    }
    out = run(semi_supervised_train_transforms(PATCH), item)
    assert out["image"].shape == (3, *PATCH)


def test_evaluation_keeps_meta_and_whole_volume(case):
    out = evaluation_transforms()(dict(case))
    image, label = out["image"], out["label"]
    assert isinstance(image, MetaTensor) and isinstance(label, MetaTensor)
    assert image.shape == (1, 40, 40, 24) and label.shape == (1, 40, 40, 24) and label.dtype == torch.long
    np.testing.assert_allclose(image.affine.numpy(), np.diag([*SPACING, 1.0]))
    assert image.meta["filename_or_obj"] == case["image"]
    assert image.min() == 0.0 and image.max() == 1.0
    inference = evaluation_transforms(with_label=False)({"image": case["image"]})
    assert set(inference) == {"image"} and isinstance(inference["image"], MetaTensor)
    with raises_in_chain(KeyError, r"label key 'label' missing for image .*img\.nii\.gz"):
        evaluation_transforms()({"image": case["image"]})


def test_ensure_labeld_directly():
    image = MetaTensor(torch.rand(2, 5, 6, 7), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = EnsureLabeld(ignore_value=255)({"image": image})
    assert out["label"].shape == (1, 5, 6, 7) and (out["label"] == 255).all() and out["has_label"] is False
    torch.testing.assert_close(out["label"].affine, image.affine)
    good = torch.zeros(1, 5, 6, 7)
    assert EnsureLabeld()({"image": image, "label": good})["has_label"] is True
    with pytest.raises(ValueError, match=r"expected shape \(1, \*spatial\)"):
        EnsureLabeld()({"image": image, "label": torch.zeros(2, 5, 6, 7)})
    with pytest.raises(TypeError, match=r"run LoadImaged first"):
        EnsureLabeld()({"image": image, "label": "lab.nii.gz"})
    with pytest.raises(ValueError, match=r"ignore_value=1 is a valid class"):
        EnsureLabeld(ignore_value=1)


def test_real_la_case(la_dir):
    from crln_monai.data.datalist import semi_supervised_datalist

    item = semi_supervised_datalist(la_dir, num_labelled=8)["labelled"][0]
    out = run(semi_supervised_train_transforms((112, 112, 80)), item)
    assert out["image"].shape == (1, 112, 112, 80) and out["label"].shape == (1, 112, 112, 80)
    assert set(out["label"].unique().tolist()) <= {0, 1} and 0 <= out["image"].min() and out["image"].max() <= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch_size": (32, 32)}, r"patch_size must be 3 positive ints \(H, W, D\), got \(32, 32\)"),
        ({"patch_size": (32, 32.5, 16)}, r"patch_size must be 3 positive ints"),
        ({"foreground_share": 1.5}, r"foreground_share must be a number in \[0, 1\], got 1\.5"),
        ({"foreground_share": "half"}, r"foreground_share must be a number in \[0, 1\], got 'half'"),
        ({"orientation": "RAX"}, r"orientation must be null .* got 'RAX'"),
        ({"orientation": "RRS"}, r"orientation must be null .* got 'RRS'"),
        ({"target_spacing": [1.0, 1.0]}, r"target_spacing must be a list of 3 finite numbers, got \[1\.0, 1\.0\]"),
        ({"target_spacing": [1.0, 0.0, 1.0]}, r"target_spacing must be 3 positive spacings in mm"),
        ({"normalise": "z-score"}, r"normalise must be one of \['minmax', 'zscore', 'ct', 'none'\], got 'z-score'"),
        ({"normalise": "ct"}, r"normalise='ct' needs intensity_range \[lo, hi\] and intensity_stats \[mean, std\]"),
        (
            {"normalise": "ct", "intensity_range": [200, -100], "intensity_stats": [0, 1]},
            r"intensity_range must be \[lo, hi\] with lo < hi, got \[200\.0, -100\.0\]",
        ),
        (
            {"normalise": "ct", "intensity_range": [-100, 200], "intensity_stats": [0, 0]},
            r"intensity_stats must be \[mean, std\] with std > 0",
        ),
        (
            {"normalise": "ct", "intensity_range": "wide", "intensity_stats": [0, 1]},
            r"intensity_range must be a list of 2 finite numbers, got 'wide'",
        ),
        ({"intensity_range": [0, 1]}, r"intensity_range is only used by normalise='ct' .* normalise='minmax'"),
        ({"normalise": "zscore", "intensity_stats": [0, 1]}, r"intensity_stats is only used by normalise='ct'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    kwargs = {"patch_size": PATCH, **kwargs}
    with pytest.raises(ValueError, match=message):
        semi_supervised_train_transforms(**kwargs)
    kwargs.pop("patch_size")
    if "foreground_share" not in kwargs and kwargs:
        with pytest.raises(ValueError, match=message):
            evaluation_transforms(**kwargs)


# --------------------------------------------------------------------------- preprocessing settings (issue 9, 10)


def write_affine(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


def _flipped_xy(array: np.ndarray, spacing=SPACING) -> tuple[np.ndarray, np.ndarray]:
    """The same volume stored with negated x and y steps (DICOM-like voxel order): voxel (i, j, k) of the result is
    voxel (H-1-i, W-1-j, k) of ``array`` and the affine maps both to the same world point."""
    h, w = array.shape[:2]
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:2, 3] = [(h - 1) * spacing[0], (w - 1) * spacing[1]]
    return np.ascontiguousarray(array[::-1, ::-1]), affine


def test_unlabelled_padded_volume_keeps_no_label_everywhere(tmp_path):
    """Issue 9's example: an 11-slice unlabelled image, patch [64, 64, 16], 4 classes gave labels {-1, 0}."""
    image = np.random.default_rng(4).random((40, 40, 11)).astype(np.float32)
    item = {"image": write_affine(tmp_path / "u.nii.gz", image, np.diag([1.5, 1.5, 10.0, 1.0])), "case": "u"}
    for kwargs in ({}, {"foreground_share": 1.0}, {"target_spacing": [2.0, 2.0, 8.0]}):
        transform = semi_supervised_train_transforms([64, 64, 16], 4, **kwargs)
        for seed in range(4):
            out = run(transform, item, seed)
            assert out["label"].shape == (1, 64, 64, 16) and out["has_label"] is False
            assert out["label"].unique().tolist() == [-1], kwargs
    # a labelled case is padded with background: 0 outside the volume
    ones = np.ones((40, 40, 11), np.uint8)
    labelled = {**item, "label": write_affine(tmp_path / "l.nii.gz", ones, np.diag([1.5, 1.5, 10.0, 1.0]))}
    out = run(semi_supervised_train_transforms([64, 64, 16], 4), labelled)
    assert out["label"].unique().tolist() == [0, 1] and int(out["label"].sum()) == 40 * 40 * 11


def _normalised(tmp_path: Path, array: np.ndarray, **settings) -> np.ndarray:
    path = write(tmp_path / "n.nii.gz", array)
    out = evaluation_transforms(with_label=False, **settings)({"image": path})["image"]
    train = run(semi_supervised_train_transforms(array.shape[:3], rotate_flip=False, brightness=False, **settings),
                {"image": path})["image"]  # fmt: skip
    torch.testing.assert_close(train, out.as_tensor())  # one definition for training and evaluation
    return out.numpy()


def test_zscore_over_nonzero_voxels_per_channel(tmp_path):
    array = np.zeros((4, 4, 2, 2), np.float32)
    array[0, 0, 0, 0], array[1, 0, 0, 0], array[2, 0, 0, 0], array[3, 0, 0, 0] = 1, 2, 3, 6  # mean 3, std √3.5
    array[..., 1] = 5.0
    array[0, 0, 0, 1] = 7.0  # channel 1: 31 fives and a seven: mean 5 + 2/32, std = 2·√31/32
    out = _normalised(tmp_path, array, normalise="zscore")
    expected0 = np.zeros((4, 4, 2), np.float32)
    expected0[:, 0, 0] = (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5)
    np.testing.assert_allclose(out[0], expected0, atol=1e-5)  # zeros stay 0, outside the mask
    mean, std = 5 + 2 / 32, 2 * np.sqrt(31) / 32
    expected1 = np.full((4, 4, 2), (5 - mean) / std, np.float32)
    expected1[0, 0, 0] = (7 - mean) / std
    np.testing.assert_allclose(out[1], expected1, atol=1e-5)


def test_ct_clips_then_uses_the_data_set_statistics(tmp_path):
    array = np.array([-500, -100, 0, 100, 200, 300, 50, 75], np.float32).reshape(2, 2, 2)
    out = _normalised(tmp_path, array, normalise="ct", intensity_range=[-100, 200], intensity_stats=[50, 25])
    expected = np.array([-6, -6, -2, 2, 6, 6, 0, 1], np.float32).reshape(2, 2, 2)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_minmax_and_none(tmp_path):
    array = np.array([2, 4, 6, 10, 2, 2, 2, 2], np.float32).reshape(2, 2, 2)
    np.testing.assert_allclose(_normalised(tmp_path, array)[0], (array - 2) / 8, atol=1e-7)
    np.testing.assert_array_equal(_normalised(tmp_path, array, normalise="none")[0], array)
    np.testing.assert_array_equal(_normalised(tmp_path, array, normalise=None)[0], array)


def test_brightness_clips_only_for_minmax(tmp_path):
    array = np.random.default_rng(5).normal(size=(24, 24, 12)).astype(np.float32)
    item = {"image": write(tmp_path / "b.nii.gz", array)}
    settings = {"normalise": "ct", "intensity_range": [-10, 10], "intensity_stats": [0.0, 0.5]}
    plain = run(semi_supervised_train_transforms(array.shape, rotate_flip=False, brightness=False, **settings), item)
    bright = run(semi_supervised_train_transforms(array.shape, rotate_flip=False, **settings), item)
    factor = float(bright["image"].flatten()[0] / plain["image"].flatten()[0])
    assert 0.75 <= factor <= 1.25 and float(bright["image"].min()) < -1.0  # far outside [0, 1]: no clip
    torch.testing.assert_close(bright["image"], plain["image"] * factor, atol=1e-5, rtol=1e-5)


def test_non_ras_input_gives_the_ras_voxels(tmp_path, case):
    image = nib.load(case["image"]).get_fdata().astype(np.float32)
    label = nib.load(case["label"]).get_fdata().astype(np.uint8)
    (flipped_image, affine), (flipped_label, _) = _flipped_xy(image), _flipped_xy(label)
    assert not np.array_equal(flipped_image, image)
    other = {
        "image": write_affine(tmp_path / "las_i.nii.gz", flipped_image, affine),
        "label": write_affine(tmp_path / "las_l.nii.gz", flipped_label, affine),
    }
    ras, las = evaluation_transforms()(dict(case)), evaluation_transforms()(other)
    for key in ("image", "label"):
        torch.testing.assert_close(las[key].as_tensor(), ras[key].as_tensor())
        np.testing.assert_allclose(las[key].affine.numpy(), ras[key].affine.numpy(), atol=1e-6)
    transform = semi_supervised_train_transforms(PATCH)  # training sees the same patches
    for seed in range(3):
        a, b = run(transform, case, seed), run(transform, other, seed)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    kept = evaluation_transforms(orientation=None)(other)  # null keeps the stored voxel order
    np.testing.assert_array_equal(kept["label"][0].numpy(), flipped_label)


def test_resampling_to_a_target_spacing(case):
    # 40 × 0.625 mm = 25 mm → 25 voxels of 1 mm; 24 × 1.25 mm = 30 mm → 15 voxels of 2 mm
    out = evaluation_transforms(target_spacing=[1.0, 1.0, 2.0])(dict(case))
    assert out["image"].shape == (1, 25, 25, 15) and out["label"].shape == (1, 25, 25, 15)
    assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.long
    np.testing.assert_allclose(out["image"].pixdim.numpy(), [1.0, 1.0, 2.0], atol=1e-6)
    assert out["label"].unique().tolist() == [0, 1]  # nearest: no interpolated label values
    # the cube 10:30 × 12:28 × 6:18 at (0.625, 0.625, 1.25) mm is 12.5 × 10 × 15 mm: 12.5 × 10 × 7.5 new voxels
    assert abs(int(out["label"].sum()) - 937.5) < 0.15 * 937.5
    assert out["image"].min() == 0.0 and out["image"].max() == 1.0  # normalised after resampling
    train = run(semi_supervised_train_transforms((16, 16, 8), target_spacing=[1.0, 1.0, 2.0]), case)
    assert train["image"].shape == (1, 16, 16, 8)


def _cached(transform, item: dict):
    """Split ``transform`` as a ``CacheDataset`` does: run the deterministic head once, return (data, random tail)."""
    from monai.transforms import Compose, Randomizable

    first = next(i for i, t in enumerate(transform.transforms) if isinstance(t, Randomizable))
    return Compose(transform.transforms[:first])(dict(item)), Compose(transform.transforms[first:])


def _small_objects(tmp_path: Path, classes=(1,), shape=(64, 64, 32)) -> dict:
    """A volume with one 4×4×4 cube per class, far apart (a 16×16×8 patch holds at most one)."""
    label = np.zeros(shape, np.uint8)
    corners = [(4, 4, 4), (44, 44, 20), (4, 44, 20)]
    for c, (x, y, z) in zip(classes, corners):
        label[x : x + 4, y : y + 4, z : z + 4] = c
    image = np.random.default_rng(6).random(shape).astype(np.float32)
    return {"image": write(tmp_path / "si.nii.gz", image), "label": write(tmp_path / "sl.nii.gz", label), "case": "s"}


def test_foreground_share_one_centres_every_labelled_crop_on_each_present_class(tmp_path):
    item = _small_objects(tmp_path, classes=(1, 3))  # class 2 absent
    data, transform = _cached(semi_supervised_train_transforms((16, 16, 8), num_classes=4, foreground_share=1.0), item)
    seen = {1: 0, 3: 0}
    for seed in range(40):
        present = set(run(transform, data, seed)["label"].unique().tolist()) - {0}
        assert len(present) == 1, present  # always one cube (never an empty background patch)
        seen[present.pop()] += 1
    assert min(seen.values()) >= 10, seen  # classes drawn uniformly among those present (20 each expected)
    data, uniform = _cached(semi_supervised_train_transforms((16, 16, 8), num_classes=4), item)
    empty = sum(run(uniform, data, seed)["label"].max() == 0 for seed in range(40))
    assert empty > 20  # uniform crops mostly miss the cubes


def test_foreground_share_half_and_determinism(tmp_path):
    item = _small_objects(tmp_path)
    transform = semi_supervised_train_transforms((16, 16, 8), foreground_share=0.5)
    data, tail = _cached(transform, item)
    hits = [int(run(tail, data, seed)["label"].max()) for seed in range(60)]
    assert 15 <= sum(hits) <= 50  # about 30 centred + a few uniform hits
    again = semi_supervised_train_transforms((16, 16, 8), foreground_share=0.5)
    for seed in (0, 7):
        a, b = run(transform, item, seed), run(again, item, seed)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_foreground_share_zero_reproduces_the_uniform_crops(tmp_path, case):
    from monai.transforms import (
        CastToTyped, Compose, EnsureChannelFirstd, EnsureTyped, Flipd, LoadImaged, RandRotate90d, RandScaleIntensityd,
        RandSpatialCropd, ScaleIntensityd, ScaleIntensityRanged, SpatialPadd,
    )  # fmt: skip

    keys = ["image", "label"]
    before = Compose([  # the pipeline before foreground_share, orientation and PadLabeld (RAS input: no reorientation)
        LoadImaged(keys, image_only=True, allow_missing_keys=True), EnsureChannelFirstd(keys, allow_missing_keys=True),
        EnsureLabeld("label"), ScaleIntensityd("image", minv=0.0, maxv=1.0, channel_wise=True),
        Flipd(keys, spatial_axis=0), RandRotate90d(keys, prob=1.0, max_k=4, spatial_axes=(0, 1)),
        RandScaleIntensityd("image", factors=0.25, prob=1.0),
        ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        SpatialPadd(keys, spatial_size=PATCH, method="symmetric", mode="constant"),
        RandSpatialCropd(keys, roi_size=PATCH, random_center=True, random_size=False),
        CastToTyped("label", dtype=torch.long), EnsureTyped(keys, track_meta=False),
    ])  # fmt: skip
    now = semi_supervised_train_transforms(PATCH, foreground_share=0.0)
    for seed in range(5):
        a, b = run(before, case, seed), run(now, case, seed)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_unlabelled_crops_never_use_the_label():
    from crln_monai.data.transforms import LabelledCropd

    label = torch.zeros(1, 64, 64, 32)
    label[:, 4:8, 4:8, 4:8] = 1  # what a label would attract crops to
    crop = LabelledCropd(["image", "label"], (16, 16, 8), num_classes=2, foreground_share=1.0)
    hits = {True: 0, False: 0}
    for has_label in (True, False):
        for seed in range(30):
            crop.set_random_state(seed)
            out = crop({"image": torch.rand(1, 64, 64, 32), "label": label.clone(), "has_label": has_label})
            assert out["label"].shape == (1, 16, 16, 8)
            hits[has_label] += int(out["label"].max())
    assert hits[True] == 30 and hits[False] < 10  # unlabelled: uniform crops (about 1 in 20 hits by chance)
    crop.set_random_state(0)  # a labelled case without foreground falls back to a uniform crop
    assert crop({"image": torch.rand(1, 64, 64, 32), "label": torch.zeros(1, 64, 64, 32), "has_label": True})[
        "label"
    ].shape == (1, 16, 16, 8)


@pytest.mark.parametrize("bad, shown", [(np.nan, r"1 NaN and 0 Inf"), (np.inf, r"0 NaN and 1 Inf")])
def test_non_finite_image_refused_naming_the_file(tmp_path, case, bad, shown):
    from monai.data import CacheDataset

    image = nib.load(case["image"]).get_fdata().astype(np.float32)
    image[3, 4, 5] = bad
    item = {**case, "image": write(tmp_path / "broken_image.nii.gz", image)}
    message = rf"image .*broken_image\.nii\.gz: {shown} voxels of 38400; expected finite values"
    with raises_in_chain(ValueError, message):  # training refuses it while caching
        CacheDataset([item], semi_supervised_train_transforms(PATCH), num_workers=0, progress=False)
    with raises_in_chain(ValueError, message):
        evaluation_transforms()(dict(item))
    with raises_in_chain(ValueError, message):
        evaluation_transforms(with_label=False)({"image": item["image"]})


@pytest.mark.parametrize("target_spacing", [None, [1.0, 1.0, 2.0]])
def test_inference_pipeline_and_invertd_restore_the_input_grid(tmp_path, target_spacing):
    from monai.transforms import Invertd

    array = np.random.default_rng(7).random((30, 26, 12)).astype(np.float32)
    flipped, affine = _flipped_xy(array, spacing=(0.8, 0.7, 2.5))
    affine[:3, 3] += [10.0, -20.0, 5.0]
    path = write_affine(tmp_path / "las.nii.gz", flipped, affine)
    preprocessing = evaluation_transforms(with_label=False, target_spacing=target_spacing)
    data = preprocessing({"image": path})
    assert data["image"].affine[0, 0] > 0 and data["image"].affine[1, 1] > 0  # RAS inside
    pred = MetaTensor(torch.cat([1 - data["image"].as_tensor(), data["image"].as_tensor()]))  # 2-class "probabilities"
    out = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False)({**data, "pred": pred})
    assert out["pred"].shape == (2, 30, 26, 12)
    np.testing.assert_allclose(out["pred"].affine.numpy(), affine, atol=1e-5)
    if target_spacing is None:  # orientation only: the exact voxels of the input, min-max normalised
        expected = (flipped - flipped.min()) / (flipped.max() - flipped.min())
        np.testing.assert_allclose(out["pred"][1].numpy(), expected, atol=1e-6)
