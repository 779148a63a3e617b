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


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"patch_size must be 3 positive ints"):
        semi_supervised_train_transforms((32, 32))
    with pytest.raises(ValueError, match=r"normalise must be one of"):
        semi_supervised_train_transforms(PATCH, normalise="zscore")
