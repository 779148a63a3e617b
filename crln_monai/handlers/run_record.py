"""What a training run trains on, kept in ``resume.pt``, and a resume that would silently change it refused.

A resume restores the trainer, the optimisers and the schedulers from ``resume.pt`` (Ignite's and torch's
``load_state_dict``), which replaces some of the config's values without a word, and nothing compares the data:

* the **data set**: :class:`RunRecord` saves the case ids of the labelled, unlabelled and validation splits in
  ``resume.pt`` (entry ``run``); a resume on other cases is refused before any work, naming the cases that differ,
  unless ``--resume_other_data True`` (a deliberate change, e.g. more unlabelled cases). The record counts the
  iterations trained on each data set, so the export claims only those of the data it names. The class names
  are part of the checkpoint's ``settings`` and checked with them (:mod:`~crln_monai.handlers.checked_loader`).
* the **schedule**, per setting restored from ``resume.pt``:

  - ``epoch_length`` (Ignite restores the trainer's): refused when it differs. Ignite counts epochs as
    ``iteration // epoch_length``, and the learning-rate schedule, the validation interval, the per-epoch seeds
    and TensorBoard's validation steps are per epoch, so a run cannot change its epoch's length half-way;
  - ``lr``, ``momentum``, ``weight_decay`` (torch restores the optimisers' parameter groups and the schedulers'
    base learning rates): refused when they differ;
  - ``max_epochs``: applied. A larger value extends the run, a smaller one (not below the epoch reached) ends it
    earlier; the poly learning-rate schedules follow the new length
    (:func:`~crln_monai.engines.poly_lr_scheduler` re-targets a restored schedule).

  Every other setting (loss weights, thresholds, augmentation, batch sizes, ``rectify_start``, ``val_interval``,
  ``seed``, device, precision) is read from the config by the resumed run, so a changed value applies from the
  resume on; the network, preprocessing and class names must equal the checkpoint's (its ``settings``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..overrides import cli_value

__all__ = ["SPLITS", "RunRecord", "case_differences", "training_cases"]

logger = logging.getLogger(__name__)

SPLITS = ("labelled", "unlabelled", "validation")
"""The datalist splits a training run uses (the test split is not training data)."""

_SHOWN = 4  # case ids shown per list in a message
_REFUSED_SCHEDULE = ("epoch_length", "lr", "momentum", "weight_decay")


def training_cases(datalist: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[str]]:
    """The case ids of each split of :data:`SPLITS` (an item's ``"case"``, else its image path)."""
    return {
        split: [str(item.get("case", item.get("image"))) for item in datalist.get(split, [])] for split in SPLITS
    }


def _names(ids: Sequence[str]) -> str:
    return ", ".join(ids[:_SHOWN]) + (", ..." if len(ids) > _SHOWN else "")


def case_differences(trained: Mapping[str, Sequence[str]], current: Mapping[str, Sequence[str]]) -> list[str]:
    """Per split whose cases differ, e.g. ``"3 labelled cases differ (new: case_002; gone: case_007, case_008)"``."""
    parts = []
    for split in SPLITS:
        before, now = list(trained.get(split, [])), list(current.get(split, []))
        new = [c for c in now if c not in set(before)]
        gone = [c for c in before if c not in set(now)]
        if new or gone:
            count = len(new) + len(gone)
            lists = "; ".join(f"{word}: {_names(ids)}" for word, ids in (("new", new), ("gone", gone)) if ids)
            parts.append(f"{count} {split} case{'s' * (count > 1)} differ{'s' * (count == 1)} ({lists})")
    return parts


def _read(path: str | os.PathLike) -> Mapping[str, Any]:
    """The checkpoint with its tensors memory-mapped (they are not needed here); already checked readable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) checkpoint cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _trained_schedule(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The schedule values ``resume.pt`` restores: the trainer's and the student optimiser's."""
    values: dict[str, Any] = {}
    trainer = checkpoint.get("trainer")
    if isinstance(trainer, Mapping):
        values.update({k: trainer[k] for k in ("epoch_length", "max_epochs", "iteration") if k in trainer})
    optimizer = checkpoint.get("optimizer")
    groups = optimizer.get("param_groups") if isinstance(optimizer, Mapping) else None
    if groups and isinstance(groups[0], Mapping):
        group = groups[0]
        lr = group.get("initial_lr", None)
        scheduler = checkpoint.get("lr_scheduler")
        if lr is None and isinstance(scheduler, Mapping) and scheduler.get("base_lrs"):
            lr = scheduler["base_lrs"][0]
        values.update({"lr": lr, "momentum": group.get("momentum"), "weight_decay": group.get("weight_decay")})
    return {k: v for k, v in values.items() if v is not None}


def _differs(trained: Any, config: Any) -> bool:
    if isinstance(trained, (int, float)) and isinstance(config, (int, float)):
        return not math.isclose(float(trained), float(config), rel_tol=1e-9, abs_tol=0.0)
    return trained != config


class RunRecord:
    """The data set of a training run and the iterations trained on each data set, saved in ``resume.pt``.

    Bundle use: ``run_record`` is saved beside the resume objects (``resume_saver``'s ``save_dict``), checked and
    restored by ``$@run_record.check_resume(@resume_from)`` in ``training_checks`` (before any work), and read by
    the :class:`~crln_monai.workflow.BundleExporter` for the iterations its model card claims.

    Args:
        datalist: the run's datalist (``{"labelled": [...], "unlabelled": [...], "validation": [...], ...}``).
        schedule: the config's ``epoch_length``, ``max_epochs``, ``lr``, ``momentum`` and ``weight_decay``,
            compared with what ``resume.pt`` restores (module docstring); missing keys are not compared.
        other_data: accept a resume on other cases (the bundle key ``resume_other_data``).
    """

    def __init__(
        self,
        datalist: Mapping[str, Sequence[Mapping[str, Any]]],
        schedule: Mapping[str, Any] | None = None,
        other_data: bool = False,
    ) -> None:
        self.cases = training_cases(datalist)
        self.schedule = dict(schedule or {})
        self.other_data = bool(other_data)
        self.since = 0  # the iteration this data set's training started at
        self.earlier: list[dict[str, int]] = []  # earlier data sets: case counts per split and iterations

    def state_dict(self) -> dict[str, Any]:
        cases = {split: list(ids) for split, ids in self.cases.items()}
        return {"cases": cases, "since": self.since, "earlier": list(self.earlier)}

    def load_state_dict(self, state: Mapping[str, Any], iteration: int = 0) -> None:
        """Continue a saved record; ``iteration`` is the saved trainer's, where a change of data set starts."""
        earlier = [dict(e) for e in state.get("earlier", [])]
        since = int(state.get("since", 0))
        trained = state.get("cases", {})
        if case_differences(trained, self.cases):
            earlier.append({**{s: len(trained.get(s, [])) for s in SPLITS}, "iterations": int(iteration) - since})
            since = int(iteration)
        self.since, self.earlier = since, earlier

    def iterations(self, iteration: int) -> dict[str, int]:
        """The iterations to claim at trainer iteration ``iteration``: on this data set, and on earlier ones if any."""
        values = {"iterations_trained": int(iteration) - self.since}
        if self.earlier:
            values["iterations_on_earlier_data"] = sum(int(e["iterations"]) for e in self.earlier)
        return values

    def check_resume(self, path: str | os.PathLike | None) -> None:
        """Before any work: refuse a resume whose data or schedule differ (module docstring); continue the record.

        ``path`` is the bundle's ``resume_from`` (``None``: a fresh run, nothing to check). Call it after
        :func:`~crln_monai.handlers.check_checkpoint` has proved the file readable.

        Raises:
            ValueError: one line naming the checkpoint and each difference with the way out.
        """
        if path is None:
            return
        checkpoint = _read(path)
        source = f"checkpoint {path}"
        trained = _trained_schedule(checkpoint)
        self._check_schedule(source, trained)
        record = checkpoint.get("run")
        if not isinstance(record, Mapping):
            logger.warning(f"{source} holds no record of its data set (an older crln-monai wrote it): not compared")
            return
        differences = case_differences(record.get("cases", {}), self.cases)
        if differences and not self.other_data:
            raise ValueError(
                f"{source} was trained on other data: {'; '.join(differences)}. Resume with the data set it was "
                "trained on, or add --resume_other_data True to continue training on this one (the export then "
                "counts the iterations per data set)."
            )
        if differences:
            logger.warning(f"{source}: continuing on other data (--resume_other_data True): {'; '.join(differences)}")
            if any(d.split(" ", 2)[1] == "validation" for d in differences):
                logger.warning(
                    f"{source}: the best validation metric it restores was measured on other validation cases; "
                    "model.pt is replaced only by a model that beats it"
                )
        self.load_state_dict(record, iteration=int(trained.get("iteration", 0)))

    def _check_schedule(self, source: str, trained: Mapping[str, Any]) -> None:
        compared = [k for k in _REFUSED_SCHEDULE if k in trained and k in self.schedule]
        differing = [k for k in compared if _differs(trained[k], self.schedule[k])]
        if differing:
            was = ", ".join(f"{k}={cli_value(trained[k], quote=False)}" for k in differing)
            says = ", ".join(f"{k}={cli_value(self.schedule[k], quote=False)}" for k in differing)
            fix = " ".join(f"--{k} {cli_value(trained[k])}" for k in differing)
            raise ValueError(
                f"{source} was trained with {was}; the config says {says}: a run's epoch length, learning rate, "
                f"momentum and weight decay are restored from it and cannot change half-way. Add {fix} to resume, "
                "or start a new run (--overwrite True, or another --bundle_root)."
            )
        max_epochs, length = self.schedule.get("max_epochs"), trained.get("epoch_length")
        if max_epochs is None or not length or "iteration" not in trained:
            return
        epoch = int(trained["iteration"]) // int(length)
        if max_epochs < epoch:
            raise ValueError(
                f"{source} is at epoch {epoch}, beyond max_epochs={max_epochs}: resume with --max_epochs {epoch} "
                "or more."
            )
        if "max_epochs" in trained and trained["max_epochs"] != max_epochs:
            logger.info(
                f"{source}: max_epochs {trained['max_epochs']} -> {max_epochs} (the run goes on to epoch {max_epochs}; "
                "the learning-rate schedules follow the new length)"
            )
