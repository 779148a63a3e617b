"""Two deterministic CPU runs of the tiny demo bundle give the same per-iteration losses and the same teacher."""

import csv
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "la"
CONFIGS = BUNDLE / "configs"
TINY = {  # 40×40×24 volumes, 32×32×16 patches, 2 epochs × 2 iterations, rectification from iteration 2
    "synthetic_shape": [40, 40, 24], "patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2,
    "num_queries": 8, "num_negatives": 16, "log_interval": 1, "rectify_start": 1, "max_epochs": 2, "epoch_length": 2,
    "num_workers": 0, "deterministic": True,
}  # fmt: skip
TRAIN_ONLY = [  # the demo's run list without the test-set evaluation
    "$@resume_saver.attach(@train::trainer)",
    "$@train::trainer.run()",
]


@pytest.fixture
def restore_torch_flags():
    """The runs switch on deterministic algorithms process-wide; switch them back for the other tests."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic)


def _run(demo_dir: Path, dataset_dir: Path | None = None) -> tuple[list[dict[str, str]], dict[str, torch.Tensor]]:
    files = [str(CONFIGS / f) for f in ("train.json", "evaluate.json", "demo.json")]
    override = {"dataset_dir": str(dataset_dir)} if dataset_dir else {}
    wf = ConfigWorkflow(
        config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=False, run_id="training",
        bundle_root=str(BUNDLE), demo_dir=str(demo_dir), training=TRAIN_ONLY, **TINY, **override,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(demo_dir / "eval" / "history.csv") as f:
        history = list(csv.DictReader(f))
    return history, torch.load(demo_dir / "models" / "model_last.pt", map_location="cpu", weights_only=True)["model"]


def test_two_deterministic_runs_are_identical(tmp_path, restore_torch_flags):
    history_a, teacher_a = _run(tmp_path / "a")
    history_b, teacher_b = _run(tmp_path / "b", dataset_dir=tmp_path / "a" / "data")  # same data, fresh outputs

    assert len(history_a) == 4 and [r["iteration"] for r in history_a] == ["1.0", "2.0", "3.0", "4.0"]
    losses = [float(r["loss"]) for r in history_a]
    assert all(math.isfinite(x) for x in losses) and len(set(losses)) == 4  # four different, finite iterations
    assert history_a[-1]["rectifying"] == "1.0" and math.isfinite(float(history_a[-1]["loss_mu"]))
    assert history_a == history_b  # every logged scalar of every iteration, to the last digit

    assert teacher_a.keys() == teacher_b.keys()
    for name in teacher_a:
        assert torch.equal(teacher_a[name], teacher_b[name]), name
