"""Smoke-level runs of the benchmark and accuracy scripts' ``main`` on tiny CPU settings, with behavioural asserts
on the JSON they write (never on the timings' values)."""

import csv
import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import benchmark_sliding_window  # noqa: E402
import benchmark_speed  # noqa: E402
import la_accuracy  # noqa: E402
import profile_iteration  # noqa: E402

from crln_monai.data import make_synthetic_dataset  # noqa: E402

MACHINE_KEYS = {"platform", "cpu_count", "torch", "cuda_device"}


def _read(path):
    return json.loads(Path(path).read_text())


def test_benchmark_speed_trainer_iterations(tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = ["--device", "cpu", "--patch_size", "32", "32", "16", "--warmup", "1", "--iterations", "1",
            "--variants", "fp32", "--out", str(out)]  # fmt: skip
    returned = benchmark_speed.main(argv)
    payload = _read(out)
    assert payload["results"] == json.loads(json.dumps(returned["results"]))
    assert MACHINE_KEYS <= set(payload["machine"]) and "benchmark_speed.py" in payload["command"]
    assert payload["settings"]["patch_size"] == [32, 32, 16] and payload["settings"]["rectify_start"] == 0
    r = payload["results"]["fp32"]
    for method in ("crln", "mean_teacher"):
        assert r[method]["iterations_timed"] == 1 and len(r[method]["times_s"]) == 1  # the warm-up is not timed
        assert r[method]["median_s"] > 0 and math.isfinite(r[method]["final_loss"])
    assert r["crln"]["rectifying"] is True  # rectify_start=0: the timed iteration includes the rectification
    assert r["ratio_crln_over_mt"] == pytest.approx(r["crln"]["median_s"] / r["mean_teacher"]["median_s"])
    assert r["ratio_crln_over_mt_of_minima"] == pytest.approx(r["crln"]["min_s"] / r["mean_teacher"]["min_s"])
    ratio_check = [c for c in payload["checks"] if "ratio" in c["name"]]
    assert len(ratio_check) == 1 and ratio_check[0]["pass"] == (r["ratio_crln_over_mt"] <= 1.4)
    printed = capsys.readouterr().out
    assert "command:" in printed and "machine:" in printed and "ratio" in printed


def test_benchmark_speed_forward_backward_only(tmp_path):
    out = tmp_path / "fb.json"
    benchmark_speed.main(["--device", "cpu", "--forward_backward_only", "--patch_size", "32", "32", "16",
                          "--warmup", "0", "--iterations", "2", "--variants", "fp32", "--out", str(out)])  # fmt: skip
    r = _read(out)["results"]["fp32"]
    assert r["crln"]["median_s"] > 0 and r["vnet"]["median_s"] > 0 and len(r["vnet"]["times_s"]) == 2
    assert r["ratio_crln_over_vnet"] == pytest.approx(r["crln"]["median_s"] / r["vnet"]["median_s"])


def test_profile_iteration_marks_every_phase_of_each_method(tmp_path):
    out = tmp_path / "profile.json"
    profile_iteration.main(["--device", "cpu", "--patch_size", "32", "32", "16", "--warmup", "1", "--iterations",
                            "1", "--variants", "fp32", "--out", str(out)])  # fmt: skip
    results = _read(out)["results"]
    crln, mt = results["fp32/crln"], results["fp32/mean_teacher"]
    only_crln = {"CPS", "mu step"}
    assert only_crln | {"student forwards", "optimiser step", "teacher EMA"} <= set(crln["phases"])
    assert not only_crln & set(mt["phases"])
    assert crln["phases"]["student forwards"]["calls"] == 2  # labelled and strong unlabelled
    assert crln["phases"]["mu step"]["host_ms"] > 0 and crln["wall_ms_per_iteration_profiled"] > 0
    assert crln["top_level_ops_per_iteration"] > mt["top_level_ops_per_iteration"] > 0
    assert crln["host_syncs_in_one_iteration"] is None and len(crln["top"]) == 15  # CPU: no device counters


def test_make_batches_are_labelled_then_unlabelled():
    batches = benchmark_speed.make_batches(6, (16, 16, 16), torch.device("cpu"), distinct=2)
    assert len(batches) == 6 and batches[0] is batches[2] and batches[1] is not batches[0]
    label = batches[0]["label"]
    assert label.shape == (4, 1, 16, 16, 16) and label.dtype == torch.long
    assert (label[2:] == -1).all() and set(label[:2].unique().tolist()) == {0, 1}


def _handler_classes(engine):
    handlers = [h for registered in engine._event_handlers.values() for h, *_ in registered]
    return {type(getattr(h, "__self__", h)).__name__ for h in handlers}


def test_benchmark_trainers_are_the_bundle_under_its_ablation_files(tmp_path):
    """The benchmarks' trainers come from train.json + configs/ablation/<rung>.json: the rung's switches, the
    bundle's values, the benchmark's own overrides, and no handler that needs a dataset or writes files."""
    from monai.bundle import ConfigParser

    bundle = ConfigParser()
    bundle.read_config(str(benchmark_speed.BUNDLE / "configs" / "train.json"))
    value = bundle.get_parsed_content
    cpu, patch = torch.device("cpu"), (32, 32, 16)
    batches = benchmark_speed.make_batches(2, patch, cpu, distinct=1)
    mt = benchmark_speed.build_trainer("mean_teacher", batches, patch, cpu, work_dir=tmp_path / "mt")
    full = benchmark_speed.build_trainer("crln", batches, patch, cpu, seed=3, work_dir=tmp_path / "crln")

    assert mt.use_dim is False and mt.cps_loss is None and mt.rectifier_optimizer is None
    assert mt.network.dim is None and mt.network.projection is None
    assert (mt.strong_augment.cutmix, mt.strong_augment.noise) == (False, False)
    assert full.use_dim is True and full.rectifier_optimizer is not None  # the μ optimiser
    assert full.cps_loss.num_queries == value("num_queries") and full.cps_loss.num_negatives == value("num_negatives")
    assert (full.strong_augment.cutmix, full.strong_augment.noise) == (value("cutmix"), value("noise")) == (True, True)
    assert full.network.prototypes.shape[1] == value("num_prototypes") and full.network.patch_size == patch
    assert full.rectifier_optimizer.param_groups[0]["lr"] == value("lr") and full.seed == 3
    for trainer in (mt, full):
        sgd = ("lr", "momentum", "weight_decay")
        assert [trainer.optimizer.param_groups[0][k] for k in sgd] == [value(k) for k in sgd]
        assert (trainer.lambda_u, trainer.lambda_cp) == (value("lambda_u"), value("lambda_cp"))
        assert trainer.weak_threshold == value("weak_threshold")
        assert trainer.confidence_threshold == value("strong_threshold")
        assert trainer.rectify_start == 0 and trainer.labelled_batch_size == benchmark_speed.BATCH["labelled"] == 2
        assert (trainer.state.max_epochs, trainer.state.epoch_length) == (1, len(batches))
        assert trainer.amp_dtype is None and trainer.state.device == cpu
        classes = _handler_classes(trainer)
        assert "LrScheduleHandler" in classes
        assert not classes & {"EpochSeeder", "ValidationHandler", "AtomicCheckpointSaver", "BundleExporter",
                              "TrainingHistory", "RunProgress", "ProgressBar", "StatsHandler"}  # fmt: skip
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing written, not even into the temporary root
    assert benchmark_speed.rung("crln") == "crln_full" and benchmark_speed.rung("crln_dim") == "crln_dim"
    with pytest.raises(ValueError, match="method must be one of"):
        benchmark_speed.rung("nope")


def test_benchmark_sliding_window_synthetic(tmp_path):
    out = tmp_path / "sw.json"
    benchmark_sliding_window.main(["--device", "cpu", "--synthetic", "--volume_shape", "40", "36", "20",
                                   "--patch_size", "32", "32", "16", "--stride", "16", "16", "8", "--max_volumes", "2",
                                   "--sw_batch_sizes", "4", "--out", str(out)])  # fmt: skip
    payload = _read(out)
    assert payload["settings"]["source"] == "synthetic" and MACHINE_KEYS <= set(payload["machine"])
    (r,) = payload["results"]
    # per axis ceil((S - p) / s) + 1 windows: 40 → 2, 36 → 2, 20 → 2
    assert [v["windows"] for v in r["per_volume"]] == [8, 8] and payload["all_volume_windows"] == [8] * 20
    assert r["volumes_timed"] == 2 and r["extrapolated"] is True and all(v["seconds"] > 0 for v in r["per_volume"])
    measured = sum(v["seconds"] for v in r["per_volume"])
    assert r["total_s_measured"] == pytest.approx(measured)
    assert r["s_per_window"] == pytest.approx(measured / 16)
    assert r["total_s_all_volumes"] == pytest.approx(measured + r["s_per_window"] * (160 - 16))


def test_cli_values_survive_fire_parsing():
    from fire.parser import DefaultParseValue

    from crln_monai.overrides import cli_value, run_command

    for value in (False, True, [64, 64, 32], 0.01, 3, "$torch.device('cpu')", "$None"):
        assert DefaultParseValue(cli_value(value, quote=False)) == value
        assert DefaultParseValue(run_command("training", ["t.json"], {"k": value})[-1]) == value
    assert DefaultParseValue(run_command("training", ["a.json", "b.json"])[6]) == ["a.json", "b.json"]
    assert DefaultParseValue("false") == "false"  # why cli_value writes False, not false


def test_method_overrides_and_schedule(tmp_path):
    settings = la_accuracy._settings(la_accuracy.parse_args(["--protocol", "cpu"]))
    assert settings["patch_size"] == (64, 64, 32) and settings["train_stride"] == (9, 9, 2)
    assert la_accuracy.iteration_schedule(300) == (20, 15) and la_accuracy.iteration_schedule(2) == (2, 1)
    assert la_accuracy.iteration_schedule(2419) == (20, 120)  # never more than the budget
    sup = la_accuracy.bundle_overrides("supervised", settings, tmp_path, tmp_path / "run", 20, 15)
    assert (sup["use_unlabelled"], sup["use_dim"], sup["use_cps"]) == (False, False, False)
    assert "rectifier_optimizer" not in sup and sup["device"] == "$torch.device('cpu')"  # the bundle handles it
    assert sup["max_epochs"] * sup["epoch_length"] == 300 and sup["rectify_start"] == 75
    full = la_accuracy.bundle_overrides("crln_full", settings, tmp_path, tmp_path / "run", 20, 15)
    assert not {"use_dim", "use_cps", "rectifier_optimizer"} & set(full)
    mt = la_accuracy.bundle_overrides("mean_teacher", settings, tmp_path, tmp_path / "run", 20, 15)
    assert (mt["cutmix"], mt["noise"], mt["use_dim"]) == (False, False, False)
    with pytest.raises(ValueError, match="method must be one of"):
        la_accuracy.bundle_overrides("nope", settings, tmp_path, tmp_path, 1, 1)


@pytest.fixture(scope="module")
def tiny_la(tmp_path_factory):
    """A small synthetic LA-like set in the LA dataset.json format (10 train ids, 2 test ids)."""
    folder = tmp_path_factory.mktemp("tiny_la")
    return make_synthetic_dataset(folder, num_cases=12, num_test=2, shape=(36, 34, 20), seed=1)


def test_write_downsampled_halves_the_grid(tiny_la, tmp_path):
    split = la_accuracy.select_cases(tiny_la, num_unlabelled=1, max_test_cases=1)
    assert [len(split[k]) for k in ("labelled", "unlabelled", "test")] == [8, 1, 1]
    out = la_accuracy.write_downsampled(split, tmp_path / "f2", factor=2)
    meta = _read(out / "dataset.json")
    assert meta["train_ids"] == [f"case_{i:03d}" for i in range(9)] and meta["test_ids"] == ["case_010"]
    original = nib.load(split["labelled"][0]["label"])
    small = nib.load(out / "labelsTr" / "case_000.nii.gz")
    assert small.shape == (18, 17, 10)
    np.testing.assert_allclose(small.header.get_zooms()[:3], np.array(original.header.get_zooms()[:3]) * 2)
    # label = majority of each 2x2x2 block
    block = np.asarray(original.dataobj, dtype=np.float32).reshape(18, 2, 17, 2, 10, 2).mean((1, 3, 5))
    np.testing.assert_array_equal(np.asarray(small.dataobj), (block >= 0.5).astype(np.uint8))
    # the coarse voxel centre sits between the two original centres it covers
    np.testing.assert_allclose(small.affine[:3, 3], original.affine[:3, 3] + 0.5 * np.diag(original.affine)[:3])


def test_copy_subset_respects_the_size_cap(tiny_la, tmp_path):
    split = la_accuracy.select_cases(tiny_la, num_unlabelled=2, max_test_cases=None)
    sizes = {c["case"]: la_accuracy._case_mib(c) for group in split.values() for c in group}
    needed = sum(sizes[c["case"]] for c in split["labelled"] + split["test"])
    first_unlabelled = sizes[split["unlabelled"][0]["case"]]
    out, kept, size = la_accuracy.copy_subset(split, tmp_path / "subset", max_mib=needed + first_unlabelled * 1.5)
    assert [c["case"] for c in kept["unlabelled"]] == ["case_008"]  # the second one does not fit
    assert size == pytest.approx(needed + first_unlabelled)
    assert len(list((out / "imagesTr").iterdir())) == 8 + 1 + 2
    with pytest.raises(ValueError, match="max_subset_mib"):
        la_accuracy.copy_subset(split, tmp_path / "small", max_mib=needed / 2)


@pytest.mark.slow
def test_la_accuracy_tiny_cpu_run(tmp_path, tiny_la):
    """Two iterations of ``crln_dim`` through the bundle subprocess, scored on two test cases at the original grid."""
    real = la_accuracy.DEFAULT_DATA_DIR
    data_dir = real if (real / "dataset.json").is_file() else tiny_la
    out = tmp_path / "la.json"
    argv = ["--protocol", "cpu", "--data_dir", str(data_dir), "--work_dir", str(tmp_path / "work"), "--out", str(out),
            "--iterations", "2", "--max_test_cases", "2", "--num_unlabelled", "2", "--methods", "crln_dim",
            "--patch_size", "32", "32", "16", "--eval_stride", "32", "32", "16", "--probe_iterations", "0"]  # fmt: skip
    payload = la_accuracy.main(argv)
    written = _read(out)
    assert written["protocol"] == "cpu" and MACHINE_KEYS <= set(written["machine"])
    assert written["settings"]["iterations"] == 2
    (row,) = written["results"]
    assert row["method"] == "crln_dim" and row["iterations"] == 2 and row["train_seconds"] > 0
    assert row["paper_la8"]["dice"] == 89.87 and "--use_cps False" in row["train_command"]
    metrics = row["summary"]["metrics"]
    assert {"dice", "jaccard", "hd95_voxel", "asd_voxel", "hd95_mm", "asd_mm"} <= set(metrics)
    assert 0.0 <= metrics["dice"]["mean"] <= 1.0 and row["summary"]["num_cases"] == 2
    # the checkpoint is the crln_dim network: a DIM, no projection head (False reached the bundle as a bool)
    state = torch.load(row["checkpoint"], map_location="cpu", weights_only=True)["model"]  # beside it: the settings
    assert any(k.startswith("dim.") for k in state) and not any(k.startswith("projection.") for k in state)
    # scored against the ORIGINAL labels: hd95 in mm = hd95 in voxels x 0.625 (isotropic original grid)
    with open(Path(row["report_dir"]) / "per_case.csv") as f:
        cases = list(csv.DictReader(f))
    assert [c["case"] for c in cases] == payload["data"]["cases"]["test"]
    assert [r["case"] for r in row["per_case"]] == [c["case"] for c in cases] and row["seed"] == 0
    for record, c in zip(row["per_case"], cases):  # the JSON holds the per-case metrics of the report
        assert record["voxel"]["dice"] == pytest.approx(float(c["dice"]), abs=1e-6)
    for c in cases:
        if c["hd95_voxel"] and float(c["hd95_voxel"]) > 0:
            assert float(c["hd95_mm"]) == pytest.approx(0.625 * float(c["hd95_voxel"]), rel=1e-4)
    markdown = out.with_suffix(".md").read_text()
    assert "| crln_dim | cpu | 2 |" in markdown and "89.87" in markdown


def test_channels_last_variant_converts_weights_and_batches_once():
    conv = torch.nn.Conv3d(1, 2, 3)
    module, batch, other = benchmark_speed.to_channels_last(conv, {"image": torch.rand(2, 3, 4, 4, 4), "n": 1}, 7)
    assert module is conv and conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last_3d) and batch["n"] == 1 and other == 7
    assert not batch["image"].is_contiguous()  # really NDHWC, not a plain copy
    assert {v["channels_last"] for v in benchmark_speed.VARIANTS.values()} == {False, True}
