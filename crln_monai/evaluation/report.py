"""Evaluation report files: ``per_case.csv``, ``summary.json`` and ``summary.md``
(docs/method.md#metrics-and-bootstrap, A14).

Per-case record format (what :func:`case_record` builds and the writers read), one per case and class::

    {"case": "case_id",
     "voxel": {"dice", "jaccard", "hd95", "asd", "empty_prediction", "empty_reference"},   # voxel units
     "mm":    {... same keys ...} or None,                                                  # millimetres
     "spacing": [sx, sy, sz] or None}                                                       # optional

Dice and Jaccard are fractions in the records and CSV, and percentages in ``summary.md``; they are
taken from ``"voxel"`` (they do not depend on spacing). Summary statistics are the authors' case
bootstrap (:func:`crln_monai.evaluation.metrics.bootstrap`): mean ± std of resample nan-means.
Empty predictions score 0 on all four metrics, HD95 = ASD = 0 included (authors' convention); they are
counted per class beside the means and listed, so a low HD95 made of empty predictions is visible.

Classes: :func:`write_class_report` takes the records of every foreground class (the same cases, in
the same order) and writes one row per class plus the mean over the foreground classes: each case's
metrics are averaged over the classes first (NaN-mean: a class without a value, e.g. an empty
reference's HD95, is left out), then bootstrapped over the cases like a single class. With one
foreground class the mean is that class, and the files hold what a single-class report always held.

HD95 and ASD in voxels are reported only where every case's spacing is isotropic (or unknown): with
anisotropic voxels (1.5 mm in-plane, 10 mm through-plane) a "voxel" is not one length, so the voxel
cells are left empty and the summary's voxel means are null; the mm columns are the ones to read.

Files are written to a temporary folder inside the output folder and moved into place once all of them are
complete (:func:`staged_report`), so a failure while writing leaves the previous report as it was.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crln_monai.evaluation.metrics import METRIC_NAMES, bootstrap, segmentation_metrics
from crln_monai.io import staged_folder

__all__ = [
    "SUMMARY_METRICS",
    "case_record",
    "is_isotropic",
    "staged_report",
    "write_class_report",
    "write_evaluation_report",
]

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
_VOXEL_DISTANCES = ("hd95_voxel", "asd_voxel")
_HEADINGS = {
    "dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95_voxel": "HD95 (voxel)", "asd_voxel": "ASD (voxel)",
    "hd95_mm": "HD95 (mm)", "asd_mm": "ASD (mm)",
}  # fmt: skip
#: name of the mean row of summary.md
MEAN_ROW = "mean (foreground)"
#: relative tolerance under which a spacing counts as isotropic
ISOTROPY_TOLERANCE = 1e-3


def is_isotropic(spacing: Sequence[float] | None) -> bool:
    """True when ``spacing`` is None (unknown: voxels are the only unit there is) or all its values agree within
    :data:`ISOTROPY_TOLERANCE` (relative)."""
    if spacing is None:
        return True
    values = [float(s) for s in spacing]
    return max(values) - min(values) <= ISOTROPY_TOLERANCE * max(values)


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
        ``{"case", "voxel", "mm", "spacing"}`` as described in the module docstring.
    """
    voxel = segmentation_metrics(pred, label)
    mm = segmentation_metrics(pred, label, spacing) if spacing is not None else None
    return {"case": str(case), "voxel": voxel, "mm": mm, "spacing": None if spacing is None else [float(s) for s in spacing]}


def _validate(per_case: Sequence[dict[str, Any]], where: str = "per_case") -> None:
    if len(per_case) == 0:
        raise ValueError(f"{where} must hold at least one case record")
    seen: set[str] = set()
    for i, record in enumerate(per_case):
        if not isinstance(record, dict) or "case" not in record or "voxel" not in record:
            raise ValueError(
                f"{where}[{i}] must be a dict with keys 'case', 'voxel' and optional 'mm', got {record!r}"
            )
        case = str(record["case"])
        if case in seen:
            raise ValueError(f"{where} has the case id {case!r} twice")
        seen.add(case)
        for unit in ("voxel", "mm"):
            block = record.get(unit)
            if block is None and unit == "mm":
                continue
            missing = [k for k in (*METRIC_NAMES, *_FLAGS) if k not in (block or {})]
            if missing:
                raise ValueError(f"{where}[{i}] (case {case!r}) '{unit}' lacks keys {missing}")


