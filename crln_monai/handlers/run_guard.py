"""A training run owns its folders: no second run into them while it trains, no fresh run over a finished one.

Two rules, checked before any work (the bundle's ``training_checks``) and again when the trainer starts:

1. **One run at a time.** The run holds ``<ckpt_dir>/run.lock`` (:class:`~crln_monai.handlers.run_lock.RunLock`)
   from the trainer's ``STARTED`` (the first handler of the run, before any checkpoint saver touches the folder)
   to its end: released at ``COMPLETED`` (after every other handler of that event), at ``TERMINATE`` without
   ``COMPLETED``, at ``EXCEPTION_RAISED`` and, as a fallback, when the process exits. A second run is refused
   before any work with one line naming the holder; a lock left by a killed run is taken over (logged).
   The lock is taken when the trainer starts, not before the checks, so that a run refused by a check or while
   its data set is cached leaves no lock behind even when it runs inside another process (a test, a notebook);
   two runs started at the same moment both pass the early check, and the later one to reach its first
   iteration is refused then, before it writes anything.
2. **A fresh run does not replace an earlier one.** Without a resume, a folder that holds a started or finished
   run (``resume.pt``, ``model_last.pt``, ``model.pt``, ``history.csv`` or the run's export) is refused, naming
   the two ways on: ``--resume auto`` (continue it) or ``--overwrite True`` (replace it). With ``overwrite`` the
   earlier run's files are deleted when the new run's trainer starts (after every check and the data set's
   cache, so a refused or failed start keeps them), so that no file of the earlier run (a stale ``resume.pt``
   that ``--resume auto`` would continue, a ``model.pt`` or an export of other weights) outlives it.

Ignite and MONAI have neither rule (their savers write into whatever folder they are given), hence this handler.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events

from ..data.datalist import export_name
from .run_lock import RunLock

__all__ = ["RUN_FILES", "RunGuard", "earlier_run_files"]

logger = logging.getLogger(__name__)

RUN_FILES: dict[str, tuple[str, ...]] = {
    "ckpt_dir": ("resume.pt", "model_last.pt", "model.pt"),
    "output_dir": ("history.csv", "training_curves.png"),
}
"""Per run folder: the files a training run writes there; any of them (``training_curves.png`` aside, it is only
drawn beside ``history.csv``) or the run's export marks the folder as holding a run."""

_MARKERS_ONLY = {"training_curves.png"}


def earlier_run_files(
    ckpt_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    export_path: str | os.PathLike,
    markers_only: bool = True,
) -> list[Path]:
    """The files (and the export folder) of a training run found in the run's folders.

    Args:
        ckpt_dir, output_dir: the run's checkpoint and report folders.
        export_path: the run's export folder (``<export_dir>/<name>``).
        markers_only: leave out the files that do not mark a run by themselves (``training_curves.png``).
    """
    found = []
    for key, folder in (("ckpt_dir", ckpt_dir), ("output_dir", output_dir)):
        for name in RUN_FILES[key]:
            path = Path(folder) / name
            if path.is_file() and not (markers_only and name in _MARKERS_ONLY):
                found.append(path)
    export = Path(export_path)
    if export.is_dir() and any(export.iterdir()):
        found.append(export)
    return found


