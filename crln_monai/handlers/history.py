"""Scalar history of a training run as ``history.csv`` and a figure of curves (the logs and TensorBoard are MONAI's)."""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from ..engines.outputs import TRAINING_SCALARS
from ..io import atomic_write
from .run_start import on_run_start
from .scalars import host_scalars

__all__ = ["TrainingHistory", "plot_training_curves", "read_history"]

logger = logging.getLogger(__name__)
#: ``history.csv`` column order
COLUMNS = ("iteration", "epoch", *TRAINING_SCALARS, "lr")


class TrainingHistory:
    """Every ``interval`` iterations, record the trainer's scalars and learning rate; keep them as a CSV and a figure.

    The scalars come from :func:`~crln_monai.handlers.host_scalars` (shared with ``StatsHandler`` and
    ``TensorBoardStatsHandler`` at the same interval: one host sync per record). ``<output_dir>/history.csv`` is
    rewritten atomically at every epoch end and ``<output_dir>/training_curves.png`` drawn when training ends:
    MONAI's handlers write logs and TensorBoard events, but no table a script can read back or a figure of the
    whole run.

    A resumed run continues the history: when its first epoch starts (after the checkpoint loader restored the
    trainer) the rows up to the restored iteration are kept (read back from ``history.csv`` when this object has
    none in memory) and later ones dropped, so the CSV and the figure cover the whole run once. A fresh run
    (iteration 0) starts an empty history whatever ``history.csv`` held.

    With a ``validator`` (the run's validation evaluator), each validation's key metric (``val_mean_dice``) is
    recorded too, in the row of the trainer's iteration at which it ran, so the CSV and the figure show the
    validation curve beside the losses; an evaluator that never runs (no validation cases) records nothing.

    Args:
        output_dir: folder for ``history.csv`` and the figure; ``None`` keeps the history in memory only.
        interval: iterations between records.
        validator: the validation evaluator, or ``None``.
    """

    def __init__(
        self, output_dir: str | os.PathLike | None = None, interval: int = 20, validator: Engine | None = None
    ) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.interval = max(1, int(interval))
        self.validator = validator
        self.rows: list[dict[str, float]] = []

    def attach(self, engine: Engine) -> None:
        on_run_start(engine, self.continue_from)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self.record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_csv)
        engine.add_event_handler(Events.COMPLETED, self.finish)
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self.record_validation, engine)

    def record_validation(self, validator: Engine, trainer: Engine) -> None:
        """Put the validator's metrics (``val_mean_dice``) into the row of the trainer's current iteration."""
        iteration = float(trainer.state.iteration)
        row = next((r for r in reversed(self.rows) if r["iteration"] == iteration), None)
        if row is None:
            row = {"iteration": iteration, "epoch": float(trainer.state.epoch)}
            self.rows.append(row)
        row.update({k: float(v) for k, v in validator.state.metrics.items() if isinstance(v, (int, float))})

    def continue_from(self, iteration: int) -> None:
        """Keep the rows recorded up to ``iteration`` (from memory, else from ``history.csv``); drop the others."""
        if iteration > 0 and not self.rows and self.output_dir is not None:
            self.rows = read_history(self.output_dir / "history.csv")
        self.rows = [row for row in self.rows if row["iteration"] <= iteration] if iteration > 0 else []
        last = int(self.rows[-1]["iteration"]) if self.rows else 0
        if iteration > 0:
            if last + self.interval <= iteration:
                logger.warning(f"history: resuming at iteration {iteration}, the recorded history ends at {last}")
            logger.info(f"history: continuing at iteration {iteration} with {len(self.rows)} earlier rows")

    def record(self, engine: Engine) -> None:
        row = {"iteration": float(engine.state.iteration), "epoch": float(engine.state.epoch)}
        if isinstance(engine.state.output, dict):
            row.update(host_scalars(engine.state.output))
        if hasattr(engine, "optimizer"):
            row["lr"] = float(engine.optimizer.param_groups[0]["lr"])
        self.rows.append(row)

    def write_csv(self, engine: Engine | None = None) -> Path | None:
        if self.output_dir is None or not self.rows:
            return None
        keys = sorted({k for row in self.rows for k in row}, key=lambda k: ((COLUMNS + (k,)).index(k), k))

        def write(f: Any) -> None:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)

        return atomic_write(self.output_dir / "history.csv", write, mode="w", newline="")

    def finish(self, engine: Engine | None = None) -> None:
        self.write_csv()
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
    """Curves of the loss terms, μ, the confident share, the pseudo-label Dice and the validation Dice, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "losses": ("loss", "loss_sup", "loss_relation", "loss_u", "loss_cp", "loss_mu"),
        "rectification weight mu": ("mu",),
        "confident pseudo-label voxels": ("confident_share", "confident_share_rectified"),
        "pseudo-label Dice vs labels on disk": ("pseudo_label_dice", "pseudo_label_dice_rectified"),
        "validation": ("val_mean_dice",),
    }
    it = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(axes, panels.items()):
        for key in keys:
            points = [(x, r[key]) for x, r in zip(it, rows) if not math.isnan(r.get(key, math.nan))]
            if points:
                ax.plot(*zip(*points), label=key, marker="o" if len(points) < len(it) / 2 else None)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(path)
