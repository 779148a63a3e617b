"""Evaluation report files: per_case.csv, summary.json, summary.md (one class, several classes, atomic writes)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from crln_monai.evaluation import report
from crln_monai.evaluation.metrics import bootstrap
from crln_monai.evaluation.report import (
    MEAN_ROW,
    SUMMARY_METRICS,
    case_record,
    is_isotropic,
    staged_report,
    write_class_report,
    write_evaluation_report,
)


def _cases() -> list[dict]:
    label = np.zeros((12, 12, 8), dtype=bool)
    label[2:10, 2:10, 2:6] = True
    shifted = np.zeros_like(label)
    shifted[3:11, 2:10, 2:6] = True
    spacing = (0.625, 0.625, 0.625)  # isotropic: the voxel distances are reported
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
        spacing_note="0.625 mm isotropic (synthetic)", num_resamples=50, seed=1, class_name="left atrium",
    )
    out = tmp_path / "eval"
    assert {p.name for p in out.iterdir()} == {"per_case.csv", "summary.json", "summary.md"}

    with open(out / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    assert list(rows[0]) == ["case", "class", *SUMMARY_METRICS, "empty_prediction", "empty_reference"]
    assert {r["class"] for r in rows} == {"left atrium"}
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
    # one class: its row is the mean, and its counts are the report's
    assert loaded["class_names"] == ["left atrium"] and loaded["voxel_distances"] is True
    assert loaded["classes"]["left atrium"]["metrics"] == loaded["metrics"]
    assert loaded["classes"]["left atrium"]["num_empty_predictions"] == 1 and loaded["classes"]["left atrium"]["label"] == 1
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
    assert table[0].startswith("| left atrium |") and table[0].rstrip().endswith("| 1 |")  # empty predictions
    dice_cell = table[0].split("|")[2].strip()
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


# ------------------------------------------------------------------------------ several classes, anisotropic

CLASSES = ("right ventricle", "myocardium", "left ventricle")
ANISOTROPIC = (1.5, 1.5, 10.0)  # mm: cine-MRI-like slices


def _multiclass_maps() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two cases of 3 foreground classes, (12, 12, 8) label maps (pred, label).

    Case a: class 1 exact; class 2 not predicted (empty prediction); class 3 shifted by one slice (+z).
    Case b: class 1 shifted by one voxel along x; classes 2 and 3 exact.
    """
    label = np.zeros((12, 12, 8), dtype=np.int64)
    label[1:5, 1:5, 1:4] = 1  # 48 voxels
    label[6:10, 1:5, 1:4] = 2  # 48 voxels
    label[1:9, 6:10, 4:7] = 3  # 96 voxels
    pred_a = label.copy()
    pred_a[pred_a == 2] = 0
    pred_a[pred_a == 3] = 0
    pred_a[1:9, 6:10, 5:8] = 3
    pred_b = label.copy()
    pred_b[pred_b == 1] = 0
    pred_b[2:6, 1:5, 1:4] = 1
    return {"a": (pred_a, label), "b": (pred_b, label)}


def _multiclass_records(spacing=ANISOTROPIC) -> dict[str, list[dict]]:
    maps = _multiclass_maps()
    return {
        name: [case_record(case, pred == c, label == c, spacing) for case, (pred, label) in maps.items()]
        for c, name in enumerate(CLASSES, start=1)
    }


