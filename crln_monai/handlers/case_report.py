"""Evaluator handler: per-case metrics of every test volume, written as a report when the run ends."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import affine_to_spacing

from ..data.datalist import case_id_from_filename
from ..evaluation.figures import central_slices, plot_case_overlays
from ..evaluation.report import case_record, staged_report, write_class_report

__all__ = ["CaseMetricsReport", "case_id"]


def case_id(meta: dict[str, Any] | None, fallback: str, case: Any = None) -> str:
    """The case id of an evaluated item: the datalist's ``case`` when the batch carries it, else the file's name.

    ``case`` is what :func:`~crln_monai.data.semi_supervised_datalist` parsed from the file names (one definition
    of the id); without it the id is the name of the MetaTensor's ``filename_or_obj`` without its ending
    (:func:`~crln_monai.data.datalist.case_id_from_filename`); without a file name, ``fallback``.
    """
    if case:
        return str(case[0] if isinstance(case, (list, tuple)) else case)
    name = (meta or {}).get("filename_or_obj")
    if isinstance(name, (list, tuple)):
        name = name[0]
    return case_id_from_filename(str(name)) if name else fallback


class CaseMetricsReport:
    """Collect Dice, Jaccard, HD95 and ASD (voxels and mm) per case and foreground class; write one report.

    Attach to a MONAI evaluator whose decollated output items hold ``pred`` (a label map ``(1, H, W, D)``,
    i.e. after ``AsDiscreted(argmax=True)``) and ``label`` ``(1, H, W, D)`` with its meta data (for the case
    name and the spacing). When the run completes it writes into ``output_dir``: ``per_case.csv`` (one row per
    case and foreground class), ``summary.json`` and ``summary.md`` (a row per foreground class named by
    ``class_names`` and, with several classes, their mean; see :func:`~crln_monai.evaluation.write_class_report`)
    and one figure per foreground class with the best and the worst case by Dice: ``best_worst_cases.png``
    with one foreground class, ``best_worst_cases_<label>_<name>.png`` with several. It logs the Dice per case
    and the Markdown table. Needs the ``image`` in the output items for the figures (MONAI evaluators keep it).

    All files are written to a temporary folder and moved into place once complete
    (:func:`~crln_monai.evaluation.report.staged_report`): a failed evaluation leaves the previous report whole, and
    the temporary folder of a killed one is removed by the next report.
    An evaluator without test cases is refused when the handler is attached, before any work.

    Args:
        output_dir: report folder.
        num_classes: classes including background.
        title: report title; default ``"<method> test evaluation (<checkpoint file>)"``.
        checkpoint: which checkpoint produced the predictions (stated in the report).
        num_resamples: bootstrap resamples.
        seed: bootstrap seed.
        class_names: a name per class, background first (``num_classes`` names); default ``class 1``, ...
        method: the trained method (:func:`~crln_monai.evaluation.method_name`), stated in the report.
        data_source: where the test cases come from (e.g. the datalist file), named when there are none.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_classes: int = 2,
        title: str | None = None,
        checkpoint: str = "",
        num_resamples: int = 100,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        method: str | None = None,
        data_source: str = "",
    ) -> None:
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"CaseMetricsReport: num_classes must be an integer >= 2, got {num_classes!r}")
        names = ["background", *(f"class {c}" for c in range(1, num_classes))] if class_names is None else list(class_names)
        if len(names) != num_classes or len(set(map(str, names))) != len(names):
            raise ValueError(
                f"CaseMetricsReport: class_names must hold {num_classes} distinct names (background first, one per "
                f"class of num_classes), got {list(names)!r}"
            )
        self.output_dir = Path(output_dir)
        self.num_classes = int(num_classes)
        self.class_names = [str(n) for n in names]
        self.checkpoint = str(checkpoint)
        self.method = method
        if title is None:
            what = f"{method} test evaluation" if method else "test evaluation"
            title = f"{what} ({os.path.basename(self.checkpoint)})" if self.checkpoint else what
        self.title = title
        self.num_resamples = num_resamples
        self.seed = seed
        self.data_source = str(data_source)
        self.records: dict[int, list[dict[str, Any]]] = {c: [] for c in range(1, num_classes)}
        self.slices: dict[int, list[dict[str, Any]]] = {c: [] for c in range(1, num_classes)}
        self.summary: dict[str, Any] = {}
        self.logger = logging.getLogger("crln.evaluation")

    def attach(self, engine: Engine) -> None:
        """Register the handlers; raise ``ValueError`` when the evaluator has no test case (before any work)."""
        loader = getattr(engine, "data_loader", None)
        try:
            num_cases = len(loader) if loader is not None else None  # type: ignore[arg-type]
        except TypeError:  # an iterable without a length: checked again when the report is written
            num_cases = None
        if num_cases == 0 or getattr(engine.state, "epoch_length", None) == 0:
            source = self.data_source or "the evaluator's data loader"
            raise ValueError(
                f"evaluation has no test cases: none listed by {source}; expected at least one (test_ids, a 'test' "
                "list or imagesTs)"
            )
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.records = {c: [] for c in range(1, self.num_classes)}
        self.slices = {c: [] for c in range(1, self.num_classes)}

    def collect(self, engine: Engine) -> None:
        items = engine.state.output
        items = items if isinstance(items, list) else [items]
        batch = engine.state.batch
        batch = batch if isinstance(batch, list) else [batch] * len(items)
        for item, source in zip(items, batch):
            label = item["label"]
            meta = getattr(label, "meta", None)
            spacing = None
            if meta is not None and "affine" in meta:
                spacing = tuple(float(s) for s in affine_to_spacing(torch.as_tensor(meta["affine"]), r=3))
            case = source.get("case") if isinstance(source, dict) else None
            name = case_id(meta, fallback=f"case_{len(self.records[1]):03d}", case=case)
            pred = _label_map(item["pred"])
            ref = _label_map(label)
            for c in self.records:
                self.records[c].append(case_record(name, pred == c, ref == c, spacing))
                if "image" in item:
                    self.slices[c].append(central_slices(item["image"], ref == c, pred == c))

    def figure_name(self, c: int) -> str:
        """File name of class ``c``'s best/worst figure."""
        if self.num_classes == 2:
            return "best_worst_cases.png"
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.class_names[c]).strip("_").lower() or "class"
        return f"best_worst_cases_{c}_{slug}.png"

    def write(self, engine: Engine | None = None) -> dict[str, Any]:
        """Write the report (see the class docstring); returns the summary of ``summary.json``."""
        if not self.records[1]:
            source = self.data_source or "the evaluator's data loader"
            raise ValueError(f"evaluation has no test cases: no case came from {source}; expected at least one")
        per_class = {self.class_names[c]: records for c, records in self.records.items()}
        with staged_report(self.output_dir, stale=("best_worst_cases*.png",)) as stage:
            self.summary = write_class_report(
                per_class, stage, self.title, self.checkpoint, spacing_note="mm from each volume's affine",
                num_resamples=self.num_resamples, seed=self.seed, method=self.method,
            )  # fmt: skip
            for c, records in self.records.items():
                if not self.slices[c]:
                    continue
                order = sorted(range(len(records)), key=lambda i: records[i]["voxel"]["dice"])
                picks = [order[-1], order[0]] if len(order) > 1 else order
                entries = [
                    {"case": records[i]["case"], "dice": records[i]["voxel"]["dice"], **self.slices[c][i]} for i in picks
                ]
                heading = self.title if self.num_classes == 2 else f"{self.title}, {self.class_names[c]}"
                plot_case_overlays(entries, stage / self.figure_name(c), title=f"{heading}: best and worst case")
        for c, records in self.records.items():
            per_case = ", ".join(f"{r['case']} {100 * r['voxel']['dice']:.1f}" for r in records)
            which = "" if self.num_classes == 2 else f", {self.class_names[c]}"
            self.logger.info(f"Dice per case (%){which}: {per_case}")
        self.logger.info("\n" + (self.output_dir / "summary.md").read_text())
        return self.summary


def _label_map(x: Any) -> np.ndarray:
    """``(1, H, W, D)`` or ``(H, W, D)`` tensor/array → integer array ``(H, W, D)``."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else arr.argmax(0)
    return np.rint(arr).astype(np.int64)