class RunGuard:
    """The two rules of the module docstring for one training run; an Ignite handler attached first on the trainer.

    Bundle use: ``run_guard`` (top-level), ``$@run_guard.check()`` in ``training_checks`` and ``[@run_guard]``
    at the head of the trainer's ``train_handlers`` (first, so its ``STARTED`` comes before the savers' and its
    ``EXCEPTION_RAISED`` before MONAI's ``StatsHandler``, which re-raises and so ends that event's handlers).

    Args:
        ckpt_dir: the run's checkpoint folder; it holds the lock.
        output_dir: the run's report folder (``history.csv``).
        export_dir: the folder of exports; the run's export is ``export_dir/<export_name(dataset_dir, datalist_file)>``.
        dataset_dir, datalist_file: the data set, for the export's name (:func:`~crln_monai.workflow.export_name`).
        resume: the checkpoint the run resumes from (the bundle's ``resume_from``), ``None`` for a fresh run.
        overwrite: let a fresh run replace an earlier run in these folders (the bundle key ``overwrite``).
        rank: under ``torch.distributed``, the rank that takes the lock and deletes files (the writing rank).
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        export_dir: str | os.PathLike,
        dataset_dir: str | os.PathLike,
        datalist_file: str = "dataset.json",
        resume: str | os.PathLike | None = None,
        overwrite: bool = False,
        rank: int = 0,
    ) -> None:
        self.ckpt_dir, self.output_dir = Path(ckpt_dir), Path(output_dir)
        self.export_path = Path(export_dir) / export_name(dataset_dir, datalist_file)
        self.resume = resume
        self.overwrite = bool(overwrite)
        self.rank = rank
        self.lock = RunLock(self.ckpt_dir)
        self._started = False

    def _found(self, markers_only: bool = True) -> list[Path]:
        return earlier_run_files(self.ckpt_dir, self.output_dir, self.export_path, markers_only)

    def _shown(self, paths: Sequence[Path]) -> str:
        root = self.ckpt_dir.parent
        return ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths)

    def check_fresh_start(self) -> None:
        """Refuse a fresh run (no resume) into folders holding a run, unless ``overwrite``.

        Raises:
            FileExistsError: one line naming the folder, the files found and the two ways on.
        """
        if self.resume is not None or self.overwrite:
            return
        found = self._found()
        if not found:
            return
        if (self.ckpt_dir / "resume.pt").is_file():
            ways = "continue it with --resume auto (or --resume True), or replace it with --overwrite True"
        else:
            ways = (
                f"it cannot be continued (no {self._shown([self.ckpt_dir / 'resume.pt'])}): replace it with "
                "--overwrite True, or train into another --bundle_root"
            )
        raise FileExistsError(
            f"{self.ckpt_dir.parent} already holds a training run ({self._shown(found)}) that a fresh run would "
            f"replace: {ways}; nothing was written."
        )

    def check(self) -> None:
        """Before any work: refuse when another live run holds the folder or a fresh run would replace one.

        Raises:
            RunLockedError: a live run holds ``<ckpt_dir>/run.lock``.
            FileExistsError: see :meth:`check_fresh_start`.
        """
        stale = self.lock.check()
        if self.resume is not None and self.overwrite:
            logger.warning(f"--overwrite True has no effect: the run continues from {self.resume}")
        if stale is not None:
            logger.warning(f"{self.lock.path} was left by a run that is no longer alive; it is taken over at the start")
        self.check_fresh_start()

    def attach(self, engine: Engine) -> None:
        """Take the lock at ``STARTED`` and release it when the run ends (see the module docstring)."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.failed)
        engine.add_event_handler(Events.TERMINATE, self.terminated)

    def _is_owner(self) -> bool:
        return idist.get_rank() == self.rank

    def started(self, engine: Engine) -> None:
        """Take the lock, check the folders again, delete an earlier run's files when overwriting."""
        if not self._is_owner() or self.lock.held:
            return
        self.lock.acquire()
        if self._started:  # the same trainer run again in this process (after a terminate): its own files
            return
        self._started = True
        try:
            self.check_fresh_start()  # a run that ended while this one was caching its data set
        except BaseException:
            self.lock.release()
            raise
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)  # now: after every other COMPLETED handler
        if self.resume is None and self.overwrite:
            earlier = self._found(markers_only=False)
            for path in earlier:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            if earlier:
                logger.warning(f"--overwrite True: deleted the earlier run's {self._shown(earlier)}")

    def completed(self, engine: Engine) -> None:
        self.lock.release()

    def terminated(self, engine: Engine) -> None:
        """Release at ``TERMINATE`` only when no ``COMPLETED`` follows (``terminate(skip_completed=True)``)."""
        if engine.should_terminate == "skip_completed":
            self.lock.release()

    def failed(self, engine: Engine, error: BaseException) -> None:
        """Release and re-raise: as MONAI's handlers, the first ``EXCEPTION_RAISED`` handler raises the error on."""
        self.lock.release()
        raise error