def _validate_classes(per_class: Mapping[str, Sequence[dict[str, Any]]]) -> list[str]:
    """Check every class's records; all classes must list the same cases in the same order. Returns the ids."""
    if len(per_class) == 0:
        raise ValueError("per_class must hold at least one foreground class, got none")
    cases: list[str] | None = None
    first = ""
    for name, records in per_class.items():
        _validate(records, where=f"per_class[{name!r}]")
        ids = [str(r["case"]) for r in records]
        if cases is None:
            cases, first = ids, name
        elif ids != cases:
            raise ValueError(
                f"per_class[{name!r}] lists the cases {ids[:5]}..., expected the cases of {first!r} in the same "
                f"order ({cases[:5]}...)"
            )
    assert cases is not None
    return cases


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


def _columns(records: Sequence[dict[str, Any]], voxel_distances: bool) -> dict[str, np.ndarray]:
    """Metric name -> ``(num_cases,)`` values; the voxel distances all NaN unless ``voxel_distances``."""
    columns = {}
    for name, (unit, metric) in SUMMARY_METRICS.items():
        values = [_value(r, unit, metric) for r in records]
        if name in _VOXEL_DISTANCES and not voxel_distances:
            values = [float("nan")] * len(values)
        columns[name] = np.asarray(values, dtype=np.float64)
    return columns


def _statistics(columns: Mapping[str, np.ndarray], num_resamples: int, seed: int) -> dict[str, dict[str, float | None]]:
    metrics: dict[str, dict[str, float | None]] = {}
    for name, arr in columns.items():
        mean, std = bootstrap(arr, num_resamples=num_resamples, seed=seed)
        case_mean = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
        metrics[name] = {"mean": _json_number(mean), "std": _json_number(std), "case_mean": _json_number(case_mean)}
    return metrics


