"""An nnU-Net v2 trainer that fills a wall-clock budget, for ``scripts/compare_nnunet.py``.

nnU-Net finds it through its ``nnUNet_extTrainer`` environment variable (a folder of external trainers; this folder
holds this module only, as nnU-Net imports every module of it while searching). It needs the ``compare`` extra
(``pip install -e ".[compare]"``); the library never imports it.

Why a trainer of our own: nnU-Net's schedule is 1000 epochs of 250 iterations, and its shorter variants
(``nnUNetTrainer_1epoch``, ``_5epochs``, ... ``_8000epochs``) change only the number of epochs. On a CPU an
iteration of ``3d_fullres`` costs seconds, so one epoch alone can exceed a 30-minute budget, and a run killed at
the budget keeps little: ``checkpoint_latest.pth`` is written every 50 epochs, ``checkpoint_best.pth`` only after
an epoch whose smoothed pseudo-Dice improved. This trainer keeps everything of ``nnUNetTrainer`` (plans, network,
loss, deep supervision, augmentation, foreground oversampling, SGD with the poly learning rate) and changes the
schedule only:

1. a short first epoch (``CRLN_NNUNET_FIRST_EPOCH`` training iterations, default 10) measures the seconds of a
   training iteration, of a validation iteration and the fixed cost of an epoch (checkpoints, progress plot);
2. after the first epoch, and again after the second (without the start-up costs), the time left until
   ``CRLN_NNUNET_DEADLINE`` (a Unix time: the script's launch + the budget) is cut into epochs of nnU-Net's 250
   iterations when ``CRLN_NNUNET_MIN_EPOCHS`` (default 20) of them fit, else into that many shorter epochs, never
   so short that an epoch's fixed cost exceeds a tenth of its training (nor under 5 iterations), and as many of
   them as fit; ``num_epochs`` and the poly scheduler's ``max_steps`` follow (at most nnU-Net's 1000 epochs), so
   the learning rate decays over the run that actually happens; validation keeps nnU-Net's one iteration per five
   training ones;
3. after every later epoch the schedule can only shrink, when the epochs left no longer fit; an epoch that would
   end after the deadline is not started, and training ends as nnU-Net ends it (``checkpoint_final.pth``);
4. ``checkpoint_latest.pth`` is written after every epoch, so a run stopped from outside keeps its last epoch;
5. with fold ``all``, nnU-Net's closing "validation" is skipped: fold ``all`` validates on its own training cases,
   which measures nothing and would run past the budget.

``CRLN_NNUNET_THREADS`` sets torch's CPU threads (``nnUNetv2_train -device cpu`` takes every core otherwise). The
trainer writes ``time_budget.json`` beside its checkpoints: the measured speed, the schedule, the epochs and
iterations done and why training stopped.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

NNUNET_EPOCH_ITERATIONS = 250
NNUNET_MAX_EPOCHS = 1000
#: nnU-Net runs 50 validation iterations per 250 training ones.
VALIDATION_RATIO = 5
#: Seconds kept free before the deadline for the final checkpoint.
RESERVE_SECONDS = 5.0


class BudgetSpent(Exception):
    """Raised at the start of an epoch that would end after the deadline; ends nnU-Net's epoch loop."""


def _setting(name: str, default: float | None) -> float:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise RuntimeError(f"nnUNetTrainerTimeBudget needs {name}; run it through scripts/compare_nnunet.py.")
        return default
    return float(value)


