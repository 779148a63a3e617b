"""Atomic checkpoint writes: a crash or a full disk never leaves a half-written checkpoint behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

__all__ = ["AtomicCheckpointSaver", "atomic_save"]


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place.

    MONAI's ``CheckpointSaver`` writes with ``atomic=False`` (its source says so, for file permissions), so an
    interrupted write can destroy the previous checkpoint; this is the small piece it lacks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class AtomicCheckpointSaver:
    """Save objects with ``state_dict()`` to one file, atomically, on a schedule.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: name → object with ``state_dict()`` (network, optimiser, scheduler, trainer, EMA, ...).
            With a single object the file holds its plain state dict (the model-zoo ``model.pt`` format);
            otherwise ``{name: state_dict}``, which MONAI's ``CheckpointLoader`` reads back.
        filename: file name inside ``save_dir``.
        every_n_epochs: save at every n-th ``EPOCH_COMPLETED`` (0: never on epochs).
        every_n_iterations: save at every n-th ``ITERATION_COMPLETED`` (0: never on iterations).
        save_final: save at ``COMPLETED`` too.
        best_only: attach to an evaluator instead and save when its key metric has just improved
            (``state.best_metric_epoch == state.epoch``): the "best" checkpoint.
        save_rank: under ``torch.distributed``, the only rank that writes. Attach the saver on every rank all
            the same: its trainer-side call runs ``engine.check_finite()``, a collective under DDP.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str,
        every_n_epochs: int = 1,
        every_n_iterations: int = 0,
        save_final: bool = True,
        best_only: bool = False,
        save_rank: int = 0,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.every_n_epochs = every_n_epochs
        self.every_n_iterations = every_n_iterations
        self.save_final = save_final
        self.best_only = best_only
        self.save_rank = save_rank

    def attach(self, engine: Engine) -> None:
        if self.best_only:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_if_best)
            return
        if self.every_n_epochs:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)
        if self.every_n_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)
        if self.save_final:
            engine.add_event_handler(Events.COMPLETED, self)

    def _save_if_best(self, engine: Engine) -> None:
        if getattr(engine.state, "best_metric_epoch", -1) == engine.state.epoch:
            self.save()

    def __call__(self, engine: Engine) -> None:
        if hasattr(engine, "check_finite"):  # never write the weights of a diverged run
            engine.check_finite()
        self.save()

    def save(self) -> Path | None:
        """Write the checkpoint; returns its path, or ``None`` on a rank other than ``save_rank``."""
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != self.save_rank:
            return None
        states = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        return atomic_save(next(iter(states.values())) if len(states) == 1 else states, self.path)
