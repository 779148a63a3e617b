"""Scalar history of a training run: logged lines, TensorBoard scalars, a CSV and curve figures."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from ..engines.outputs import TRAINING_SCALARS
from .checkpoint import atomic_write

__all__ = ["TrainingHistory", "plot_training_curves", "read_history"]

SCALARS = TRAINING_SCALARS
"""The scalars of SemiSupervisedTrainer's output that are recorded, in column order."""


class TrainingHistory:
    """Every ``interval`` iterations, read the trainer's scalar outputs (the only host sync of training).

    Records them with the learning rates in memory; logs one line; writes them to TensorBoard when
    ``log_dir`` is given (and tensorboard is installed); rewrites ``<output_dir>/history.csv`` (atomically) at every
    epoch end; draws ``<output_dir>/training_curves.png`` when training ends.

    A resumed run continues the history: when its first epoch starts (after ``CheckpointLoader`` has restored the
    trainer at ``STARTED``) the rows up to the restored iteration are kept (read back from ``history.csv`` when
    this object has none in memory), later ones dropped, and TensorBoard purges the events after that iteration
    (``SummaryWriter(purge_step=iteration + 1)``), so the CSV, the figure and TensorBoard cover the whole run once.
    A fresh run (iteration 0) starts an empty history whatever ``history.csv`` held.

    Args:
        output_dir: folder for ``history.csv`` and the figure; ``None`` keeps the history in memory only.
        interval: iterations between records.
        log_dir: TensorBoard folder, or ``None``.
        name: logger name.
    """

    def __init__(
        self, output_dir: str | os.PathLike | None = None, interval: int = 20, log_dir: str | None = None, name: str = "crln"
    ) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.interval = max(1, int(interval))
        self.log_dir = log_dir
        self.logger = logging.getLogger(name)
        self.rows: list[dict[str, float]] = []
        self._writer: Any = None
        self._purge_step: int | None = None
        self._continued = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._continue_once)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_csv)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def _on_started(self, engine: Engine) -> None:
        self._continued = False

    def _continue_once(self, engine: Engine) -> None:
        if not self._continued:
            self._continued = True
            self.continue_from(int(engine.state.iteration))

    def continue_from(self, iteration: int) -> None:
        """Keep the rows recorded up to ``iteration`` (from memory, else from ``history.csv``); drop the others."""
        if iteration > 0 and not self.rows and self.output_dir is not None:
            self.rows = read_history(self.output_dir / "history.csv")
        self.rows = [row for row in self.rows if row["iteration"] <= iteration] if iteration > 0 else []
        last = int(self.rows[-1]["iteration"]) if self.rows else 0
        if iteration > 0:
            if last + self.interval <= iteration:
                self.logger.warning(f"history: resuming at iteration {iteration}, the recorded history ends at {last}")
            self.logger.info(f"history: continuing at iteration {iteration} with {len(self.rows)} earlier rows")
        self._purge_step = iteration + 1 if iteration > 0 else None
        if self._writer is not None:  # reopen with the purge step of this run
            self._writer.close()
            self._writer = None

    def record(self, engine: Engine) -> None:
        output = engine.state.output if isinstance(engine.state.output, dict) else {}
        row = {"iteration": float(engine.state.iteration), "epoch": float(engine.state.epoch)}
        values = [output[k] for k in SCALARS if k in output]
        floats = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(()) for v in values]).tolist() if values else []
        row.update({k: v for k, v in zip([k for k in SCALARS if k in output], floats)})
        row["lr"] = float(engine.optimizer.param_groups[0]["lr"]) if hasattr(engine, "optimizer") else math.nan
        self.rows.append(row)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("iteration", "epoch") and not math.isnan(v))
        self.logger.info(f"epoch {engine.state.epoch} iteration {engine.state.iteration}: {shown}")
        if self.log_dir is not None:
            self._tensorboard(row)

    def _tensorboard(self, row: dict[str, float]) -> None:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                self.log_dir = None
                return
            self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=self._purge_step)
        for key, value in row.items():
            if key not in ("iteration", "epoch") and not math.isnan(value):
                self._writer.add_scalar(f"train/{key}", value, int(row["iteration"]))

    def write_csv(self, engine: Engine | None = None) -> Path | None:
        if self.output_dir is None or not self.rows:
            return None
        keys = list(dict.fromkeys(k for row in self.rows for k in row))

        def write(f: Any) -> None:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)

        return atomic_write(self.output_dir / "history.csv", write, mode="w", newline="")

    def finish(self, engine: Engine | None = None) -> None:
        self.write_csv()
        if self._writer is not None:
            self._writer.flush()
        if self.output_dir is not None and self.rows:
            plot_training_curves(self.rows, self.output_dir / "training_curves.png")


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``history.csv`` written by :class:`TrainingHistory`, as floats (empty cells left out); no file: []."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for line, raw in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append({k: float(v) for k, v in raw.items() if k is not None and v not in ("", None)})
            except ValueError as error:
                raise ValueError(
                    f"{path}: line {line} is not a row of numbers ({error}); move the file away to start a new history"
                ) from None
            if "iteration" not in rows[-1]:
                raise ValueError(f"{path}: line {line} has no iteration; expected a history written by TrainingHistory")
    return rows


def plot_training_curves(rows: list[dict[str, float]], path: str | os.PathLike) -> Path:
    """Curves of the loss terms, μ, the confident share and the pseudo-label Dice over iterations, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "losses": ("loss", "loss_sup", "loss_relation", "loss_u", "loss_cp", "loss_mu"),
        "rectification weight mu": ("mu",),
        "confident pseudo-label voxels": ("confident_share", "confident_share_rectified"),
        "pseudo-label Dice vs labels on disk": ("pseudo_label_dice", "pseudo_label_dice_rectified"),
    }
    it = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(axes, panels.items()):
        for key in keys:
            ys = [r.get(key, math.nan) for r in rows]
            if any(not math.isnan(y) for y in ys):
                ax.plot(it, ys, label=key)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
