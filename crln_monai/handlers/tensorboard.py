"""One TensorBoard writer for a training run and its validations, continued without duplicates on resume."""

from __future__ import annotations

import logging
import os
from typing import Any

from ignite.engine import Engine, Events

from .run_start import on_run_start

__all__ = ["RunSummaryWriter"]

logger = logging.getLogger(__name__)


class RunSummaryWriter:
    """A ``SummaryWriter`` opened at the first write, with ``purge_step`` set from where the run starts.

    Give it as ``summary_writer`` to MONAI's ``TensorBoardStatsHandler`` on the trainer (training scalars) and on
    the evaluator (validation metrics), and attach it to the trainer. A resumed run (restored at iteration ``i``)
    opens ``SummaryWriter(log_dir, purge_step=i + 1)``, so TensorBoard drops the events a killed run wrote after
    the resume point and the curves hold each step once; a fresh run opens it with ``purge_step=1``, so the events
    of an earlier run it replaces (``--overwrite True``) are dropped too. MONAI's handler builds its writer when the config is
    parsed, before the resume point is known, which is why this one opens late. Without the ``tensorboard``
    package it logs one warning and writes nothing (it is an optional extra).

    Args:
        log_dir: the event folder.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir = str(log_dir)
        self._writer: Any = None
        self._purge_step: int | None = None
        self._unavailable = False

    def attach(self, engine: Engine) -> None:
        on_run_start(engine, self.continue_from)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.close())

    def continue_from(self, iteration: int) -> None:
        """Write the next events after ``iteration`` (0: a fresh run); reopens an open writer."""
        self.close()
        self._purge_step = iteration + 1

    def _open(self) -> Any:
        if self._writer is None and not self._unavailable:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._unavailable = True
                logger.warning("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
                return None
            self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=self._purge_step)
        return self._writer

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        writer = self._open()
        if writer is not None:
            writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
