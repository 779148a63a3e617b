"""Evaluation report files: ``per_case.csv``, ``summary.json`` and ``summary.md`` (METHOD §4, A14).

Per-case record format (what :func:`case_record` builds and :func:`write_evaluation_report` reads)::

    {"case": "case_id",
     "voxel": {"dice", "jaccard", "hd95", "asd", "empty_prediction", "empty_reference"},   # voxel units
     "mm":    {... same keys ...} or None}                                                  # millimetres

Dice and Jaccard are fractions in the records and CSV, and percentages in ``summary.md``; they are
taken from ``"voxel"`` (they do not depend on spacing). Summary statistics are the authors' case
bootstrap (:func:`crln_monai.evaluation.metrics.bootstrap`): mean ± std of resample nan-means.
Empty predictions score 0 on all four metrics (authors' convention) and are counted and listed.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crln_monai.evaluation.metrics import METRIC_NAMES, bootstrap, segmentation_metrics

__all__ = ["SUMMARY_METRICS", "case_record", "write_evaluation_report"]

_FLAGS = ("empty_prediction", "empty_reference")
#: summary/CSV column -> (unit block of the record, metric name)
SUMMARY_METRICS: dict[str, tuple[str, str]] = {
    "dice": ("voxel", "dice"),
    "jaccard": ("voxel", "jaccard"),
    "hd95_voxel": ("voxel", "hd95"),
    "asd_voxel": ("voxel", "asd"),
    "hd95_mm": ("mm", "hd95"),
    "asd_mm": ("mm", "asd"),
}


def case_record(
    case: str,
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
) -> dict[str, Any]:
    """One per-case record: metrics in voxels, and in mm when ``spacing`` is given (else ``"mm": None``).

    Args:
        case: case identifier.
        pred: binary prediction ``(H, W, D)``.
        label: binary reference ``(H, W, D)``.
        spacing: voxel size in mm per axis, or None.

    Returns:
        ``{"case", "voxel", "mm"}`` as described in the module docstring.
    """
    voxel = segmentation_metrics(pred, label)
    mm = segmentation_metrics(pred, label, spacing) if spacing is not None else None
    return {"case": str(case), "voxel": voxel, "mm": mm}


def _validate(per_case: Sequence[dict[str, Any]]) -> None:
    if len(per_case) == 0:
        raise ValueError("per_case must hold at least one case record")
    seen: set[str] = set()
    for i, record in enumerate(per_case):
        if not isinstance(record, dict) or "case" not in record or "voxel" not in record:
            raise ValueError(
                f"per_case[{i}] must be a dict with keys 'case', 'voxel' and optional 'mm', got {record!r}"
            )
        case = str(record["case"])
        if case in seen:
            raise ValueError(f"per_case has the case id {case!r} twice")
        seen.add(case)
        for unit in ("voxel", "mm"):
            block = record.get(unit)
            if block is None and unit == "mm":
                continue
            missing = [k for k in (*METRIC_NAMES, *_FLAGS) if k not in (block or {})]
            if missing:
                raise ValueError(f"per_case[{i}] (case {case!r}) '{unit}' lacks keys {missing}")


def _value(record: dict[str, Any], unit: str, metric: str) -> float:
    block = record.get(unit)
    return float("nan") if block is None else float(block[metric])


def _json_number(x: float) -> float | None:
    """NaN/inf are not JSON; write them as null."""
    return None if not math.isfinite(x) else x


def _mean_std_cell(stats: dict[str, float | None], scale: float) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean'] * scale:.2f} ± {(stats['std'] or 0.0) * scale:.2f}"


def write_evaluation_report(
    per_case: Sequence[dict[str, Any]],
    out_dir: str | Path,
    title: str,
    checkpoint: str,
    spacing_note: str = "",
    num_resamples: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``per_case.csv``, ``summary.json`` and ``summary.md`` into ``out_dir`` (created if needed).

    ``per_case.csv`` columns: ``case, dice, jaccard, hd95_voxel, asd_voxel, hd95_mm, asd_mm,
    empty_prediction, empty_reference`` (fractions; NaN or no mm block → empty cell).

    Args:
        per_case: case records (module docstring format).
        out_dir: output folder.
        title: report title (Markdown heading and JSON ``title``).
        checkpoint: checkpoint the predictions came from (e.g. ``"model_last.pt"``).
        spacing_note: free text on the spacing used for the mm columns.
        num_resamples: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        The summary dict written to ``summary.json``: ``title, checkpoint, spacing_note, num_cases,
        num_empty_predictions, num_empty_references, empty_prediction_cases, empty_reference_cases,
        bootstrap {num_resamples, seed}, metrics {name: {mean, std, case_mean}}`` with metric names
        from :data:`SUMMARY_METRICS` (fractions for dice/jaccard; null where no value exists).

    Raises:
        ValueError: if ``per_case`` is empty, malformed or repeats a case id.
    """
    _validate(per_case)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    columns = {name: [_value(r, unit, m) for r in per_case] for name, (unit, m) in SUMMARY_METRICS.items()}
    empty_pred = [str(r["case"]) for r in per_case if r["voxel"]["empty_prediction"]]
    empty_ref = [str(r["case"]) for r in per_case if r["voxel"]["empty_reference"]]

    with open(out / "per_case.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", *SUMMARY_METRICS, *_FLAGS])
        for i, record in enumerate(per_case):
            values = ["" if math.isnan(columns[name][i]) else f"{columns[name][i]:.6f}" for name in SUMMARY_METRICS]
            writer.writerow([record["case"], *values, *(int(bool(record["voxel"][k])) for k in _FLAGS)])

    metrics: dict[str, dict[str, float | None]] = {}
    for name, values in columns.items():
        arr = np.asarray(values, dtype=np.float64)
        mean, std = bootstrap(arr, num_resamples=num_resamples, seed=seed)
        case_mean = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
        metrics[name] = {"mean": _json_number(mean), "std": _json_number(std), "case_mean": _json_number(case_mean)}

    summary: dict[str, Any] = {
        "title": title,
        "checkpoint": checkpoint,
        "spacing_note": spacing_note,
        "num_cases": len(per_case),
        "num_empty_predictions": len(empty_pred),
        "num_empty_references": len(empty_ref),
        "empty_prediction_cases": empty_pred,
        "empty_reference_cases": empty_ref,
        "bootstrap": {"num_resamples": int(num_resamples), "seed": int(seed)},
        "metrics": metrics,
    }
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)

    header = "| Dice (%) | Jaccard (%) | HD95 (voxel) | ASD (voxel) | HD95 (mm) | ASD (mm) |"
    cells = [_mean_std_cell(metrics[name], 100.0 if name in ("dice", "jaccard") else 1.0) for name in SUMMARY_METRICS]
    empty_pred_note = f" ({', '.join(empty_pred)}; scored 0 on all metrics)" if empty_pred else ""
    empty_ref_note = f" ({', '.join(empty_ref)}; HD95/ASD undefined, excluded)" if empty_ref else ""
    lines = [
        f"# {title}",
        "",
        f"- checkpoint: `{checkpoint}`",
        f"- cases: {len(per_case)}; bootstrap: {num_resamples} resamples of the cases, seed {seed} "
        "(mean ± std of resample means)",
        f"- empty predictions: {len(empty_pred)}{empty_pred_note}",
        f"- empty references: {len(empty_ref)}{empty_ref_note}",
        "- HD95: 95th percentile of pooled surface distances (medpy); "
        "ASD: mean prediction→reference distance (medpy `asd`)",
    ]
    if spacing_note:
        lines.append(f"- spacing: {spacing_note}")
    lines += ["", header, "|" + "---|" * len(SUMMARY_METRICS), "| " + " | ".join(cells) + " |", ""]
    (out / "summary.md").write_text("\n".join(lines))
    return summary
