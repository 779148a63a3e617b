"""A user's own data, end to end: plan → train with bundles/custom → export → infer with no override → report.

The data set is made here as a user would bring it: 4 classes (RV, MYO, LV), 2 channels, 10–14 slices of 8 mm at
1.5 mm in-plane, the unlabelled images in their own folder with no label files, listed in a json that is not
called ``dataset.json``.
"""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigWorkflow

from crln_monai.data.synthetic import synthetic_case
from crln_monai.plan.__main__ import main as plan_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "custom" / "configs"
CLASSES = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
SPACING = (1.5, 1.5, 8.0)
SPEED = {
    "num_prototypes": 2, "num_queries": 8, "num_negatives": 16, "num_workers": 0, "log_interval": 1,
    "max_epochs": 1, "epoch_length": 2, "device": "$torch.device('cpu')",
}  # fmt: skip


def _write(array: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), str(path))
    return str(path.relative_to(path.parents[1]))


def make_cardiac_like_set(root: Path) -> Path:
    """5 labelled train, 4 unlabelled (no label files, ``unlabelled/``) and 2 test cases; ``dataset_unlabelled.json``."""
    training, train_ids, test_ids = [], [], []
    for i in range(11):
        image, label = synthetic_case(np.random.default_rng([7, i]), (32, 28, 10 + i % 5), num_channels=2, num_classes=4)
        case = f"heart_{i:03d}"
        if 5 <= i < 9:  # unlabelled: image only, in its own folder
            training.append({"image": _write(np.moveaxis(image, 0, -1), root / "unlabelled" / f"{case}.nii.gz")})
        else:
            entry = {"image": _write(np.moveaxis(image, 0, -1), root / "imagesTr" / f"{case}.nii.gz")}
            entry["label"] = _write(label, root / "labelsTr" / f"{case}.nii.gz")
            training.append(entry)
        (test_ids if i >= 9 else train_ids).append(case)
    meta = {
        "name": "cine heart", "modality": {"0": "cine-MRI", "1": "cine-MRI"}, "labels": CLASSES,
        "training": training, "train_ids": train_ids, "test_ids": test_ids,
    }  # fmt: skip
    (root / "dataset_unlabelled.json").write_text(json.dumps(meta))
    return root


def _workflow(files, run_id, **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=[str(f) for f in files], meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        run_id=run_id, **override,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    return wf


def test_plan_train_export_infer_and_report_on_a_four_class_two_channel_anisotropic_set(tmp_path):
    data = make_cardiac_like_set(tmp_path / "heart")
    plan_file = tmp_path / "plan.json"
    argv = [str(data), "--output", str(plan_file), "--datalist_file", "dataset_unlabelled.json", "--iterations", "2",
            "--device", "cpu", "--num_labelled", "3"]  # fmt: skip
    assert plan_main(argv) == 0
    plan = json.loads(plan_file.read_text())
    assert (plan["in_channels"], plan["num_classes"], plan["class_names"]) == (2, 4, list(CLASSES.values()))
    assert plan["target_spacing"] is None and plan["normalise"] == "zscore"
    assert plan["backbone"] == "unet2d" and plan["patch_size"] == [32, 16, 1]  # thick slices: slice-wise

    run = {"bundle_root": str(tmp_path / "run"), **SPEED}
    _workflow([CONFIGS / "train.json", plan_file], "training", **run)
    (export,) = (tmp_path / "run" / "export").iterdir()
    assert export.name == "cine_heart"  # the json's name, made file-safe

    test_images = [data / "imagesTr" / f"heart_{i:03d}.nii.gz" for i in (9, 10)]
    _workflow(  # the exported bundle alone: no override but the input and output folders
        [export / "configs" / "inference.json"], "inference", bundle_root=str(export),
        input=[str(p) for p in test_images], output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    for image_file in test_images:  # slice by slice, written as 3-D volumes on each input's grid
        image = nib.load(image_file)
        seg = nib.load(tmp_path / "out" / image_file.name.replace(".nii.gz", "_seg.nii.gz"))
        assert seg.shape == image.shape[:3] and np.allclose(seg.affine, image.affine)
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 3}
    # an input at another in-plane spacing (the first test image at 0.75 mm, its values linearly interpolated, so
    # every other voxel is the original's) is resampled to the trained 1.5 mm, segmented, and written back on its
    # own grid: its label map on the original voxels equals the original's, which no unresampled run would give
    image = nib.load(test_images[0])
    original = np.asarray(image.dataobj, dtype=np.float32)
    fine = original
    for axis in (0, 1):
        between = 0.5 * (np.take(fine, range(fine.shape[axis] - 1), axis) + np.take(fine, range(1, fine.shape[axis]), axis))
        stacked = np.stack([np.take(fine, range(fine.shape[axis] - 1), axis), between], axis + 1)
        merged = stacked.reshape(*fine.shape[:axis], -1, *fine.shape[axis + 1 :])
        fine = np.concatenate([merged, np.take(fine, [fine.shape[axis] - 1], axis)], axis)
    fine_file = tmp_path / "fine" / "heart_fine.nii.gz"
    fine_file.parent.mkdir()
    nib.save(nib.Nifti1Image(fine, np.diag([0.75, 0.75, 8.0, 1.0])), str(fine_file))
    _workflow(
        [export / "configs" / "inference.json"], "inference", bundle_root=str(export), input=str(fine_file),
        output_dir=str(tmp_path / "out_fine"),
    )  # fmt: skip
    seg_fine = np.asarray(nib.load(tmp_path / "out_fine" / "heart_fine_seg.nii.gz").dataobj)
    seg_original = np.asarray(nib.load(tmp_path / "out" / test_images[0].name.replace(".nii.gz", "_seg.nii.gz")).dataobj)
    assert seg_fine.shape == fine.shape[:3]
    assert (seg_fine[::2, ::2] == seg_original).mean() > 0.97

    metadata = json.loads((export / "configs" / "metadata.json").read_text())
    geometry = metadata["trained_geometry"]  # known although the plan kept the native spacing
    assert geometry["spacing"] == list(SPACING) and geometry["orientation"] == "RAS" and metadata["spacing"] == list(SPACING)

    _workflow([CONFIGS / "train.json", plan_file, CONFIGS / "evaluate.json"], "evaluating", **run)
    report = tmp_path / "run" / "eval"
    summary = json.loads((report / "summary.json").read_text())
    assert list(summary["classes"]) == ["RV", "MYO", "LV"] and summary["num_cases"] == 2
    assert set(summary["metrics"]) >= {"dice", "jaccard", "hd95_mm", "asd_mm"}
    assert summary["voxel_distances"] is False  # 1.5 × 1.5 × 8 mm: surface distances in mm only
    markdown = (report / "summary.md").read_text()
    assert all(f"| {name} |" in markdown for name in ("RV", "MYO", "LV")) and "mean" in markdown
    with open(report / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [(c, n) for c in ("heart_009", "heart_010") for n in ("RV", "MYO", "LV")]