def test_multiclass_report_rows_mean_and_empty_predictions(tmp_path):
    summary = write_class_report(
        _multiclass_records(), tmp_path, "cardiac", "model_last.pt", num_resamples=20, seed=0, method="CRLN (full)"
    )
    rv, myo, lv = (summary["classes"][n] for n in CLASSES)
    # Dice by hand: a = (1, 0 [empty], 2*64/192), b = (2*36/96, 1, 1)
    assert rv["metrics"]["dice"]["case_mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert myo["metrics"]["dice"]["case_mean"] == pytest.approx(0.5)
    assert lv["metrics"]["dice"]["case_mean"] == pytest.approx((2 / 3 + 1.0) / 2)
    # the mean over the foreground classes: each case's class mean, then over the cases
    assert summary["metrics"]["dice"]["case_mean"] == pytest.approx(((1 + 0 + 2 / 3) / 3 + (0.75 + 1 + 1) / 3) / 2)
    assert (rv["label"], myo["label"], lv["label"]) == (1, 2, 3)
    # empty predictions per class, beside the means
    assert [c["num_empty_predictions"] for c in (rv, myo, lv)] == [0, 1, 0]
    assert myo["empty_prediction_cases"] == ["a"] and summary["num_empty_predictions"] == 1
    assert summary["empty_prediction_cases"] == ["a"] and summary["num_empty_references"] == 0
    # mm with anisotropic voxels. LV of case a (pred one 10 mm slice up): pred surface = bottom cap 32 voxels
    # (20 on the reference's ring, 12 inner ones 1.5 mm from it), ring 20 at 0, top cap 32 at 10 mm.
    lv_a = _multiclass_records()["left ventricle"][0]
    assert lv_a["mm"]["asd"] == pytest.approx((12 * 1.5 + 32 * 10.0) / 84)
    assert lv_a["voxel"]["asd"] == pytest.approx((12 + 32) / 84)  # recorded, but not reported: anisotropic
    # RV of case b: a 1.5 mm shift along x, every surface distance is 0 or 1.5 mm
    assert 0 < summary["classes"]["right ventricle"]["metrics"]["hd95_mm"]["case_mean"] <= 1.5 / 2 + 1e-9
    assert summary["voxel_distances"] is False
    for block in (summary["metrics"], rv["metrics"], myo["metrics"], lv["metrics"]):
        assert block["hd95_voxel"]["mean"] is None and block["asd_voxel"]["mean"] is None
    assert summary["metrics"]["asd_mm"]["case_mean"] == pytest.approx(
        np.mean([np.mean([r[i]["mm"]["asd"] for r in _multiclass_records().values()]) for i in range(2)])
    )

    with open(tmp_path / "per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [(c, n) for c in "ab" for n in CLASSES]
    assert all(r["hd95_voxel"] == "" and r["asd_voxel"] == "" for r in rows)
    assert float(rows[2]["asd_mm"]) == pytest.approx((12 * 1.5 + 32 * 10.0) / 84, abs=1e-6)
    assert rows[1]["empty_prediction"] == "1" and float(rows[1]["dice"]) == 0.0

    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# cardiac") and "- method: CRLN (full)" in md
    assert "HD95 (voxel)" not in md and "anisotropic" in md and "1.5 × 1.5 × 10 mm" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "±" in line]
    assert [line.split("|")[1].strip() for line in table] == [*CLASSES, MEAN_ROW]
    assert all(line.count("±") == 4 for line in table)  # Dice, Jaccard, HD95 mm, ASD mm
    assert [line.split("|")[-2].strip() for line in table] == ["0", "1", "0", "1"]
    assert "myocardium 1 (a)" in md
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_isotropic_multiclass_keeps_voxel_units(tmp_path):
    summary = write_class_report(_multiclass_records(spacing=(2.0, 2.0, 2.0)), tmp_path, "t", "c", num_resamples=5)
    assert summary["voxel_distances"] is True
    assert summary["metrics"]["hd95_voxel"]["mean"] is not None
    lv_a = summary["classes"]["left ventricle"]["metrics"]["asd_mm"]["case_mean"]
    assert lv_a == pytest.approx(2.0 * summary["classes"]["left ventricle"]["metrics"]["asd_voxel"]["case_mean"])
    assert "HD95 (voxel)" in (tmp_path / "summary.md").read_text()
    assert is_isotropic(None) and is_isotropic((0.625, 0.625, 0.6250001)) and not is_isotropic(ANISOTROPIC)


def test_multiclass_report_rejects_mismatched_cases(tmp_path):
    records = _multiclass_records()
    records["myocardium"] = records["myocardium"][::-1]
    with pytest.raises(ValueError, match="per_class\\['myocardium'\\].*same order"):
        write_class_report(records, tmp_path, "t", "c")
    with pytest.raises(ValueError, match="at least one foreground class"):
        write_class_report({}, tmp_path, "t", "c")


# ------------------------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_the_old_report(tmp_path, monkeypatch):
    write_evaluation_report(_cases(), tmp_path, "old", "old.pt", num_resamples=5)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken_dump(*args, **kwargs):  # per_case.csv is already written (staged) when summary.json fails
        raise OSError("disk full")

    monkeypatch.setattr(report.json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        write_class_report(_multiclass_records(), tmp_path, "new", "new.pt", num_resamples=5)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files, no temporary folder left


def test_staged_report_moves_files_and_removes_stale_ones(tmp_path):
    (tmp_path / "best_worst_cases_3_old.png").write_bytes(b"old")
    (tmp_path / "history.csv").write_text("kept")
    with staged_report(tmp_path, stale=("best_worst_cases*.png",)) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".report-")
        (stage / "summary.md").write_text("new")
        (stage / "best_worst_cases_1_a.png").write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_worst_cases_1_a.png", "history.csv", "summary.md"]
