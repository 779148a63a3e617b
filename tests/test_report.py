"""Evaluation report files: per_case.csv, summary.json, summary.md."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from crln_monai.evaluation.metrics import bootstrap
from crln_monai.evaluation.report import SUMMARY_METRICS, case_record, write_evaluation_report


def _cases() -> list[dict]:
    label = np.zeros((12, 12, 8), dtype=bool)
    label[2:10, 2:10, 2:6] = True
    shifted = np.zeros_like(label)
    shifted[3:11, 2:10, 2:6] = True
    spacing = (0.625, 0.625, 2.0)
    return [
        case_record("case_a", label, label, spacing),
        case_record("case_b", shifted, label, spacing),
        case_record("case_empty", np.zeros_like(label), label, spacing),
        case_record("case_voxel_only", shifted, label),  # no spacing: mm block is None
    ]


def test_case_record_units():
    records = _cases()
    b = records[1]
    assert b["case"] == "case_b"
    assert b["voxel"]["dice"] == b["mm"]["dice"]
    # The shift is along axis 0 (0.625 mm): every mm distance along it is 0.625x the voxel one.
    assert b["mm"]["hd95"] == pytest.approx(0.625 * b["voxel"]["hd95"])
    assert records[2]["voxel"]["empty_prediction"] is True
    assert records[3]["mm"] is None


def test_report_files(tmp_path):
    records = _cases()
    summary = write_evaluation_report(
        records, tmp_path / "eval", title="LA 8 labelled", checkpoint="model_last.pt",
        spacing_note="0.625 x 0.625 x 2.0 mm (synthetic)", num_resamples=50, seed=1,
    )
    out = tmp_path / "eval"
    assert {p.name for p in out.iterdir()} == {"per_case.csv", "summary.json", "summary.md"}

    with open(out / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    assert list(rows[0]) == ["case", *SUMMARY_METRICS, "empty_prediction", "empty_reference"]
    assert [r["case"] for r in rows] == ["case_a", "case_b", "case_empty", "case_voxel_only"]
    assert float(rows[1]["dice"]) == pytest.approx(records[1]["voxel"]["dice"], abs=1e-6)
    assert rows[2]["empty_prediction"] == "1" and rows[1]["empty_prediction"] == "0"
    assert rows[3]["hd95_mm"] == "" and rows[3]["hd95_voxel"] != ""

    loaded = json.loads((out / "summary.json").read_text())
    assert loaded == summary
    for key in ("title", "checkpoint", "num_cases", "num_empty_predictions", "num_empty_references", "bootstrap", "metrics"):
        assert key in loaded
    assert loaded["checkpoint"] == "model_last.pt"
    assert loaded["num_cases"] == 4
    assert loaded["num_empty_predictions"] == 1 and loaded["empty_prediction_cases"] == ["case_empty"]
    assert loaded["num_empty_references"] == 0
    assert set(loaded["metrics"]) == set(SUMMARY_METRICS)
    dice = [r["voxel"]["dice"] for r in records]
    assert (loaded["metrics"]["dice"]["mean"], loaded["metrics"]["dice"]["std"]) == pytest.approx(
        bootstrap(dice, num_resamples=50, seed=1)
    )
    assert loaded["metrics"]["dice"]["case_mean"] == pytest.approx(np.mean(dice))
    # The mm column ignores the case without spacing (NaN), not counting it as 0.
    hd95_mm = [r["mm"]["hd95"] for r in records[:3]]
    assert loaded["metrics"]["hd95_mm"]["case_mean"] == pytest.approx(np.mean(hd95_mm))

    md = (out / "summary.md").read_text()
    assert md.startswith("# LA 8 labelled")
    assert "model_last.pt" in md and "case_empty" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "±" in line]
    assert len(table) == 1 and table[0].count("±") == 6
    dice_cell = table[0].split("|")[1].strip()
    assert dice_cell == f"{100 * summary['metrics']['dice']['mean']:.2f} ± {100 * summary['metrics']['dice']['std']:.2f}"


def test_report_nan_metrics_become_null(tmp_path):
    label = np.zeros((8, 8, 8), dtype=bool)
    pred = label.copy()
    pred[2:5, 2:5, 2:5] = True
    summary = write_evaluation_report([case_record("only", pred, label)], tmp_path, "t", "ckpt")
    assert summary["num_empty_references"] == 1
    assert summary["metrics"]["hd95_voxel"]["mean"] is None  # NaN is not JSON
    assert summary["metrics"]["hd95_mm"]["mean"] is None
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["hd95_voxel"]["mean"] is None
    assert "n/a" in (tmp_path / "summary.md").read_text()
    assert not math.isnan(summary["metrics"]["dice"]["mean"])


def test_report_rejects_bad_records(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        write_evaluation_report([], tmp_path, "t", "c")
    record = _cases()[0]
    with pytest.raises(ValueError, match="twice"):
        write_evaluation_report([record, record], tmp_path, "t", "c")
    broken = {"case": "x", "voxel": {"dice": 1.0}}
    with pytest.raises(ValueError, match="lacks keys"):
        write_evaluation_report([broken], tmp_path, "t", "c")
    with pytest.raises(ValueError, match="'case'"):
        write_evaluation_report([{"voxel": record["voxel"]}], tmp_path, "t", "c")
