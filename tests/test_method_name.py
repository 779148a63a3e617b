"""The method a run trains, named from its switches (report titles)."""

import json
from pathlib import Path

import pytest

from crln_monai.evaluation import method_name

ABLATION = Path(__file__).resolve().parents[1] / "bundles" / "la" / "configs" / "ablation"


@pytest.mark.parametrize(
    "switches, name",
    [
        ({"use_unlabelled": False, "use_dim": False, "use_cps": False}, "supervised only"),
        ({"use_unlabelled": False, "use_dim": True, "use_cps": True}, "supervised only + DIM"),
        ({"use_dim": False, "use_cps": False, "cutmix": False, "noise": False}, "mean teacher"),
        ({"use_dim": False, "use_cps": False}, "mean teacher + CutMix + noise"),
        ({"use_dim": False, "use_cps": False, "noise": False}, "mean teacher + CutMix"),
        ({"use_dim": False, "use_cps": True}, "mean teacher + CutMix + noise + CPS"),
        ({"use_cps": False}, "CRLN (DIM)"),
        ({}, "CRLN (full)"),
        ({"cutmix": False}, "CRLN (full) without CutMix"),
        ({"use_cps": False, "cutmix": False, "noise": False}, "CRLN (DIM) without CutMix and noise"),
    ],
)
def test_method_name_per_switch_set(switches, name):
    assert method_name(**switches) == name


def test_the_ablation_ladder_gets_its_names():
    """The bundle's ablation override files (where present) name the five rungs of the paper's Table 5."""
    expected = {
        "supervised": "supervised only", "mean_teacher": "mean teacher", "mt_cutmix_noise": "mean teacher + CutMix + noise",
        "crln_dim": "CRLN (DIM)", "crln_full": "CRLN (full)",
    }  # fmt: skip
    if not ABLATION.is_dir():
        pytest.skip("no ablation override files in this checkout")
    keys = ("use_unlabelled", "use_dim", "use_cps", "cutmix", "noise")
    for rung, name in expected.items():
        values = json.loads((ABLATION / f"{rung}.json").read_text())
        assert method_name(**{k: values[k] for k in keys if k in values}) == name, rung


def test_string_switches_are_refused():
    with pytest.raises(TypeError, match="use_dim='false'"):
        method_name(use_dim="false")
