"""Evaluator handler: per-case metrics of every test volume, written as a report when the run ends."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import affine_to_spacing

from .figures import central_slices, plot_case_overlays
from .report import case_record, write_evaluation_report

__all__ = ["CaseMetricsReport", "case_id"]


def case_id(meta: dict[str, Any] | None, fallback: str) -> str:
    """Case identifier from a MetaTensor's ``filename_or_obj`` (file name without ``.nii.gz``/``_0000``)."""
    name = (meta or {}).get("filename_or_obj")
    if isinstance(name, (list, tuple)):
        name = name[0]
    if not name:
        return fallback
    path = Path(str(name))
    if path.name == "mri_norm2.h5":  # UA-MT layout: <case>/mri_norm2.h5
        return path.parent.name
    stem = re.sub(r"\.(nii\.gz|nii|nrrd|mha|h5)$", "", path.name)
    return re.sub(r"_0000$", "", stem)


class CaseMetricsReport:
    """Collect Dice, Jaccard, HD95 and ASD (voxels and mm) per case and foreground class; write the report.

    Attach to a MONAI evaluator whose decollated output items hold ``pred`` (a label map ``(1, H, W, D)``,
    i.e. after ``AsDiscreted(argmax=True)``) and ``label`` ``(1, H, W, D)`` with its meta data (for the case
    name and the spacing). When the run completes it writes ``per_case.csv``, ``summary.json`` and
    ``summary.md`` into ``output_dir`` (``output_dir/class_<c>`` for each class when there are more than two
    classes), ``best_worst_cases.png`` (slice overlays of the best and the worst case by Dice) and logs the
    Markdown table. Needs the ``image`` in the output items for the figure (MONAI evaluators keep it).

    Args:
        output_dir: report folder.
        num_classes: classes including background.
        title: report title.
        checkpoint: which checkpoint produced the predictions (stated in the report).
        num_resamples: bootstrap resamples.
        seed: bootstrap seed.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_classes: int = 2,
        title: str = "evaluation",
        checkpoint: str = "",
        num_resamples: int = 100,
        seed: int = 0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.title = title
        self.checkpoint = str(checkpoint)
        self.num_resamples = num_resamples
        self.seed = seed
        self.records: dict[int, list[dict[str, Any]]] = {c: [] for c in range(1, num_classes)}
        self.slices: dict[int, list[dict[str, Any]]] = {c: [] for c in range(1, num_classes)}
        self.summaries: dict[int, dict[str, Any]] = {}
        self.logger = logging.getLogger("crln.evaluation")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.records = {c: [] for c in range(1, self.num_classes)}
        self.slices = {c: [] for c in range(1, self.num_classes)}

    def collect(self, engine: Engine) -> None:
        items = engine.state.output
        items = items if isinstance(items, list) else [items]
        for item in items:
            label = item["label"]
            meta = getattr(label, "meta", None)
            spacing = None
            if meta is not None and "affine" in meta:
                spacing = tuple(float(s) for s in affine_to_spacing(torch.as_tensor(meta["affine"]), r=3))
            name = case_id(meta, fallback=f"case_{len(self.records[1]):03d}")
            pred = _label_map(item["pred"])
            ref = _label_map(label)
            for c in self.records:
                self.records[c].append(case_record(name, pred == c, ref == c, spacing))
                if "image" in item:
                    self.slices[c].append(central_slices(item["image"], ref == c, pred == c))

    def write(self, engine: Engine | None = None) -> dict[int, dict[str, Any]]:
        for c, records in self.records.items():
            if not records:
                continue
            out = self.output_dir if self.num_classes == 2 else self.output_dir / f"class_{c}"
            title = self.title if self.num_classes == 2 else f"{self.title} (class {c})"
            self.summaries[c] = write_evaluation_report(
                records, out, title, self.checkpoint, spacing_note="mm from each volume's affine",
                num_resamples=self.num_resamples, seed=self.seed,
            )  # fmt: skip
            if self.slices[c]:
                order = sorted(range(len(records)), key=lambda i: records[i]["voxel"]["dice"])
                picks = [order[-1], order[0]] if len(order) > 1 else order
                entries = [
                    {"case": records[i]["case"], "dice": records[i]["voxel"]["dice"], **self.slices[c][i]} for i in picks
                ]
                plot_case_overlays(entries, out / "best_worst_cases.png", title=f"{title}: best and worst case")
            per_case = ", ".join(f"{r['case']} {100 * r['voxel']['dice']:.1f}" for r in records)
            self.logger.info(f"Dice per case (%): {per_case}")
            self.logger.info("\n" + (out / "summary.md").read_text())
        return self.summaries


def _label_map(x: Any) -> np.ndarray:
    """``(1, H, W, D)`` or ``(H, W, D)`` tensor/array → integer array ``(H, W, D)``."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else arr.argmax(0)
    return np.rint(arr).astype(np.int64)
