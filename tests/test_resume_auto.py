"""``--resume auto``: the same command starts a run and continues it after an interruption."""

from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from crln_monai.handlers import resume_source

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
TINY = {
    "synthetic_shape": [36, 36, 20], "patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2,
    "num_queries": 8, "num_negatives": 16, "log_interval": 1, "epoch_length": 2, "num_validation": 0,
    "deterministic": True,
}  # fmt: skip


def test_resume_source_for_each_value(tmp_path):
    default = tmp_path / "resume.pt"
    assert resume_source(None, default) is None and resume_source(False, default) is None
    assert resume_source(True, default) == str(default)  # refused later, naming the missing file
    assert resume_source("auto", default) is None  # nothing to continue: a fresh start
    default.write_bytes(b"")
    assert resume_source("auto", default) == str(default)
    assert resume_source("other.pt", default) == "other.pt"


@pytest.mark.parametrize("max_epochs", [2])
def test_resume_auto_starts_fresh_then_continues(tmp_path, max_epochs):
    def run(**override):
        wf = ConfigWorkflow(
            config_file=[str(CONFIGS / f) for f in ("train.json", "evaluate.json", "demo.json")], logging_file=False,
            meta_file=str(CONFIGS / "metadata.json"), run_id="training", bundle_root=str(REPO / "bundles" / "la"),
            demo_dir=str(tmp_path), resume="auto", **TINY, **override,
        )  # fmt: skip
        wf.initialize()
        wf.run()
        return wf.parser.get_parsed_content("train::trainer").state

    first = run(max_epochs=1)  # no resume.pt yet: starts at iteration 0
    assert first.iteration == 2 and (tmp_path / "models" / "resume.pt").is_file()
    second = run(max_epochs=max_epochs)  # the same command later: continues from resume.pt
    assert second.iteration == 2 * max_epochs and second.epoch == max_epochs
