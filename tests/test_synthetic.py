"""Tests of crln_monai.data.synthetic: determinism, idempotence, geometry, LA-like statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from crln_monai.data.synthetic import make_synthetic_dataset, synthetic_case

SMALL = dict(num_cases=6, num_test=2, shape=(40, 40, 24))


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    a = files_of(make_synthetic_dataset(tmp_path / "a", **SMALL))
    b = files_of(make_synthetic_dataset(tmp_path / "b", **SMALL))
    assert a == b
    assert len([f for f in a if f.startswith("imagesTr")]) == 6 and "dataset.json" in a
    c = files_of(make_synthetic_dataset(tmp_path / "c", seed=1, **SMALL))
    assert c["imagesTr/case_000.nii.gz"] != a["imagesTr/case_000.nii.gz"]
    image, label = synthetic_case(np.random.default_rng([0, 3]), (40, 40, 24))
    written = nib.load(tmp_path / "a" / "imagesTr" / "case_003.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(written, image[0])
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "a" / "labelsTr" / "case_003.nii.gz").dataobj), label)


def test_second_call_does_not_rewrite_but_new_parameters_do(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert make_synthetic_dataset(tmp_path / "d", **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    (root / "imagesTr" / "case_001.nii.gz").unlink()  # an incomplete set is rewritten
    make_synthetic_dataset(tmp_path / "d", **SMALL)
    assert (root / "imagesTr" / "case_001.nii.gz").is_file()
    make_synthetic_dataset(tmp_path / "d", with_unlabelled_labels=False, **SMALL)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["synthetic"]["with_unlabelled_labels"] is False
    assert not (root / "labelsTr" / "case_002.nii.gz").exists()  # stale label files of the old set are gone


def test_refuses_to_overwrite_a_foreign_dataset(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "real data", "training": []}))
    with pytest.raises(ValueError, match=r"was not written by make_synthetic_dataset"):
        make_synthetic_dataset(tmp_path, **SMALL)


def test_dataset_json_and_geometry(tmp_path):
    spacing = (0.625, 0.7, 1.5)
    root = make_synthetic_dataset(tmp_path, spacing=spacing, **SMALL)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["train_ids"] == [f"case_00{i}" for i in range(4)] and meta["test_ids"] == ["case_004", "case_005"]
    assert meta["numTraining"] == 6 and len(meta["training"]) == 6
    assert meta["labels"] == {"0": "background", "1": "foreground"} and meta["modality"] == {"0": "MRI"}
    assert meta["training"][0] == {"image": "./imagesTr/case_000.nii.gz", "label": "./labelsTr/case_000.nii.gz"}
    image = nib.load(root / "imagesTr" / "case_000.nii.gz")
    label = nib.load(root / "labelsTr" / "case_000.nii.gz")
    for img in (image, label):
        np.testing.assert_allclose(img.affine, np.diag([*spacing, 1.0]), atol=1e-6)
        assert img.header.get_zooms() == pytest.approx(spacing)
        assert img.shape == (40, 40, 24)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8


def test_foreground_share_is_la_like_and_image_is_not_trivial(tmp_path):
    root = make_synthetic_dataset(tmp_path, num_cases=8, num_test=2, shape=(64, 64, 32))
    shares = []
    for i in range(8):
        image = nib.load(root / "imagesTr" / f"case_00{i}.nii.gz").get_fdata()
        label = np.asarray(nib.load(root / "labelsTr" / f"case_00{i}.nii.gz").dataobj)
        assert set(np.unique(label)) == {0, 1}
        shares.append(label.mean())
        assert abs(image.mean()) < 1e-3 and abs(image.std() - 1) < 1e-3  # z-scored
        foreground, background = image[label == 1], image[label == 0]
        assert foreground.mean() - background.mean() > 0.8  # learnable: the object is brighter
        # not trivial: even the best global threshold misclassifies a good part of the object
        best_dice = max(
            2 * (foreground > t).sum() / ((image > t).sum() + foreground.size) for t in np.linspace(-1, 3, 41)
        )
        assert best_dice < 0.95
    assert 0.055 < min(shares) and max(shares) < 0.125 and 0.07 < np.mean(shares) < 0.11


def test_truly_unlabelled_cases_have_no_label_files(tmp_path):
    root = make_synthetic_dataset(tmp_path, num_cases=11, num_test=3, shape=(16, 16, 8), with_unlabelled_labels=False)
    meta = json.loads((root / "dataset.json").read_text())
    labelled_train = math.ceil(0.25 * 8)
    labels = sorted(p.name for p in (root / "labelsTr").iterdir())
    expected = [f"case_{i:03d}.nii.gz" for i in [*range(labelled_train), 8, 9, 10]]
    assert labels == expected
    assert [("label" in e) for e in meta["training"]] == [True] * 2 + [False] * 6 + [True] * 3


def test_more_classes_are_nested_cores(tmp_path):
    image, label = synthetic_case(np.random.default_rng(5), (48, 48, 32), num_classes=3)
    counts = np.bincount(label.ravel(), minlength=3)
    assert counts[1] > counts[2] > 0
    core = label == 2
    assert core[1:-1, 1:-1, 1:-1].sum() == core.sum()  # away from the border
    # every core voxel's 6 neighbours are object voxels: the core is nested inside the object
    shifted = [np.roll(core, s, axis=a) for a in range(3) for s in (-1, 1)]
    assert all((label[c] > 0).all() for c in shifted)
    assert image[0][core].mean() > image[0][label == 1].mean()


def test_multi_channel_files(tmp_path):
    root = make_synthetic_dataset(tmp_path / "dec", num_channels=2, **SMALL)
    image = nib.load(root / "imagesTr" / "case_000.nii.gz")
    assert image.shape == (40, 40, 24, 2)
    data = image.get_fdata()
    correlation = np.corrcoef(data[..., 0].ravel(), data[..., 1].ravel())[0, 1]
    assert 0.3 < correlation < 0.999  # related but not identical channels
    assert json.loads((root / "dataset.json").read_text())["modality"] == {"0": "MRI-0", "1": "MRI-1"}
    nn = make_synthetic_dataset(tmp_path / "nn", num_channels=2, layout="nnunet", **SMALL)
    assert sorted(p.name for p in (nn / "imagesTr").iterdir())[:2] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
    test_files = sorted(p.name for p in (nn / "imagesTs").iterdir())
    assert test_files == [f"case_00{i}_000{c}.nii.gz" for i in (4, 5) for c in (0, 1)]
    meta = json.loads((nn / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRI-0", "1": "MRI-1"} and meta["file_ending"] == ".nii.gz"
    assert meta["numTraining"] == 4
    np.testing.assert_array_equal(nib.load(nn / "imagesTr" / "case_000_0001.nii.gz").get_fdata(), data[..., 1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_cases=3, num_test=2), r"num_cases - num_test >= 2"),
        (dict(shape=(40, 40)), r"shape must be 3 ints"),
        (dict(spacing=(1.0, 0.0, 1.0)), r"spacing must be 3 positive"),
        (dict(num_classes=1), r"num_classes >= 2"),
        (dict(layout="msd"), r"layout must be one of"),
    ],
)
def test_argument_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_dataset(tmp_path, **{**SMALL, **kwargs})


def test_object_scale_shrinks_the_structures_and_keeps_default_sets_unchanged(tmp_path):
    import json

    import numpy as np

    from crln_monai.data.synthetic import make_synthetic_dataset, synthetic_case

    full = synthetic_case(np.random.default_rng([0, 1]), (48, 48, 32), 1, 4)[1]
    small = synthetic_case(np.random.default_rng([0, 1]), (48, 48, 32), 1, 4, object_scale=0.5)[1]
    for k in (1, 2, 3):  # each class's share of the volume shrinks with the cube of the scale
        assert (small >= k).mean() == pytest.approx((full >= k).mean() / 8, rel=0.05)
    assert set(np.unique(small)) == {0, 1, 2, 3}
    default = json.loads((make_synthetic_dataset(tmp_path / "a", 4, 1, (16, 16, 8)) / "dataset.json").read_text())
    assert "object_scale" not in default["synthetic"]
    with pytest.raises(ValueError, match="object_scale"):
        make_synthetic_dataset(tmp_path / "b", 4, 1, (16, 16, 8), object_scale=0)
