"""Atomic checkpoint writes: a crash or a full disk never leaves a half-written checkpoint behind."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from ..io import atomic_write, remove_stale_temporaries

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver", "BestMetric", "atomic_save", "remove_stale_temporaries"]

#: plain value types ``extra`` may hold: what ``torch.load(..., weights_only=True)`` reads back
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place
    (:func:`crln_monai.io.atomic_write`).

    MONAI's ``CheckpointSaver`` writes with ``atomic=False`` (its source says so, for file permissions), so an
    interrupted write can destroy the previous checkpoint; this is the small piece it lacks. The checkpoint gets
    the permissions the umask allows, as a plain ``torch.save(obj, path)`` would; the temporaries a killed write
    left are removed by :func:`~crln_monai.io.remove_stale_temporaries`.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def _check_plain(value: Any, key: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"extra[{key!r}]: key {k!r} is a {type(k).__name__}, expected str or int.")
            _check_plain(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"extra[{key!r}] = {value!r} is a {type(value).__name__}, expected plain values "
            "(str, int, float, bool, None, tensors, lists and dicts of them)."
        )


class BestMetric:
    """``state_dict``/``load_state_dict`` of an evaluator's best key metric and its epoch, for ``resume.pt``.

    MONAI's ``Workflow`` keeps ``state.best_metric``/``state.best_metric_epoch`` in memory only, so a resumed run's
    first validation would count as a new best. Ignite's ``engine.state_dict_user_keys`` could carry them too, but
    with the evaluator's own counters and a ``load_state_dict`` that checks them; this object holds just the two.

    Args:
        evaluator: the engine whose ``state.best_metric`` and ``state.best_metric_epoch`` are saved and restored.
    """

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, float | int]:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        missing = {"best_metric", "best_metric_epoch"} - set(state_dict)
        if missing:
            raise KeyError(f"best metric state: {sorted(missing)} missing, expected best_metric and best_metric_epoch")
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


class _Plain:
    """A plain value as an object with ``state_dict()``, so that Ignite's ``Checkpoint`` writes it beside the states."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def state_dict(self) -> Any:
        return self.value


class AtomicDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver(atomic=True)`` writing through :func:`crln_monai.io.atomic_write`, for one fixed file name.

    What differs from Ignite's, and why:

    * the temporary is ``.<name>.<random>.tmp`` beside the file with the umask's permissions (Ignite's
      ``NamedTemporaryFile`` is a ``tmpXXXX`` that cannot be told from a user's file, made 0600 and then given
      group and other read whatever the umask), so a later start can remove a killed write's leftovers;
    * :meth:`remove` does nothing: each saver writes one fixed name that the next write replaces atomically, and
      ``Checkpoint`` removes the file of that name *before* writing the new one, which would lose the previous
      checkpoint to a failed write;
    * the folder is made at the first write, not when the config is parsed (before the run's input checks).
    """

    def __init__(self, dirname: str | os.PathLike, save_on_rank: int = 0) -> None:
        super().__init__(dirname, atomic=True, create_dir=False, require_empty=False, save_on_rank=save_on_rank)

    @staticmethod
    def _check_and_setup(dirname: Path, create_dir: bool, require_empty: bool) -> None:
        """Nothing to check when the config is parsed (see the class docstring)."""

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        atomic_write(path, lambda f: func(checkpoint, f, **self.kwargs))

    def remove(self, filename: str) -> None:
        """Keep the file: the next write replaces it atomically."""


class AtomicCheckpointSaver:
    """Save objects with ``state_dict()`` to one file, atomically, on a schedule: Ignite's ``Checkpoint``.

    The writing is Ignite's ``Checkpoint`` (state dicts of unwrapped DDP modules, rank ``save_rank`` only) with
    an :class:`AtomicDiskSaver`; this class adds the schedule of a fixed-name file (every n epochs or
    iterations, at the end, or "best only" on an evaluator), the removal of temporaries a killed write left
    (when the engine starts, or at the first :meth:`save`) and plain ``extra`` values.

    It does not check the weights: attach :class:`~crln_monai.handlers.NonFiniteCheck` before it on the trainer.

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
        save_rank: under ``torch.distributed``, the only rank that writes.
        extra: plain values (str, numbers, None, tensors, lists and dicts of them) written beside the state
            dicts: the file becomes ``{name: state_dict, **extra}`` with one object, ``{**states, **extra}``
            otherwise. ``None`` keeps the formats above.
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
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        self.path = Path(save_dir) / filename
        self.every_n_epochs = every_n_epochs
        self.every_n_iterations = every_n_iterations
        self.save_final = save_final
        self.best_only = best_only
        self.save_rank = save_rank
        extra = dict(extra or {})
        clash = sorted(set(extra) & set(save_dict))
        if clash:
            raise ValueError(f"{filename}: extra keys {clash} are also save_dict names; use distinct names.")
        for key, value in extra.items():
            _check_plain(value, key)
        self.checkpoint = Checkpoint(
            {**save_dict, **{key: _Plain(value) for key, value in extra.items()}},
            AtomicDiskSaver(save_dir, save_on_rank=save_rank),
            filename_pattern=filename.replace("{", "{{").replace("}", "}}"),
            n_saved=None,  # one fixed name: every call writes
            save_on_rank=save_rank,
        )
        self._cleaned = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.remove_stale())
        if self.best_only:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_if_best)
            return
        if self.every_n_epochs:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self.save)
        if self.every_n_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self.save)
        if self.save_final:
            engine.add_event_handler(Events.COMPLETED, self.save)

    def _is_writer(self) -> bool:
        return idist.get_rank() == self.save_rank

    def remove_stale(self) -> None:
        """Once per saver, on the writing rank: delete temporaries of this checkpoint left by a killed write."""
        if not self._cleaned and self._is_writer():
            remove_stale_temporaries(self.path)
            self._cleaned = True

    def _save_if_best(self, engine: Engine) -> None:
        if getattr(engine.state, "best_metric_epoch", -1) == engine.state.epoch:
            self.save(engine)

    def save(self, engine: Engine | None = None) -> Path | None:
        """Write the checkpoint; returns its path, or ``None`` on a rank other than ``save_rank``.

        ``engine`` is the engine whose event triggered the save; without one (a direct call) a blank engine
        stands in, as ``Checkpoint`` fires its ``SAVED_CHECKPOINT`` event on an engine.
        """
        self.remove_stale()
        self.checkpoint(engine if engine is not None else Engine(lambda e, b: None))
        return self.path if self._is_writer() else None
