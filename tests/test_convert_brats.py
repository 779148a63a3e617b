"""BraTS 2019 converter: brain crop, top-0.1 % clip, non-zero z-score, label merging / nesting, split, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from crln_monai.data import semi_supervised_datalist
from crln_monai.data.convert import (
    BRATS19_TEST,
    BRATS19_TRAIN,
    BRATS19_VAL,
    BRATS_MODALITIES,
    prepare_brats19,
    read_case_list,
)

SHARED_SPLITS = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits" / "brats19"
SHAPE = (12, 10, 8)
BRAIN = (slice(2, 10), slice(1, 8), slice(2, 7))  # non-zero box of the FLAIR image
AFFINE = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 120], [0, 0, 1.0, -70], [0, 0, 0, 1]])
SPLIT = {"train": ["BraTS19_A_1", "BraTS19_B_1", "BraTS19_C_1"], "val": ["BraTS19_D_1"], "test": ["BraTS19_E_1"]}


def _case_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, modality in enumerate(BRATS_MODALITIES):
        volume = np.zeros(SHAPE, np.float32)
        volume[BRAIN] = rng.integers(50, 400, size=tuple(s.stop - s.start for s in BRAIN))
        arrays[modality] = volume
    arrays["flair"][5, 4, 4] = 5000.0  # an outlier above the 99.9th percentile
    arrays["t1"][1, 1, 1] = 10.0  # T1 reaches outside the FLAIR box (union box in multimodal mode)
    seg = np.zeros(SHAPE, np.int16)
    seg[4, 3, 3], seg[5, 3, 3], seg[6, 3, 3] = 1, 2, 4
    arrays["seg"] = seg
    return arrays


def _source(tmp_path: Path) -> tuple[Path, Path, dict]:
    source, split_dir, all_arrays = tmp_path / "MICCAI_BraTS_2019", tmp_path / "split", {}
    for n, case in enumerate([c for ids in SPLIT.values() for c in ids]):
        folder = source / ("HGG" if n % 2 else "LGG") / case
        folder.mkdir(parents=True)
        arrays = _case_arrays(n)
        for name, volume in arrays.items():
            nib.save(nib.Nifti1Image(volume, AFFINE), folder / f"{case}_{name}.nii.gz")
        all_arrays[case] = arrays
    split_dir.mkdir()
    for name, ids in SPLIT.items():
        (split_dir / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return source, split_dir, all_arrays


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def _expected_channel(volume: np.ndarray, box) -> np.ndarray:
    cropped = volume[box].astype(np.float64)
    cropped = np.minimum(cropped, np.percentile(cropped, 99.9))
    positive = cropped[cropped > 0]
    return (cropped - positive.mean()) / positive.std()


def test_flair_whole_tumour_default(tmp_path, capsys):
    source, split_dir, arrays = _source(tmp_path)
    out = prepare_brats19(source, tmp_path / "out", split_dir=split_dir, num_labelled=1, progress=False)
    assert "5 case(s) written, 0 skipped" in capsys.readouterr().out
    for case, case_arrays in arrays.items():
        img, lab = nib.load(out / "imagesTr" / f"{case}.nii.gz"), nib.load(out / "labelsTr" / f"{case}.nii.gz")
        assert img.shape == lab.shape == (8, 7, 5)  # the FLAIR brain box, last row included
        expected_affine = AFFINE.copy()
        expected_affine[:3, 3] = [90 - 2, 120 - 1, -70 + 2]  # origin moved to the box start (axes -x, -y, +z)
        np.testing.assert_allclose(img.affine, expected_affine, atol=1e-5)
        np.testing.assert_allclose(lab.affine, expected_affine, atol=1e-5)
        image = img.get_fdata()
        np.testing.assert_allclose(image, _expected_channel(case_arrays["flair"], BRAIN), atol=1e-4)
        # the outlier (5000 at (5, 4, 4) → box (3, 3, 2)) is clipped to the 99.9th percentile: the brightest
        # output voxel, below its unclipped z-score
        cropped = case_arrays["flair"][BRAIN].astype(np.float64)
        unclipped = (cropped - cropped[cropped > 0].mean()) / cropped[cropped > 0].std()
        assert image[3, 3, 2] == image.max() and image[3, 3, 2] < unclipped[3, 3, 2] - 0.1
        label = np.asanyarray(lab.dataobj)
        assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
        assert label[2, 2, 1] == label[3, 2, 1] == label[4, 2, 1] == 1 and label.sum() == 3  # labels 1, 2, 4 → 1
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["train_ids"] == SPLIT["train"] and meta["val_ids"] == SPLIT["val"]
    assert meta["test_ids"] == SPLIT["test"] and meta["numTraining"] == 5
    assert meta["modality"] == {"0": "FLAIR"} and meta["labels"] == {"0": "background", "1": "whole_tumour"}
    assert meta["protocol"]["33.3333%"]["labelled_ids"] == ["BraTS19_A_1"]
    split = semi_supervised_datalist(out, num_labelled=1)
    assert [i["case"] for i in split["labelled"]] == ["BraTS19_A_1"]
    assert [i["case"] for i in split["unlabelled"]] == ["BraTS19_B_1", "BraTS19_C_1"]
    assert [i["case"] for i in split["validation"]] == ["BraTS19_D_1"]
    assert [i["case"] for i in split["test"]] == ["BraTS19_E_1"]
    # rerun: nothing changes
    before = _snapshot(out)
    prepare_brats19(source, out, split_dir=split_dir, num_labelled=1, progress=False)
    assert "0 case(s) written, 5 skipped" in capsys.readouterr().out
    assert _snapshot(out) == before


def test_multimodal_channels_and_nested_labels_load_in_monai(tmp_path):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    source, split_dir, arrays = _source(tmp_path)
    out = prepare_brats19(source, tmp_path / "out", split_dir=split_dir, multimodal=True, num_labelled=1,
                          progress=False)
    case = "BraTS19_B_1"
    union = (slice(1, 10), slice(1, 8), slice(1, 7))  # FLAIR box grown by the T1 voxel at (1, 1, 1)
    img = nib.load(out / "imagesTr" / f"{case}.nii.gz")
    assert img.shape == (9, 7, 6, 4)
    for c, modality in enumerate(BRATS_MODALITIES):
        np.testing.assert_allclose(img.get_fdata()[..., c], _expected_channel(arrays[case][modality], union),
                                   atol=1e-4)
    label = np.asanyarray(nib.load(out / "labelsTr" / f"{case}.nii.gz").dataobj)
    assert (label[3, 2, 2], label[4, 2, 2], label[5, 2, 2]) == (2, 1, 3)  # BraTS 1 → 2, 2 → 1, 4 → 3
    assert label.sum() == 6
    loaded = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])(
        {"image": str(out / "imagesTr" / f"{case}.nii.gz"), "label": str(out / "labelsTr" / f"{case}.nii.gz")}
    )
    assert tuple(loaded["image"].shape) == (4, 9, 7, 6) and tuple(loaded["label"].shape) == (1, 9, 7, 6)
    np.testing.assert_allclose(loaded["image"][1].numpy(), img.get_fdata()[..., 1], atol=1e-6)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert meta["label_regions"]["tumour_core"] == "label >= 2"
    split = semi_supervised_datalist(out, num_labelled=1)
    assert len(split["labelled"]) == 1 and len(split["test"]) == 1
    # switching settings on the same folder is refused
    with pytest.raises(ValueError, match="other settings"):
        prepare_brats19(source, out, split_dir=split_dir, num_labelled=1, progress=False)


def test_missing_modality_names_case_and_modality_and_keeps_files(tmp_path):
    source, split_dir, _ = _source(tmp_path)
    out = tmp_path / "out"
    prepare_brats19(source, out, split_dir=split_dir, multimodal=True, num_labelled=1, progress=False)
    before = _snapshot(out)
    next(source.rglob("BraTS19_C_1_t1ce.nii.gz")).unlink()
    with pytest.raises(FileNotFoundError, match=r"'BraTS19_C_1'.*'t1ce'"):
        prepare_brats19(source, out, split_dir=split_dir, multimodal=True, num_labelled=1, progress=False)
    assert _snapshot(out) == before
    next(source.rglob("BraTS19_A_1_flair.nii.gz")).unlink()
    with pytest.raises(FileNotFoundError, match=r"'BraTS19_A_1'.*'flair'"):
        prepare_brats19(source, tmp_path / "out2", split_dir=split_dir, num_labelled=1, progress=False)


def test_geometry_and_label_errors_leave_no_half_data_set(tmp_path):
    source, split_dir, _ = _source(tmp_path)
    seg = next(source.rglob("BraTS19_C_1_seg.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 7), np.int16), AFFINE), seg)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"'BraTS19_C_1'.*segmentation.*differs from the FLAIR"):
        prepare_brats19(source, out, split_dir=split_dir, num_labelled=1, progress=False)
    assert not out.exists()  # BraTS19_A_1 and _B_1 were converted before _C_1 failed: nothing is left
    shifted = AFFINE.copy()
    shifted[0, 3] += 3
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), shifted), next(source.rglob("BraTS19_C_1_t2.nii.gz")))
    with pytest.raises(ValueError, match=r"'BraTS19_C_1'.*modality 't2'.*differs"):
        prepare_brats19(source, tmp_path / "o2", split_dir=split_dir, multimodal=True, num_labelled=1, progress=False)
    bad = np.zeros(SHAPE, np.int16)
    bad[5, 5, 5] = 3
    nib.save(nib.Nifti1Image(bad, AFFINE), seg)
    nib.save(nib.Nifti1Image(_case_arrays(2)["t2"], AFFINE), next(source.rglob("BraTS19_C_1_t2.nii.gz")))
    with pytest.raises(ValueError, match=r"'BraTS19_C_1'.*labels \[3\]"):
        prepare_brats19(source, tmp_path / "o3", split_dir=split_dir, multimodal=True, num_labelled=1, progress=False)


def test_split_errors(tmp_path):
    source, split_dir, _ = _source(tmp_path)
    (split_dir / "test.txt").write_text("BraTS19_E_1\nBraTS19_Z_1\n")
    with pytest.raises(FileNotFoundError, match="BraTS19_Z_1"):
        prepare_brats19(source, tmp_path / "out", split_dir=split_dir, num_labelled=1, progress=False)
    (split_dir / "test.txt").write_text("BraTS19_A_1\n")
    with pytest.raises(ValueError, match="more than one of train/val/test"):
        prepare_brats19(source, tmp_path / "out", split_dir=split_dir, num_labelled=1, progress=False)
    assert not (tmp_path / "out" / "imagesTr").exists()


def test_builtin_split_equals_the_shared_split():
    if not SHARED_SPLITS.is_dir():
        pytest.skip(f"shared split lists not found at {SHARED_SPLITS}")
    assert read_case_list(SHARED_SPLITS / "train.txt") == list(BRATS19_TRAIN)
    assert read_case_list(SHARED_SPLITS / "val.txt") == list(BRATS19_VAL)
    assert read_case_list(SHARED_SPLITS / "test.txt") == list(BRATS19_TEST)
    assert (len(BRATS19_TRAIN), len(BRATS19_VAL), len(BRATS19_TEST)) == (250, 25, 60)
