"""No run loses another's work, through ``python -m monai.bundle run`` as a user runs it (one process per command):
a second run into a held folder is refused, a killed run's lock is taken over, a fresh run over a finished one is
refused (and, with ``--overwrite True``, replaces it), a resume on other data or with another epoch length is
refused, and a failed run leaves no empty output folder. Tiny set-up: 16³ volumes, a VNet of 4 base filters, 2
iterations per training."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from crln_monai.overrides import run_command
from crln_monai.data import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "la" / "configs"
TINY = {
    "patch_size": [16, 16, 16], "sw_stride": [8, 8, 8], "num_prototypes": 2, "num_queries": 8, "num_negatives": 16,
    "max_epochs": 1, "epoch_length": 2, "log_interval": 1, "num_workers": 0, "num_labelled": 2, "num_validation": 0,
    "device": "$torch.device('cpu')", "network_settings::backbone_kwargs": {"base_filters": 4},
}  # fmt: skip
RUN_FILES = ("models/resume.pt", "models/model_last.pt", "eval/history.csv", "export/synthetic-LA/models/model.pt")

pytestmark = pytest.mark.slow


def _run(root: Path, data: Path, entry: str = "training", **overrides) -> subprocess.CompletedProcess:
    files = [CONFIGS / "train.json"] + ([CONFIGS / "evaluate.json"] if entry == "evaluating" else [])
    command = run_command(
        entry, files, {"dataset_dir": data, **TINY, **overrides}, bundle_root=root,
        meta_file=CONFIGS / "metadata.json", logging_file=CONFIGS / "logging.conf",
    )  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def _error(result: subprocess.CompletedProcess) -> str:
    """The one-line message the run stopped with (the last exception line that is not MONAI's wrapper)."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "Error: " in line and "ConfigExpression" not in line]
    assert lines, result.stderr[-3000:]
    return lines[-1].split("Error: ", 1)[1]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_lock(root: Path, pid: int) -> bytes:
    (root / "models").mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": socket.gethostname(), "started": "2026-01-02T03:04:05+00:00",
              "command": "python -m monai.bundle run training --bundle_root first"}  # fmt: skip
    (root / "models" / "run.lock").write_text(json.dumps(record) + "\n")
    return (root / "models" / "run.lock").read_bytes()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("ownership") / "data", num_cases=8, num_test=1,
                                  shape=(16, 16, 16))  # fmt: skip


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A bundle root holding a finished run (1 epoch of 2 iterations)."""
    root = tmp_path_factory.mktemp("finished") / "run"
    result = _run(root, data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((root / f).is_file() for f in RUN_FILES) and not (root / "models" / "run.lock").exists()
    return root


def _copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(data, tmp_path):
    root = tmp_path / "run"
    lock = _write_lock(root, os.getpid())  # this test process stands for a live first run
    result = _run(root, data)
    message = _error(result)
    holder = f"training folder {root / 'models'} is in use by another training run (pid {os.getpid()} on host "
    assert message.startswith(holder)
    assert "started 2026-01-02T03:04:05+00:00, command: python -m monai.bundle run training --bundle_root first)" in (
        message
    )
    assert _files(root) == {"models/run.lock": lock}  # nothing written, the lock kept
    assert sorted(p.name for p in root.iterdir()) == ["models"]  # no empty eval/ or export/ left behind


def test_a_fresh_run_over_a_finished_run_is_refused_and_changes_nothing(finished, data, tmp_path):
    root = _copy(finished, tmp_path)
    before = _files(root)
    message = _error(_run(root, data))
    assert message == (
        f"{root} already holds a training run (models/resume.pt, models/model_last.pt, eval/history.csv, "
        "export/synthetic-LA) that a fresh run would replace: continue it with --resume auto (or --resume True), "
        "or replace it with --overwrite True; nothing was written."
    )
    assert _files(root) == before  # byte for byte


def test_overwrite_replaces_the_earlier_run_and_a_killed_runs_lock_is_taken_over(finished, data, tmp_path):
    root = _copy(finished, tmp_path)
    before = _files(root)
    killed = subprocess.Popen(["true"])
    killed.wait()
    _write_lock(root, killed.pid)  # left by a run killed with SIGKILL
    result = _run(root, data, overwrite=True, seed=1)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"taking over the lock of a run that is no longer alive (pid {killed.pid} on host" in log
    assert "--overwrite True: deleted the earlier run's models/resume.pt, models/model_last.pt" in log
    after = _files(root)
    assert "models/run.lock" not in after and all(f in after for f in RUN_FILES)
    assert all(after[f] != before[f] for f in RUN_FILES)  # the new run's (seed 1) files, not the earlier ones
    assert torch.load(root / "models" / "resume.pt", weights_only=True)["trainer"]["iteration"] == 2


def test_a_resume_on_other_data_is_refused_and_a_deliberate_one_counts_its_iterations_apart(finished, data, tmp_path):
    root = _copy(finished, tmp_path)
    before = _files(root)
    message = _error(_run(root, data, resume="auto", num_labelled=3, max_epochs=2))
    assert message.startswith(f"checkpoint {root / 'models' / 'resume.pt'} was trained on other data: ")
    assert "1 labelled case differs (new: case_002); 1 unlabelled case differs (gone: case_002)" in message
    assert "--resume_other_data True" in message and _files(root) == before

    result = _run(root, data, resume="auto", num_labelled=3, max_epochs=2, resume_other_data=True)
    assert result.returncode == 0, result.stderr[-3000:]
    card = (root / "export" / "synthetic-LA" / "docs" / "README.md").read_text()
    assert "the final teacher after 4 iterations, 2 of them on this data set" in card
    assert "| `iterations_trained` | `2` |" in card and "| `iterations_on_earlier_data` | `2` |" in card
    assert "| `num_labelled` | `3` |" in card


def test_a_resume_with_another_epoch_length_is_refused(finished, data, tmp_path):
    root = _copy(finished, tmp_path)
    before = _files(root)
    message = _error(_run(root, data, resume="auto", max_epochs=2, epoch_length=3))
    assert message == (
        f"checkpoint {root / 'models' / 'resume.pt'} was trained with epoch_length=2; the config says epoch_length=3: "
        "a run's epoch length, learning rate, momentum and weight decay are restored from it and cannot change "
        "half-way. Add --epoch_length 2 to resume, or start a new run (--overwrite True, or another --bundle_root)."
    )
    assert _files(root) == before


def test_a_failed_evaluation_leaves_no_empty_eval_or_predictions_folder(data, tmp_path):
    root = tmp_path / "run"  # no checkpoint: refused when the evaluator starts, after the output folders were made
    message = _error(_run(root, data, entry="evaluating"))
    assert "model_last.pt" in message and "not found" in message
    assert not root.exists()  # eval/ and eval/predictions/ (and the root they were made in) removed at exit
