"""A thick-slice data set and its twin acquired with the thick axis first train the same network (issue 16).

The twin stores every volume with the slice axis first and an affine that makes it the world's x axis (thick
sagittal slices instead of thick axial ones). The plan reorients the twin ``ASR`` so that its thick axis goes last,
the network then sees the very arrays of the original, and a deterministic run gives the same weights: the twin's
predictions are the original's with the axes moved, written on the twin's own grid, overlaying its labels.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from crln_monai.data import make_synthetic_dataset
from crln_monai.plan import plan_dataset

REPO = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("thick_axis_twin_script", REPO / "scripts" / "thick_axis_twin.py")
_SCRIPT = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_SCRIPT)
CONFIGS = REPO / "bundles" / "custom" / "configs"
FAST = {
    "num_prototypes": 2, "num_queries": 8, "num_negatives": 16, "num_workers": 0, "log_interval": 1,
    "max_epochs": 1, "epoch_length": 2, "device": "$torch.device('cpu')", "deterministic": True,
    "labelled_batch_size": 2, "unlabelled_batch_size": 2,
}  # fmt: skip


def _train_and_infer(data: Path, root: Path, test_images: list[Path]) -> tuple[dict, Path]:
    plan = plan_dataset(data, num_labelled=2, iterations=2, device="cpu", num_workers=0).overrides
    plan_file = root / "plan.json"
    root.mkdir(parents=True)
    plan_file.write_text(json.dumps(plan))
    wf = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(plan_file)], logging_file=False, run_id="training",
        bundle_root=str(root / "run"), **FAST,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    (export,) = (root / "run" / "export").iterdir()
    wf = ConfigWorkflow(
        config_file=str(export / "configs" / "inference.json"), logging_file=False, run_id="inference",
        bundle_root=str(export), input=[str(p) for p in test_images], output_dir=str(root / "out"),
    )  # fmt: skip
    wf.initialize()
    wf.run()
    return plan, root / "out"


@pytest.mark.slow
def test_twin_with_the_thick_axis_first_gives_the_same_segmentation(tmp_path):
    original = make_synthetic_dataset(
        tmp_path / "axial", num_cases=10, num_test=2, shape=(48, 40, 8), spacing=(1.0, 1.0, 5.0),
        with_unlabelled_labels=False,
    )  # fmt: skip
    twin = _SCRIPT.thick_first_twin(original, tmp_path / "sagittal")
    tests = ["imagesTr/case_008.nii.gz", "imagesTr/case_009.nii.gz"]
    plan_a, out_a = _train_and_infer(original, tmp_path / "a", [original / t for t in tests])
    plan_b, out_b = _train_and_infer(twin, tmp_path / "b", [twin / t for t in tests])
    assert (plan_a["orientation"], plan_b["orientation"]) == ("RAS", "ASR")
    for key in ("backbone", "patch_size", "strides", "sw_stride", "target_spacing"):
        assert plan_a[key] == plan_b[key], key
    for name in ("case_008", "case_009"):
        pred_a = nib.load(out_a / f"{name}_seg.nii.gz")
        pred_b = nib.load(out_b / f"{name}_seg.nii.gz")
        image_b = nib.load(twin / "imagesTr" / f"{name}.nii.gz")
        assert pred_b.shape == image_b.shape and np.allclose(pred_b.affine, image_b.affine)
        a, b = np.asarray(pred_a.dataobj), np.asarray(pred_b.dataobj)
        assert np.array_equal(b, np.moveaxis(a, 2, 0))  # the same network, the same prediction, the twin's grid
        label_b = np.asarray(nib.load(twin / "labelsTr" / f"{name}.nii.gz").dataobj)
        label_a = np.asarray(nib.load(original / "labelsTr" / f"{name}.nii.gz").dataobj)
        overlap = lambda p, t: 2 * ((p == 1) & (t == 1)).sum() / max(1, (p == 1).sum() + (t == 1).sum())  # noqa: E731
        assert overlap(b, label_b) == overlap(a, label_a)  # overlays its labels as the original overlays its own
