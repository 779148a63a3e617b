"""bundles/custom: a user's folder → plan.json → training with bundles/custom → the exported bundle segments."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from crln_monai.workflow import verify_bundle_metadata
from crln_monai.data import make_synthetic_dataset
from crln_monai.plan.__main__ import main as plan_main

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "custom"
CONFIGS = BUNDLE / "configs"
SPEED = {"num_prototypes": 2, "num_queries": 8, "num_negatives": 16, "num_workers": 0, "log_interval": 1}


def _plan(tmp_path) -> Path:
    """A 3-class, anisotropic (1.5 × 1.5 × 8 mm) synthetic set and its plan."""
    data = make_synthetic_dataset(tmp_path / "data", num_cases=6, num_test=1, shape=(32, 32, 12), num_classes=3, spacing=(1.5, 1.5, 8.0))
    plan = tmp_path / "plan.json"
    assert plan_main([str(data), "--output", str(plan), "--iterations", "2", "--device", "cpu", "--num_labelled", "2"]) == 0
    return plan


def _workflow(files, run_id="training", workflow_type="train", **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=[str(f) for f in files], meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        workflow_type=workflow_type, run_id=run_id, **override,
    )  # fmt: skip
    wf.initialize()
    return wf


def test_custom_bundle_files():
    verify_bundle_metadata(CONFIGS / "metadata.json")
    licence = (BUNDLE / "LICENSE").read_text()
    assert "Apache License" in licence and "Atrial" not in licence and "the data they were trained on" in licence
    card = (BUNDLE / "docs" / "README.md").read_text()
    for command in (
        "python -m crln_monai.plan data/mine --output plan.json",
        "--config_file \"['bundles/custom/configs/train.json','plan.json']\" \\\n    --bundle_root runs/mine",
        "--config_file runs/mine/export/<name>/configs/inference.json --input",
        "'bundles/custom/configs/evaluate.json']",
    ):
        assert command in card, command
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["class_names"] == ["background", "foreground"] and train["num_labelled"] is None


def test_plan_layered_on_the_custom_bundle_has_every_train_property(tmp_path):
    plan = _plan(tmp_path)
    wf = _workflow([CONFIGS / "train.json", plan], bundle_root=str(tmp_path / "run"))
    assert wf.check_properties() == []
    settings = wf.parser.get_parsed_content("settings")
    assert settings["network"]["num_classes"] == 3 and settings["network"]["strides"] == json.loads(plan.read_text())["strides"]
    assert settings["class_names"] == ["background", "foreground", "core_1"]


@pytest.mark.slow
def test_plan_train_export_and_segment_multiclass_anisotropic(tmp_path):
    plan = _plan(tmp_path)
    run = tmp_path / "run"
    wf = _workflow([CONFIGS / "train.json", plan], bundle_root=str(run), max_epochs=1, epoch_length=2, **SPEED)
    wf.run()
    bundle = run / "export" / "synthetic-LA"
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["network_settings"]["strides"] == json.loads(plan.read_text())["strides"]
    assert config["preprocessing_settings"]["normalise"] == "zscore" and config["num_classes"] == 3
    case = sorted((tmp_path / "data" / "imagesTr").glob("*.nii.gz"))[-1]  # the synthetic set's test case
    infer = _workflow(
        [bundle / "configs" / "inference.json"], run_id="inference", workflow_type="infer", bundle_root=str(bundle),
        input=str(case), output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    assert infer.check_properties() == []
    infer.run()
    image, seg = nib.load(case), nib.load(tmp_path / "out" / (case.name[: -len(".nii.gz")] + "_seg.nii.gz"))
    assert seg.shape == image.shape[:3] and np.allclose(seg.affine, image.affine)
    assert set(np.unique(seg.get_fdata()).tolist()) <= {0.0, 1.0, 2.0}
    saved = torch.load(run / "models" / "model_last.pt", weights_only=True)
    assert saved["settings"]["class_names"] == ["background", "foreground", "core_1"]
