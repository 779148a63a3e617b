"""Output folders are created and proved writable at the start of a run, and a bad one is named before any work."""

import os
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from crln_monai.workflow import check_outputs
from crln_monai.data import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"


def test_missing_folders_are_created_and_left_empty(tmp_path):
    check_outputs({"ckpt_dir": tmp_path / "a" / "models", "output_dir": str(tmp_path / "eval")})
    assert list((tmp_path / "a" / "models").iterdir()) == [] and list((tmp_path / "eval").iterdir()) == []
    check_outputs({"output_dir": tmp_path / "eval"})  # an existing, writable folder passes


def test_a_file_in_place_of_the_folder_is_named(tmp_path):
    (tmp_path / "models").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"^output folder ckpt_dir='.*models' is an existing file, not a folder\."):
        check_outputs({"ckpt_dir": tmp_path / "models"})
    with pytest.raises(NotADirectoryError, match=r"cannot create output folder output_dir='.*models/eval': a part of the"):
        check_outputs({"output_dir": tmp_path / "models" / "eval"})


def test_a_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("crln_monai.workflow.outputs.tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"^output folder output_dir='.*eval' is not writable \(Permission denied\)"):
        check_outputs({"output_dir": tmp_path / "eval"})


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="output_dir=.* is not writable"):
            check_outputs({"output_dir": folder})
    finally:
        folder.chmod(0o755)


def _workflow(configs, run_id, tmp_path, **override) -> ConfigWorkflow:
    data = make_synthetic_dataset(tmp_path / "data", num_cases=6, num_test=1, shape=(16, 16, 16))
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / f"{c}.json") for c in configs], meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False, workflow_type=None, run_id=run_id, bundle_root=str(REPO / "bundles" / "la"),
        dataset_dir=str(data), **override,
    )  # fmt: skip
    workflow.initialize()
    return workflow


def test_training_refuses_a_ckpt_dir_that_is_a_file_before_building_anything(tmp_path):
    (tmp_path / "models").write_text("")
    workflow = _workflow(
        ["train"], "training", tmp_path, ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"), num_labelled=2
    )  # fmt: skip
    with pytest.raises(RuntimeError) as error:
        workflow.run()
    assert "output folder ckpt_dir=" in str(error.value.__cause__) and "is an existing file" in str(error.value.__cause__)
    resolved = workflow.parser.ref_resolver.resolved_content
    assert not [key for key in ("train::dataset", "train::trainer", "network", "resume_saver") if key in resolved]


def test_evaluation_and_training_refuse_an_output_dir_that_is_a_file_at_initialize(tmp_path):
    (tmp_path / "eval").write_text("")
    with pytest.raises(RuntimeError) as error:
        _workflow(["train", "evaluate"], "evaluating", tmp_path, ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"))
    assert "output folder output_dir=" in str(error.value.__cause__)
    assert not (tmp_path / "models").exists()  # evaluation never creates the checkpoint folder


def test_inference_refuses_an_output_dir_under_a_file_before_the_first_case(tmp_path):
    import nibabel as nib

    (tmp_path / "inputs").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4)), str(tmp_path / "inputs" / "case.nii.gz"))
    (tmp_path / "blocker").write_text("")
    with pytest.raises(RuntimeError) as error:
        _workflow(["train", "inference"], "inference", tmp_path, input=str(tmp_path / "inputs"),
                  output_dir=str(tmp_path / "blocker" / "predictions"))  # fmt: skip
    assert "cannot create output folder output_dir=" in str(error.value.__cause__)
    assert "blocker/predictions" in str(error.value.__cause__)
