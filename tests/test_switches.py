"""Every cell of the README's switch table trains one iteration through the LA bundle.

The table is read from README.md, so it cannot advertise a switch the bundle does not run. The runs go through
``ConfigWorkflow`` in-process (what ``python -m monai.bundle run training`` does after parsing its arguments)
to keep the suite fast; ``test_bundle_la.py`` covers the command line itself.
"""

import math
import re
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from crln_monai.workflow import ABLATION_LADDER, ablation_overrides
from crln_monai.data import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "la"
TINY = {
    "patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2, "num_queries": 8, "num_negatives": 16,
    "num_labelled": 2, "labelled_batch_size": 1, "unlabelled_batch_size": 1, "max_epochs": 1, "epoch_length": 1,
    "rectify_start": 0, "num_workers": 0, "log_interval": 1, "device": "$torch.device('cpu')",
}  # fmt: skip


def readme_switch_cells() -> list[tuple[str, list[str], dict]]:
    """(id, extra config files, overrides) for every backticked cell of the README's switch table."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| paper ablation | overrides |") :].split("\n\n")[0]
    cells = []
    for row in table.splitlines()[2:]:
        for cell in re.findall(r"`([^`]+)`", row.split("|")[2]):
            if cell.startswith("configs/ablation/"):
                cells.append((Path(cell).stem, [str(BUNDLE / cell)], {}))
                continue
            key, value = re.fullmatch(r"--(\w+) (\S+)", cell).groups()
            parsed = {"True": True, "False": False}.get(value, value)
            if isinstance(parsed, str) and re.fullmatch(r"-?[\d.]+", value):
                parsed = float(value) if "." in value else int(value)
            cells.append((f"{key}={value}", [], {key: parsed}))
    return cells


CELLS = readme_switch_cells()


def test_the_table_covers_the_ladder_and_every_choice():
    ids = {c[0] for c in CELLS}
    assert set(ABLATION_LADDER) <= ids
    for key, choices in {
        "cps_positive": ("mean", "prototype", "unassertive"),
        "dim_aggregation": ("sum", "spatial", "conv", "cross_class"),
        "rectifier": ("fixed_v1", "learnable_v2", "learnable_v3"),
    }.items():
        assert {f"{key}={c}" for c in choices} <= ids, key


def test_ablation_files_hold_the_documented_switches():
    assert ablation_overrides(BUNDLE, "crln_full") == {}
    assert ablation_overrides(BUNDLE, "supervised") == {"use_unlabelled": False, "use_dim": False, "use_cps": False}
    assert ablation_overrides(BUNDLE, "mean_teacher") == {"use_dim": False, "use_cps": False, "cutmix": False, "noise": False}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("switch_data"), num_cases=6, num_test=1, shape=(36, 36, 20))


@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_switch_trains_one_iteration(cell, tiny_data, tmp_path):
    _, files, overrides = cell
    wf = ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / "train.json"), *files], meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False, run_id="training", bundle_root=str(tmp_path), dataset_dir=str(tiny_data),
        **{**TINY, **overrides},
    )  # fmt: skip
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train::trainer")
    out = trainer.state.output
    assert trainer.state.iteration == 1 and torch.isfinite(out["loss"])
    config = wf.parser.get_parsed_content
    has_mu_params = config("use_dim") and config("rectifier") != "fixed_v1"
    assert (config("rectifier_optimizer") is not None) == has_mu_params
    assert math.isnan(float(out["loss_mu"])) != has_mu_params
    for key, value in overrides.items():
        assert config(key) == value
    assert (tmp_path / "models" / "model_last.pt").is_file()
    exported = list((tmp_path / "export").glob("*/models/model.pt"))  # the run exported a bundle of itself
    assert len(exported) == 1 and (exported[0].parents[1] / "configs" / "inference.json").is_file()
