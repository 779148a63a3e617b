"""The LA bundle: CLI training run, properties, metadata, resume, truly unlabelled data, real LA cases."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from crln_monai.workflow import verify_bundle_metadata
from crln_monai.data import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "la"
CONFIGS = BUNDLE / "configs"
TINY = {  # tiny synthetic setting: 40×40×24 volumes, 32×32×16 patches
    "synthetic_shape": [40, 40, 24], "patch_size": [32, 32, 16], "sw_stride": [16, 16, 8], "num_prototypes": 2,
    "num_queries": 8, "num_negatives": 16, "log_interval": 1, "rectify_start": 1, "deterministic": True,
}  # fmt: skip


def _workflow(configs, workflow_type=None, **override) -> ConfigWorkflow:
    files = [str(CONFIGS / f"{c}.json") for c in configs]
    wf = ConfigWorkflow(
        config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=False, workflow_type=workflow_type,
        run_id="training", bundle_root=str(BUNDLE), **override,
    )  # fmt: skip
    wf.initialize()
    return wf


def _teacher_state(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["model"] if "model" in state else state  # {"model": ..., "settings": ...} or a plain state dict


@pytest.mark.slow
def test_cli_training_run_writes_checkpoints_reports_and_finite_losses(tmp_path):
    overrides = {**TINY, "demo_dir": str(tmp_path), "max_epochs": 2, "epoch_length": 2, "val_interval": 1}
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "") if not isinstance(value, bool) else str(value)]
    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}','{CONFIGS / 'demo.json'}']"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", files, "--bundle_root", str(BUNDLE)]
    result = subprocess.run(cmd + args, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("model_last.pt", "model.pt", "resume.pt"):
        assert (tmp_path / "models" / name).is_file(), name
    resume = torch.load(tmp_path / "models" / "resume.pt", map_location="cpu", weights_only=False)
    assert {"student", "teacher", "optimizer", "rectifier_optimizer", "lr_scheduler", "teacher_ema", "trainer"} <= set(resume)
    assert resume["trainer"]["iteration"] == 4 and resume["teacher_ema"]["step"] == 4
    with open(tmp_path / "eval" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert (tmp_path / "eval" / "training_curves.png").stat().st_size > 0
    assert (tmp_path / "eval" / "summary.json").is_file() and (tmp_path / "eval" / "per_case.csv").is_file()
    assert (tmp_path / "eval" / "best_worst_cases.png").stat().st_size > 0
    assert len(list((tmp_path / "eval" / "predictions").glob("*.nii.gz"))) == 6
    assert "Dice per case" in result.stdout + result.stderr


def test_check_properties_and_metadata(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_cases=8, num_test=2, shape=(40, 40, 24))
    wf = _workflow(["train"], workflow_type="train", dataset_dir=str(data), num_labelled=2)
    assert wf.check_properties() == []
    verify_bundle_metadata(CONFIGS / "metadata.json")


def test_metadata_missing_key_is_named(tmp_path):
    import json

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    del meta["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_bundle_metadata(tmp_path / "metadata.json")


def _history(run_dir):
    with open(run_dir / "eval" / "history.csv") as f:
        return list(csv.DictReader(f))


def _evaluator_state(workflow):
    return workflow.parser.get_parsed_content("validate::evaluator").state


def test_resume_continues_to_the_same_teacher_best_model_and_history(tmp_path):
    common = {  # train.json's run list, without demo.json's test-set evaluation
        **TINY, "epoch_length": 2, "num_validation": 2, "val_interval": 1, "max_epochs": 2,
        "training": json.loads((CONFIGS / "train.json").read_text())["training"],
    }  # fmt: skip
    straight = _workflow(["train", "evaluate", "demo"], demo_dir=str(tmp_path / "a"), **common)
    straight.run()
    interrupted = _workflow(["train", "evaluate", "demo"], demo_dir=str(tmp_path / "b"), **common)
    trainer = interrupted.parser.get_parsed_content("train::trainer")
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())  # a crash after epoch 1
    interrupted.run()
    assert trainer.state.iteration == 2
    models = tmp_path / "b/models"
    with open(tmp_path / "b/eval/history.csv", "a") as f:  # a kill between epoch 2's history and resume.pt writes
        f.write("3.0,2.0," + ",".join(["123.0"] * (len(_history(tmp_path / "b")[0]) - 2)) + "\n")
    (models / ".resume.pt.k2j3_x9.tmp").write_bytes(b"half a checkpoint")  # a kill mid-write
    shutil.copytree(tmp_path / "b", tmp_path / "c")  # c: the same interruption, resumed after a perfect best model
    resume_c = torch.load(tmp_path / "c/models/resume.pt", weights_only=True)
    assert resume_c["best_metric"]["best_metric_epoch"] == 1
    resume_c["best_metric"]["best_metric"] = 1.0  # Dice 1 cannot be beaten: epoch 2's validation is no new best
    torch.save(resume_c, tmp_path / "c/models/resume.pt")
    best_c = (tmp_path / "c/models/model.pt").read_bytes()

    for run in ("b", "c"):
        resumed = _workflow(["train", "evaluate", "demo"], demo_dir=str(tmp_path / run), resume=True, **common)
        resumed.run()
        assert resumed.parser.get_parsed_content("train::trainer").state.iteration == 4
        a = _teacher_state(tmp_path / "a/models/model_last.pt")
        b = _teacher_state(tmp_path / run / "models/model_last.pt")
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
        # the history: the whole run once, identical to the uninterrupted one; no temporary left
        assert [r["iteration"] for r in _history(tmp_path / run)] == ["1.0", "2.0", "3.0", "4.0"]
        assert _history(tmp_path / run) == _history(tmp_path / "a")
        assert sorted(os.listdir(tmp_path / run / "models")) == ["model.pt", "model_last.pt", "resume.pt"]
        # TensorBoard: training scalars per iteration and validation metrics at the trainer's iteration, each once
        events = EventAccumulator(str(tmp_path / run / "eval" / "tensorboard"))
        events.Reload()
        assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
        assert [e.step for e in events.Scalars("val_mean_dice")] == [2, 4]
        best = [(s.best_metric, s.best_metric_epoch) for s in (_evaluator_state(straight), _evaluator_state(resumed))]
        if run == "b":  # the best model, metric and epoch of the uninterrupted run
            assert best[1] == best[0]
            a, b = _teacher_state(tmp_path / "a/models/model.pt"), _teacher_state(models / "model.pt")
            assert all(torch.equal(a[key], b[key]) for key in a)
        else:  # no better model after the resume: model.pt untouched, the restored best kept
            assert best[1] == (1.0, 1)
            assert (tmp_path / "c/models/model.pt").read_bytes() == best_c
            saved = torch.load(tmp_path / "c/models/resume.pt", weights_only=True)["best_metric"]
            assert saved == {"best_metric": 1.0, "best_metric_epoch": 1}


def test_truly_unlabelled_pool_trains(tmp_path):
    wf = _workflow(
        ["train", "evaluate", "demo"], demo_dir=str(tmp_path), synthetic_unlabelled_labels=False, max_epochs=1, epoch_length=2,
        num_validation=0, **{k: v for k, v in TINY.items() if k != "deterministic"},
    )  # fmt: skip
    datalist = wf.parser.get_parsed_content("datalist")
    without = [item for item in datalist["unlabelled"] if "label" not in item]
    assert len(without) >= len(datalist["unlabelled"]) - 1 >= 10  # no label files on disk for the pool
    wf.run()
    out = wf.parser.get_parsed_content("train::trainer").state.output
    assert torch.isfinite(out["loss"]) and torch.isnan(out["pseudo_label_dice"])


def test_a_few_iterations_on_real_la_cases(la_dir, tmp_path):
    import json

    ids = json.loads((la_dir / "dataset.json").read_text())["train_ids"]
    wf = _workflow(
        ["train"], dataset_dir=str(la_dir), ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"),
        num_labelled=None, labelled_ids=ids[:1], unlabelled_ids=ids[1:2], labelled_batch_size=1, unlabelled_batch_size=1,
        patch_size=[48, 48, 32], num_prototypes=2, num_queries=8, num_negatives=16, max_epochs=1, epoch_length=2,
        num_workers=0, rectify_start=0, log_interval=1,
    )  # fmt: skip
    wf.run()
    out = wf.parser.get_parsed_content("train::trainer").state.output
    assert torch.isfinite(out["loss"]) and 0 <= float(out["pseudo_label_dice"]) <= 1
    assert (tmp_path / "models" / "model_last.pt").is_file()


def test_mean_teacher_switches_build_no_dim_and_string_flags_are_refused(tmp_path):
    tiny = {**TINY, "demo_dir": str(tmp_path), "max_epochs": 1, "epoch_length": 1, "num_validation": 0}
    wf = _workflow(["train", "evaluate", "demo"], use_dim=False, use_cps=False, cutmix=False, noise=False, **tiny)
    network = wf.parser.get_parsed_content("network")
    assert network.dim is None and network.rectifier is None and network.projection is None
    assert wf.parser.get_parsed_content("rectifier_optimizer") is None
    wf.run()
    assert torch.isnan(wf.parser.get_parsed_content("train::trainer").state.output["loss_relation"])
    with pytest.raises(RuntimeError) as error:  # MONAI wraps the TypeError of the initialize expression
        _workflow(["train", "evaluate", "demo"], use_dim="false", **tiny)
    assert "use_dim='false'" in str(error.value.__cause__) and "False" in str(error.value.__cause__)


def test_a_run_that_diverges_at_an_epoch_end_writes_nothing_of_that_epoch(tmp_path):
    """``NonFiniteCheck`` sits before validation and every saver: the last good checkpoints stay as they were."""
    wf = _workflow(
        ["train", "evaluate", "demo"], demo_dir=str(tmp_path), max_epochs=3, epoch_length=2, num_validation=2,
        val_interval=1, **{**TINY, "log_interval": 100},  # no in-iteration check: the epoch-end check must catch it
        training=json.loads((CONFIGS / "train.json").read_text())["training"],
    )  # fmt: skip
    trainer = wf.parser.get_parsed_content("train::trainer")
    models = tmp_path / "models"
    written = {}

    def diverge(engine):  # what a NaN loss in the last iteration of epoch 2 leaves on the device
        assert (models / "run.lock").is_file()  # the run holds its folder while it trains
        written.update({p.name: p.read_bytes() for p in models.iterdir() if p.name != "run.lock"})
        engine._nonfinite.fill_(True)

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=4), diverge)
    with pytest.raises(RuntimeError) as failed:  # MONAI wraps what the run list raised
        wf.run()
    assert isinstance(failed.value.__cause__, FloatingPointError)
    assert "non-finite loss at or before iteration 4" in str(failed.value.__cause__)
    assert sorted(written) == ["model.pt", "model_last.pt", "resume.pt"]  # epoch 1's, all three
    assert {p.name: p.read_bytes() for p in models.iterdir()} == written  # nothing of epoch 2 written, lock released
    assert torch.load(models / "resume.pt", weights_only=True)["trainer"]["iteration"] == 2