def _nanmean_rows(stack: np.ndarray) -> np.ndarray:
    """``(num_classes, num_cases)`` → ``(num_cases,)`` NaN-mean over the classes (NaN where all are NaN)."""
    counts = np.isfinite(stack).sum(0)
    sums = np.where(np.isfinite(stack), stack, 0.0).sum(0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def staged_report(out_dir: str | os.PathLike, stale: Sequence[str] = ()) -> contextlib.AbstractContextManager[Path]:
    """A temporary folder inside ``out_dir`` to write report files into; moved into place when the block succeeds
    (:func:`crln_monai.io.staged_folder`, ``summary.json`` last, so its presence marks a complete report).

    On failure nothing in ``out_dir`` changes. On success files of ``out_dir`` matching a ``stale`` glob pattern
    that the new report did not write are removed (e.g. the figure of a class that no longer exists).

    Args:
        out_dir: the report folder (created if needed).
        stale: glob patterns of earlier report files to remove when the new report does not rewrite them.

    Returns:
        the context manager; it yields the temporary folder (``out_dir/.report-*.tmp``).
    """
    return staged_folder(out_dir, "report", last=("summary.json",), stale=stale)


def write_class_report(
    per_class: Mapping[str, Sequence[dict[str, Any]]],
    out_dir: str | Path,
    title: str,
    checkpoint: str,
    spacing_note: str = "",
    num_resamples: int = 100,
    seed: int = 0,
    method: str | None = None,
) -> dict[str, Any]:
    """Write ``per_case.csv``, ``summary.json`` and ``summary.md`` for one or more foreground classes.

    ``per_case.csv`` has one row per case and class (case-major): ``case, class, dice, jaccard, hd95_voxel,
    asd_voxel, hd95_mm, asd_mm, empty_prediction, empty_reference`` (fractions; NaN, no mm block, or
    voxel distances when a case's spacing is anisotropic → empty cell). ``summary.md`` has one row per class and, with more than one
    class, a row :data:`MEAN_ROW`; each row ends with the class's count of empty predictions.

    Args:
        per_class: foreground class name → its case records (module docstring format), in label order
            (the first is label 1); every class lists the same cases in the same order.
        out_dir: output folder (written through :func:`staged_report`).
        title: report title (Markdown heading and JSON ``title``).
        checkpoint: checkpoint the predictions came from (e.g. ``"model_last.pt"``).
        spacing_note: free text on the spacing used for the mm columns.
        num_resamples: bootstrap resamples.
        seed: bootstrap seed.
        method: the trained method (e.g. :func:`~crln_monai.evaluation.method_name`), stated when given.

    Returns:
        The summary dict written to ``summary.json``: ``title, method, checkpoint, spacing_note, num_cases,
        class_names, voxel_distances, num_empty_predictions, num_empty_references, empty_prediction_cases,
        empty_reference_cases, bootstrap {num_resamples, seed}, metrics {name: {mean, std, case_mean}},
        classes {name: {label, num_empty_predictions, num_empty_references, empty_prediction_cases,
        empty_reference_cases, metrics}}``. Top-level ``metrics`` is the mean over the foreground classes;
        top-level counts are (case, class) pairs over all classes and the case lists name every case with an
        empty mask in at least one class (with one class: exactly that class's). Metric names are those of
        :data:`SUMMARY_METRICS` (fractions for dice/jaccard; null where no value exists).

    Raises:
        ValueError: if there is no class, a class has no case, a record is malformed, a case id repeats or
            the classes list different cases.
    """
    cases = _validate_classes(per_class)
    names = list(per_class)
    all_records = [r for records in per_class.values() for r in records]
    anisotropic = [(str(r["case"]), r["spacing"]) for r in all_records if not is_isotropic(r.get("spacing"))]
    voxel_distances = not anisotropic

    class_columns = {name: _columns(records, voxel_distances) for name, records in per_class.items()}
    mean_columns = {
        metric: _nanmean_rows(np.stack([class_columns[name][metric] for name in names])) for metric in SUMMARY_METRICS
    }
    classes: dict[str, dict[str, Any]] = {}
    for label, (name, records) in enumerate(per_class.items(), start=1):
        empty_pred = [str(r["case"]) for r in records if r["voxel"]["empty_prediction"]]
        empty_ref = [str(r["case"]) for r in records if r["voxel"]["empty_reference"]]
        classes[name] = {
            "label": label,
            "num_empty_predictions": len(empty_pred),
            "num_empty_references": len(empty_ref),
            "empty_prediction_cases": empty_pred,
            "empty_reference_cases": empty_ref,
            "metrics": _statistics(class_columns[name], num_resamples, seed),
        }
    any_empty_pred = [c for c in cases if any(c in classes[n]["empty_prediction_cases"] for n in names)]
    any_empty_ref = [c for c in cases if any(c in classes[n]["empty_reference_cases"] for n in names)]
    summary: dict[str, Any] = {
        "title": title,
        "method": method,
        "checkpoint": checkpoint,
        "spacing_note": spacing_note,
        "num_cases": len(cases),
        "class_names": names,
        "voxel_distances": voxel_distances,
        "num_empty_predictions": sum(c["num_empty_predictions"] for c in classes.values()),
        "num_empty_references": sum(c["num_empty_references"] for c in classes.values()),
        "empty_prediction_cases": any_empty_pred,
        "empty_reference_cases": any_empty_ref,
        "bootstrap": {"num_resamples": int(num_resamples), "seed": int(seed)},
        "metrics": _statistics(mean_columns, num_resamples, seed),
        "classes": classes,
    }

    with staged_report(out_dir) as stage:
        with open(stage / "per_case.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["case", "class", *SUMMARY_METRICS, *_FLAGS])
            for i, case in enumerate(cases):
                for name in names:
                    record = per_class[name][i]
                    values = [class_columns[name][m][i] for m in SUMMARY_METRICS]
                    cells = ["" if math.isnan(v) else f"{v:.6f}" for v in values]
                    writer.writerow([case, name, *cells, *(int(bool(record["voxel"][k])) for k in _FLAGS)])
        with open(stage / "summary.json", "w") as f:
            json.dump(summary, f, indent=2)
        (stage / "summary.md").write_text(_markdown(summary, anisotropic))
    return summary


def _markdown(summary: dict[str, Any], anisotropic: Sequence[tuple[str, Any]]) -> str:
    classes: dict[str, dict[str, Any]] = summary["classes"]
    columns = [m for m in SUMMARY_METRICS if summary["voxel_distances"] or m not in _VOXEL_DISTANCES]
    nsr, seed = summary["bootstrap"]["num_resamples"], summary["bootstrap"]["seed"]
    lines = [f"# {summary['title']}", ""]
    if summary["method"]:
        lines.append(f"- method: {summary['method']}")
    lines += [
        f"- checkpoint: `{summary['checkpoint']}`",
        f"- cases: {summary['num_cases']}; bootstrap: {nsr} resamples of the cases, seed {seed} "
        "(mean ± std of resample means)",
        "- classes: " + ", ".join(f"{name} (label {c['label']})" for name, c in classes.items()),
    ]
    for key, what, rule in (
        ("empty_prediction_cases", "empty predictions", "scored 0 on all metrics, HD95 = ASD = 0 included in the means"),
        ("empty_reference_cases", "empty references", "HD95/ASD undefined, excluded"),
    ):
        parts = [
            f"{name} {len(c[key])}" + (f" ({', '.join(c[key])})" if c[key] else "") for name, c in classes.items()
        ]
        if len(classes) == 1:
            only = next(iter(classes.values()))[key]
            lines.append(f"- {what}: {len(only)}" + (f" ({', '.join(only)}; {rule})" if only else ""))
        else:
            lines.append(f"- {what} ({rule}): " + "; ".join(parts))
    lines.append(
        "- HD95: 95th percentile of pooled surface distances (medpy); ASD: mean prediction→reference distance (medpy `asd`)"
    )
    if len(classes) > 1:
        lines.append(f"- {MEAN_ROW}: each case's metrics averaged over the foreground classes, then bootstrapped")
    if summary["spacing_note"]:
        lines.append(f"- spacing: {summary['spacing_note']}")
    if anisotropic:
        case, spacing = anisotropic[0]
        shown = " × ".join(f"{s:g}" for s in spacing)
        lines.append(
            f"- HD95/ASD in voxels: not reported, the spacing is anisotropic ({len({c for c, _ in anisotropic})} "
            f"case(s), e.g. {case}: {shown} mm); read the mm columns"
        )
    header = "| class | " + " | ".join(_HEADINGS[m] for m in columns) + " | empty predictions |"
    lines += ["", header, "|" + "---|" * (len(columns) + 2)]
    rows = [(name, c["metrics"], c["num_empty_predictions"]) for name, c in classes.items()]
    if len(classes) > 1:
        rows.append((MEAN_ROW, summary["metrics"], summary["num_empty_predictions"]))
    for name, metrics, empty in rows:
        cells = [_mean_std_cell(metrics[m], 100.0 if m in ("dice", "jaccard") else 1.0) for m in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {empty} |")
    return "\n".join(lines) + "\n"


def write_evaluation_report(
    per_case: Sequence[dict[str, Any]],
    out_dir: str | Path,
    title: str,
    checkpoint: str,
    spacing_note: str = "",
    num_resamples: int = 100,
    seed: int = 0,
    class_name: str = "foreground",
    method: str | None = None,
) -> dict[str, Any]:
    """:func:`write_class_report` of one foreground class: ``per_case.csv``, ``summary.json``, ``summary.md``.

    Args:
        per_case: case records (module docstring format).
        out_dir: output folder.
        title: report title (Markdown heading and JSON ``title``).
        checkpoint: checkpoint the predictions came from (e.g. ``"model_last.pt"``).
        spacing_note: free text on the spacing used for the mm columns.
        num_resamples: bootstrap resamples.
        seed: bootstrap seed.
        class_name: name of the class (the table row and ``per_case.csv``'s ``class`` column).
        method: the trained method, stated when given.

    Returns:
        The summary dict written to ``summary.json`` (see :func:`write_class_report`); its ``metrics`` and counts
        are those of the one class.

    Raises:
        ValueError: if ``per_case`` is empty, malformed or repeats a case id.
    """
    return write_class_report(
        {class_name: per_case}, out_dir, title, checkpoint, spacing_note=spacing_note,
        num_resamples=num_resamples, seed=seed, method=method,
    )  # fmt: skip