class nnUNetTrainerTimeBudget(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming of trainer classes
    """``nnUNetTrainer`` on a wall-clock budget (module docstring)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # fmt: skip
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.deadline = _setting("CRLN_NNUNET_DEADLINE", None)
        self.first_epoch = max(1, int(_setting("CRLN_NNUNET_FIRST_EPOCH", 10)))
        self.min_epochs = max(1, int(_setting("CRLN_NNUNET_MIN_EPOCHS", 20)))
        threads = os.environ.get("CRLN_NNUNET_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        self.num_epochs = NNUNET_MAX_EPOCHS
        self.num_iterations_per_epoch = self.first_epoch
        self.num_val_iterations_per_epoch = max(1, self.first_epoch // VALIDATION_RATIO)
        self.save_every = 1
        self._marks: dict = {}
        self._epochs: list[dict] = []
        self._record: dict = {
            "trainer": type(self).__name__, "deadline_unix": self.deadline, "first_epoch_iterations": self.first_epoch,
            "min_epochs": self.min_epochs, "torch_threads": torch.get_num_threads(),
        }  # fmt: skip

    # ------------------------------------------------------------------------------------------- the schedule

    def _epoch_seconds(self, length: int, timing: dict) -> float:
        """Seconds of an epoch of ``length`` training iterations at the measured speeds."""
        validation = max(1, length // VALIDATION_RATIO)
        return length * timing["train"] + validation * timing["validation"] + timing["overhead"]

    def _plan_epochs(self, timing: dict, both_ways: bool) -> None:
        """Epoch length and count for the time left, from ``timing``: seconds per training and per validation
        iteration, and the fixed seconds of an epoch (checkpoints, progress plot)."""
        left = self.deadline - time.time() - RESERVE_SECONDS
        if both_ways:
            if left >= self.min_epochs * self._epoch_seconds(NNUNET_EPOCH_ITERATIONS, timing):
                length = NNUNET_EPOCH_ITERATIONS
            else:  # min_epochs epochs, each long enough that its fixed cost stays under a tenth of its work
                per_iteration = timing["train"] + timing["validation"] / VALIDATION_RATIO
                length = int((left / self.min_epochs - timing["overhead"]) / per_iteration)
                shortest = max(VALIDATION_RATIO, math.ceil(10 * timing["overhead"] / max(timing["train"], 1e-6)))
                length = min(NNUNET_EPOCH_ITERATIONS, max(length, shortest))
            self.num_iterations_per_epoch = length
            self.num_val_iterations_per_epoch = max(1, length // VALIDATION_RATIO)
        length = self.num_iterations_per_epoch
        fit = max(0, int(left / self._epoch_seconds(length, timing)))
        epochs = min(NNUNET_MAX_EPOCHS, self.num_done + fit)
        if not both_ways and epochs >= self.num_epochs:
            return  # on schedule: never grow after the first plans (the learning rate has already decayed)
        self._set_epochs(epochs)
        self._record["schedule"] = {
            "seconds_per_training_iteration": timing["train"], "seconds_per_validation_iteration": timing["validation"],
            "seconds_per_epoch_overhead": timing["overhead"], "iterations_per_epoch": length,
            "validation_iterations_per_epoch": self.num_val_iterations_per_epoch, "num_epochs": self.num_epochs,
            "planned_after_epoch": self.num_done,
            "planned_iterations": sum(e["iterations"] for e in self._epochs)
            + (self.num_epochs - self.num_done) * length,
        }  # fmt: skip
        self.print_to_log_file(
            f"time budget: {timing['train']:.3g} s per training iteration, {timing['validation']:.3g} s per validation "
            f"iteration, {timing['overhead']:.2g} s per epoch besides, {left:.0f} s left: "
            f"{self.num_epochs - self.num_done} more epochs of {length} iterations (num_epochs {self.num_epochs})"
        )

    def _set_epochs(self, num_epochs: int) -> None:
        self.num_epochs = max(num_epochs, self.num_done)
        if self.lr_scheduler is not None:
            self.lr_scheduler.max_steps = max(1, self.num_epochs)

    @property
    def num_done(self) -> int:
        return len(self._epochs)

    # ------------------------------------------------------------------------------------- nnU-Net's hooks

    def on_epoch_start(self) -> None:
        now = time.time()
        if self._epochs:
            if self.current_epoch >= self.num_epochs:
                raise BudgetSpent(f"the {self.num_epochs} planned epochs are done")
            typical = self._epoch_seconds(self.num_iterations_per_epoch, self._timing())
            if now + typical + RESERVE_SECONDS > self.deadline:
                raise BudgetSpent(f"the next epoch (about {typical:.0f} s) would end after the deadline")
        self._marks = {"start": now}
        super().on_epoch_start()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._marks["train"] = time.time()

    def on_validation_epoch_start(self) -> None:
        self._marks["train_end"] = time.time()
        super().on_validation_epoch_start()
        self._marks["validation"] = time.time()

    def on_validation_epoch_end(self, val_outputs: list) -> None:
        self._marks["validation_end"] = time.time()
        super().on_validation_epoch_end(val_outputs)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # nnU-Net's logging and checkpoints; advances current_epoch
        marks = self._marks
        train = marks["train_end"] - marks["train"]
        validation = marks["validation_end"] - marks["validation"]
        self._epochs.append({
            "epoch": self.current_epoch - 1, "iterations": self.num_iterations_per_epoch,
            "validation_iterations": self.num_val_iterations_per_epoch, "train_seconds": train,
            "validation_seconds": validation, "seconds": time.time() - marks["start"],
        })  # fmt: skip
        # the first epoch measures the speed, the second re-measures it without the start-up costs; later epochs
        # can only shorten the schedule
        self._plan_epochs(self._timing(), both_ways=self.num_done <= 2)
        self._write_record(None)

    def _timing(self) -> dict:
        last = self._epochs[-1]
        return {
            "train": last["train_seconds"] / last["iterations"],
            "validation": last["validation_seconds"] / last["validation_iterations"],
            "overhead": max(0.0, last["seconds"] - last["train_seconds"] - last["validation_seconds"]),
        }

    def run_training(self) -> None:
        try:
            super().run_training()
            reason = f"the {self.num_epochs} planned epochs are done"
        except BudgetSpent as stop:
            reason = str(stop)
            self.print_to_log_file(f"time budget: stopping, {reason}")
            self.on_train_end()  # nnU-Net's ending: checkpoint_final.pth, latest removed, loaders shut down
        self._write_record(reason)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if self.fold == "all":
            self.print_to_log_file("time budget: fold 'all' validates on its training cases; final validation skipped")
            return
        super().perform_actual_validation(save_probabilities)

    def _write_record(self, stop_reason: str | None) -> None:
        if self.local_rank != 0 or self.output_folder is None:
            return
        record = dict(self._record)
        record.update(
            epochs_done=self.num_done,
            iterations_done=sum(e["iterations"] for e in self._epochs),
            training_seconds=sum(e["seconds"] for e in self._epochs),
            epochs=self._epochs,
            stop_reason=stop_reason,
            finished=stop_reason is not None,
            seconds_left_at_end=None if stop_reason is None else round(self.deadline - time.time(), 1),
        )
        path = os.path.join(self.output_folder, "time_budget.json")
        temporary = path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(record, f, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
        os.replace(temporary, path)
