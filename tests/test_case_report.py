"""CaseMetricsReport on an evaluator: one multi-class report, zero test cases refused, failed writes keep the old."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

from crln_monai.handlers import CaseMetricsReport, case_report

NAMES = ["background", "RV", "myocardium", "LV"]
AFFINE = np.diag([1.5, 1.5, 10.0, 1.0])


def _items() -> list[dict]:
    """Two cases of (1, 12, 12, 8) maps; case_1 misses the myocardium entirely."""
    label = np.zeros((12, 12, 8), dtype=np.float32)
    label[1:5, 1:5, 1:4] = 1
    label[6:10, 1:5, 1:4] = 2
    label[1:9, 6:10, 4:7] = 3
    items = []
    for i, drop in enumerate((None, 2)):
        pred = label.copy()
        if drop is not None:
            pred[pred == drop] = 0
        meta = {"affine": torch.as_tensor(AFFINE), "filename_or_obj": f"/data/imagesTs/case_{i}_0000.nii.gz"}
        label_meta = {**meta, "filename_or_obj": f"/data/labelsTs/case_{i}.nii.gz"}
        image = np.random.default_rng(i).random((1, 12, 12, 8)).astype(np.float32)
        items.append({
            "image": MetaTensor(torch.from_numpy(image), meta=dict(meta)),
            "label": MetaTensor(torch.from_numpy(label[None]), meta=label_meta),
            "pred": torch.from_numpy(pred[None]),
        })  # fmt: skip
    return items


def _run(handler: CaseMetricsReport) -> Engine:
    engine = Engine(lambda e, batch: [batch])
    handler.attach(engine)
    engine.run(_items(), max_epochs=1)
    return engine


def test_one_report_with_a_row_per_class_and_a_figure_per_class(tmp_path):
    handler = CaseMetricsReport(tmp_path, num_classes=4, class_names=NAMES, checkpoint="runs/x/model_last.pt",
                                method="mean teacher", num_resamples=5)  # fmt: skip
    _run(handler)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "per_case.csv", "summary.json", "summary.md",
        "best_worst_cases_1_rv.png", "best_worst_cases_2_myocardium.png", "best_worst_cases_3_lv.png",
    }  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["title"] == "mean teacher test evaluation (model_last.pt)" and summary["method"] == "mean teacher"
    assert summary["class_names"] == ["RV", "myocardium", "LV"] and summary["voxel_distances"] is False
    assert summary["classes"]["myocardium"]["empty_prediction_cases"] == ["case_1"]
    assert summary["classes"]["RV"]["metrics"]["dice"]["case_mean"] == 1.0
    assert summary["metrics"]["dice"]["case_mean"] == pytest.approx((1.0 + 2 / 3) / 2)
    with open(tmp_path / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [(c, n) for c in ("case_0", "case_1") for n in NAMES[1:]]
    assert summary == handler.summary


def test_two_classes_keep_the_single_class_layout(tmp_path):
    items = _items()
    for item in items:  # LA-like: one foreground class
        for key in ("label", "pred"):
            item[key] = (item[key] > 0).float()
    handler = CaseMetricsReport(tmp_path, num_classes=2, class_names=["background", "left atrium"], num_resamples=5)
    engine = Engine(lambda e, batch: [batch])
    handler.attach(engine)
    engine.run(items, max_epochs=1)
    assert {p.name for p in tmp_path.iterdir()} == {"per_case.csv", "summary.json", "summary.md", "best_worst_cases.png"}
    summary = handler.summary
    assert summary["title"] == "test evaluation" and summary["class_names"] == ["left atrium"]
    assert summary["metrics"] == summary["classes"]["left atrium"]["metrics"]
    assert "mean (foreground)" not in (tmp_path / "summary.md").read_text()


def test_zero_test_cases_are_refused_before_any_work(tmp_path):
    handler = CaseMetricsReport(tmp_path / "eval", data_source="data/mine/dataset_unlabelled.json")
    with pytest.raises(ValueError, match=r"no test cases: none listed by data/mine/dataset_unlabelled\.json"):
        SupervisedEvaluator(
            device="cpu", val_data_loader=DataLoader(Dataset([]), batch_size=1), network=torch.nn.Identity(),
            val_handlers=[handler],
        )  # fmt: skip
    assert not (tmp_path / "eval").exists()


def test_bad_class_names_are_named(tmp_path):
    with pytest.raises(ValueError, match="class_names must hold 4 distinct names"):
        CaseMetricsReport(tmp_path, num_classes=4, class_names=["background", "a"])


def test_a_failed_evaluation_keeps_the_previous_report(tmp_path, monkeypatch):
    _run(CaseMetricsReport(tmp_path, num_classes=4, class_names=NAMES, num_resamples=5))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    calls = []

    def failing_figure(entries, path, title=""):  # the second figure fails: summary files are already staged
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("figure failed")
        path.write_bytes(b"new figure")
        return path

    monkeypatch.setattr(case_report, "plot_case_overlays", failing_figure)
    handler = CaseMetricsReport(tmp_path, num_classes=4, class_names=NAMES, title="new", num_resamples=5)
    with pytest.raises(RuntimeError, match="figure failed"):
        _run(handler)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bundle_evaluation_without_test_cases_names_the_datalist(tmp_path):
    """``monai.bundle run evaluating`` on a data set whose json lists no test case stops before loading anything."""
    from pathlib import Path

    from monai.bundle import ConfigWorkflow

    from crln_monai.data import make_synthetic_dataset

    configs = Path(__file__).resolve().parents[1] / "bundles" / "la" / "configs"
    data = make_synthetic_dataset(tmp_path / "data", num_cases=4, num_test=0, shape=(24, 24, 16))
    meta = json.loads((Path(data) / "dataset.json").read_text())
    meta.pop("test_ids", None), meta.pop("test", None)
    (Path(data) / "mine.json").write_text(json.dumps(meta))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.md").write_text("previous report")
    wf = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")], logging_file=False,
        meta_file=str(configs / "metadata.json"), run_id="evaluating", bundle_root=str(tmp_path), dataset_dir=str(data),
        datalist_file="mine.json", num_labelled=2, checkpoint=str(tmp_path / "no_checkpoint_needed.pt"),
        patch_size=[16, 16, 16], sw_stride=[8, 8, 8], num_prototypes=2,
    )  # fmt: skip
    wf.initialize()
    with pytest.raises(Exception) as error:
        wf.run()
    chain, e = [], error.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    # one line naming the datalist file (this handler's, or an earlier data check's)
    assert any(str(Path(data) / "mine.json") in m and "test" in m for m in chain), chain
    assert (tmp_path / "eval" / "summary.md").read_text() == "previous report"
    assert not (tmp_path / "eval" / "summary.json").exists()


def test_case_ids_come_from_the_datalist_when_the_batch_carries_them(tmp_path):
    """``la_0012`` looks like a channel suffix: the datalist's id is used as it is, not parsed again."""
    items = _items()
    for item, case in zip(items, ("la_0012", "la_0013")):
        item["case"] = case
    handler = CaseMetricsReport(tmp_path, num_classes=4, class_names=NAMES, num_resamples=5)
    engine = Engine(lambda e, batch: [batch])
    handler.attach(engine)
    engine.run(items, max_epochs=1)
    with open(tmp_path / "per_case.csv", newline="") as f:
        assert sorted({r["case"] for r in csv.DictReader(f)}) == ["la_0012", "la_0013"]
    assert case_report.case_id({"filename_or_obj": "/x/labelsTs/la_0012.nii.gz"}, "f") == "la_0012"
    assert case_report.case_id({}, "case_007") == "case_007"
