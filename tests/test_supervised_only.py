"""A supervised-only run on a data set whose every train case is labelled is valid; a semi-supervised one is not."""

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from crln_monai.data import make_synthetic_dataset, semi_supervised_datalist

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
TINY = {
    "patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2, "num_queries": 8, "num_negatives": 16,
    "max_epochs": 1, "epoch_length": 1, "log_interval": 1, "num_workers": 0, "num_validation": 0, "num_labelled": None,
    "labelled_batch_size": 1,
}  # fmt: skip


@pytest.fixture
def all_labelled(tmp_path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", num_cases=5, num_test=1, shape=(40, 40, 24))


def test_datalist_without_unlabelled_cases(all_labelled):
    with pytest.raises(ValueError, match=r"empty unlabelled pool: all 4 train cases are labelled.*use_unlabelled False"):
        semi_supervised_datalist(all_labelled)
    datalist = semi_supervised_datalist(all_labelled, require_unlabelled=False)
    assert datalist["unlabelled"] == [] and len(datalist["labelled"]) == 4 and len(datalist["test"]) == 1


def _workflow(data: Path, tmp_path: Path, **override) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        workflow_type=None, run_id="training", bundle_root=str(REPO / "bundles" / "la"), dataset_dir=str(data),
        ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"), **{**TINY, **override},
    )  # fmt: skip
    workflow.initialize()
    return workflow


def test_semi_supervised_bundle_still_refuses_an_empty_pool(all_labelled, tmp_path):
    workflow = _workflow(all_labelled, tmp_path)
    with pytest.raises(RuntimeError) as error:
        workflow.parser.get_parsed_content("datalist")
    assert "empty unlabelled pool" in str(error.value.__cause__)


def test_supervised_only_bundle_trains_on_every_labelled_case(all_labelled, tmp_path):
    workflow = _workflow(all_labelled, tmp_path, use_unlabelled=False)
    sampler = workflow.parser.get_parsed_content("train::sampler")
    assert (sampler.num_labelled, sampler.num_unlabelled, sampler.batch_size) == (4, 0, 1)
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train::trainer")
    assert trainer.state.iteration == 1 and torch.isfinite(trainer.state.output["loss"])
    assert (tmp_path / "models" / "model_last.pt").is_file()
