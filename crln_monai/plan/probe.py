"""A short probe of the real training run on this machine, for a plan made to a time budget.

The plan's time budget (``crln-plan --time 45m``) is filled from measurements, not from a model of the machine: the
probe builds the training run exactly as ``python -m monai.bundle run training`` builds it (``ConfigWorkflow`` over
the bundle's ``train.json`` with the candidate plan as overrides), on a few of the data set's own cases, and times

* building the run (config parsing, networks, optimisers): ``seconds_start``;
* loading and preprocessing a case into the cache (per case, with the plan's worker count): ``seconds_per_case``;
* training iterations after a warm-up, data loading included (median): ``seconds_per_iteration``;
* with ``supervised=True``, first a few burn-in iterations (labelled losses only, the trainer's
  ``supervised_iterations``): ``seconds_per_supervised_iteration``;
* one validation case through the sliding window (loading included): ``seconds_per_validation_case``;
* the other epoch-end work (checkpoints, the export): ``seconds_per_epoch_end``;
* the start of an epoch: the loader's workers start again and the first batch is prepared while the network waits
  (``persistent_workers`` is off so that every epoch reseeds the workers' transforms): ``seconds_per_epoch_start``.

The logging handlers (``train::reporting``) are left out and the engines' logs quietened: the probe prints nothing
of the run it measures. A slow configuration stops timing after :data:`TIMED_SECONDS` (at least 3 timed iterations).

MONAI and Ignite have no such measurement; :func:`estimate_seconds` turns it into the run's duration and
:func:`iterations_for` into the iterations that fill a budget. The probe writes only into a temporary folder.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "PROBE_CASES",
    "Probe",
    "estimate_seconds",
    "iterations_for",
    "probe_run",
    "supervised_iterations_for",
    "validation_count",
]

#: Labelled and unlabelled cases a probe caches (each), and its warm-up and timed iterations.
PROBE_CASES = 3
WARMUP_ITERATIONS = 2
TIMED_ITERATIONS = 6
TIMED_SECONDS = 20.0
MIN_TIMED_ITERATIONS = 3
#: Warm-up and timed burn-in iterations (``supervised=True``), before the full ones.
SUPERVISED_WARMUP = 1
SUPERVISED_TIMED = 4
#: Python start-up and imports before the config is parsed (measured on the 2-core CPU: 4–6 s).
IMPORT_SECONDS = 5.0
#: Share of the budget that validation may take, and the most validations a run makes.
VALIDATION_SHARE = 0.08
MAX_VALIDATIONS = 20


@dataclass(frozen=True)
class Probe:
    """What one probe measured (seconds)."""

    seconds_start: float
    seconds_per_case: float
    seconds_per_iteration: float
    seconds_per_validation_case: float
    seconds_per_epoch_end: float
    timed_iterations: int
    seconds_per_epoch_start: float = 0.0
    seconds_per_supervised_iteration: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: None if v is None else round(float(v), 4) for k, v in self.__dict__.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_run(
    train_config: str | os.PathLike,
    overrides: Mapping[str, Any],
    datalist: Mapping[str, Sequence[Mapping[str, Any]]],
    device: str | torch.device,
    warmup: int = WARMUP_ITERATIONS,
    timed: int = TIMED_ITERATIONS,
    supervised: bool = False,
) -> Probe:
    """Time ``warmup + timed`` iterations and one epoch end of the training run a plan describes.

    Args:
        train_config: the bundle's ``train.json`` (``bundles/custom/configs/train.json``).
        overrides: the plan's keys (the candidate configuration), as the run will get them.
        datalist: a few cases of the data set: ``labelled``, ``unlabelled`` (may be empty for a supervised run) and
            ``validation`` (one case is enough; empty skips the validation timing).
        device: where the run will train.
        warmup: iterations before the timed ones (compilation, allocator, first batches), ≥ 1.
        timed: timed iterations (their median is reported), ≥ 1.
        supervised: also time :data:`SUPERVISED_TIMED` burn-in iterations (after :data:`SUPERVISED_WARMUP`) before
            the full ones.

    Returns:
        the :class:`Probe`.
    """
    import logging

    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    if warmup < 1 or timed < 1:
        raise ValueError(f"a probe needs warmup >= 1 and timed >= 1 iterations, got {warmup} and {timed}.")
    device = torch.device(device)
    num_cases = len(datalist["labelled"]) + len(datalist["unlabelled"])
    burn_in = SUPERVISED_WARMUP + SUPERVISED_TIMED if supervised else 0
    with tempfile.TemporaryDirectory(prefix="crln-probe-") as root:
        probe_overrides = {
            **overrides,
            "bundle_root": root,
            "device": str(device),
            "datalist": {k: list(v) for k, v in datalist.items()} | {"test": []},
            "max_epochs": 1,
            "epoch_length": burn_in + warmup + timed,
            "val_interval": 1,
            "rectify_start": 0,
            "supervised_iterations": burn_in,
            "resume": None,
            "train::reporting": [],
        }
        quiet = [logging.getLogger(name) for name in ("ignite", "monai", "crln_monai", "crln")]
        levels = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        start = time.perf_counter()
        workflow = ConfigWorkflow(config_file=str(train_config), workflow_type="train", **probe_overrides)
        workflow.initialize()
        parser = workflow.parser
        started = time.perf_counter()
        parser.get_parsed_content("train::dataset")
        cached = time.perf_counter()
        trainer = parser.get_parsed_content("train::trainer")
        built = time.perf_counter()
        evaluator = parser.get_parsed_content("validate::evaluator")
        stamps: list[float] = []
        validation: list[float] = []
        epoch_end: list[float] = []

        def stamp(engine: Any) -> None:
            _sync(device)
            stamps.append(time.perf_counter())
            timed_so_far = len(stamps) - burn_in - warmup
            if timed_so_far >= MIN_TIMED_ITERATIONS and stamps[-1] - stamps[burn_in + warmup - 1] > TIMED_SECONDS:
                engine.terminate_epoch()  # enough: the epoch end (validation, checkpoints) still runs

        trainer.add_event_handler(Events.ITERATION_COMPLETED, stamp)
        evaluator.add_event_handler(Events.STARTED, lambda _: validation.append(time.perf_counter()))
        evaluator.add_event_handler(Events.COMPLETED, lambda _: validation.append(time.perf_counter()))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: epoch_end.append(time.perf_counter()))
        try:
            trainer.run()
            loader = parser.get_parsed_content("train::dataloader")
            sampler = getattr(loader, "batch_sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(2)
            first = time.perf_counter()
            next(iter(loader))
            epoch_start = time.perf_counter() - first
        finally:
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)

        def intervals_after(first: int, last: int) -> list[float]:  # iterations first + 1 .. last
            return [b - a for a, b in zip(stamps[first - 1 : last - 1], stamps[first:last])]

        intervals = intervals_after(burn_in + warmup, len(stamps))
        supervised_intervals = intervals_after(SUPERVISED_WARMUP, burn_in) if supervised else []
        validation_seconds = validation[1] - validation[0] if len(validation) >= 2 else 0.0
        num_validation = max(1, len(datalist["validation"]))
        end_seconds = (epoch_end[-1] - stamps[-1]) - validation_seconds if epoch_end else 0.0
        del trainer, evaluator, workflow, parser
    return Probe(
        seconds_start=IMPORT_SECONDS + (started - start) + (built - cached),
        seconds_per_case=(cached - started) / max(1, num_cases),
        seconds_per_iteration=statistics.median(intervals),
        seconds_per_validation_case=validation_seconds / num_validation if datalist["validation"] else 0.0,
        seconds_per_epoch_end=max(0.0, end_seconds),
        timed_iterations=len(intervals),
        seconds_per_epoch_start=epoch_start,
        seconds_per_supervised_iteration=statistics.median(supervised_intervals) if supervised_intervals else None,
    )


def validation_count(budget_seconds: float, seconds_per_validation: float, max_validations: int = MAX_VALIDATIONS) -> int:
    """How many validations a run of ``budget_seconds`` makes: at most :data:`MAX_VALIDATIONS`, and together at most
    :data:`VALIDATION_SHARE` of the budget (at least one, for the best checkpoint, when there are validation cases)."""
    if seconds_per_validation <= 0:
        return 0
    return max(1, min(max_validations, int(VALIDATION_SHARE * budget_seconds / seconds_per_validation)))


def _iteration_seconds(probe: Probe, iterations: int, supervised_iterations: int) -> float:
    """Seconds of ``iterations``, the first ``supervised_iterations`` of them burn-in ones."""
    if not supervised_iterations:
        return iterations * probe.seconds_per_iteration
    if probe.seconds_per_supervised_iteration is None:
        raise ValueError("a run with supervised_iterations needs a probe made with supervised=True.")
    full = iterations - supervised_iterations
    return supervised_iterations * probe.seconds_per_supervised_iteration + full * probe.seconds_per_iteration


def estimate_seconds(
    probe: Probe,
    iterations: int,
    epochs: int,
    num_train_cases: int,
    num_validation_cases: int,
    validations: int,
    supervised_iterations: int = 0,
) -> float:
    """Seconds of the training run: start-up, cache fill, iterations (the first ``supervised_iterations`` of them
    burn-in ones), validations, epoch starts and ends."""
    return (
        probe.seconds_start
        + num_train_cases * probe.seconds_per_case
        + _iteration_seconds(probe, iterations, supervised_iterations)
        + validations * num_validation_cases * probe.seconds_per_validation_case
        + epochs * (probe.seconds_per_epoch_end + probe.seconds_per_epoch_start)
    )


def _mean_iteration_seconds(probe: Probe, supervised_share: float) -> float:
    """Mean seconds per iteration when ``supervised_share`` of the iterations' time goes to burn-in ones."""
    if not supervised_share:
        return probe.seconds_per_iteration
    if probe.seconds_per_supervised_iteration is None:
        raise ValueError("a supervised share needs a probe made with supervised=True.")
    supervised, full = probe.seconds_per_supervised_iteration, probe.seconds_per_iteration
    return 1.0 / (supervised_share / supervised + (1 - supervised_share) / full)


def supervised_iterations_for(iterations: int, probe: Probe, supervised_share: float) -> int:
    """Burn-in iterations among ``iterations`` that take ``supervised_share`` of their time (0 without a share)."""
    if not supervised_share:
        return 0
    mean = _mean_iteration_seconds(probe, supervised_share)
    assert probe.seconds_per_supervised_iteration is not None
    return min(iterations, round(iterations * mean * supervised_share / probe.seconds_per_supervised_iteration))


def iterations_for(
    budget_seconds: float,
    probe: Probe,
    num_train_cases: int,
    num_validation_cases: int,
    supervised_share: float = 0.0,
) -> tuple[int, int]:
    """Iterations (and validations) that fill ``budget_seconds`` by :func:`estimate_seconds`.

    Epochs are about √iterations (the plan's schedule), so the epoch-end cost is solved for with that. With a
    ``supervised_share``, that share of the iterations' time goes to burn-in iterations (their probed cost).

    Returns:
        ``(iterations, validations)``; iterations ≥ 1.
    """
    per_validation = num_validation_cases * probe.seconds_per_validation_case
    validations = validation_count(budget_seconds, per_validation)
    left = (
        budget_seconds
        - probe.seconds_start
        - num_train_cases * probe.seconds_per_case
        - validations * per_validation
    )
    # iterations · s + √iterations · e = left  →  √iterations = (−e + √(e² + 4·s·left)) / (2·s)
    s, e = _mean_iteration_seconds(probe, supervised_share), probe.seconds_per_epoch_end + probe.seconds_per_epoch_start
    if left <= 0:
        return 1, validations
    root = (-e + math.sqrt(e * e + 4 * s * left)) / (2 * s)
    return max(1, int(root * root)), validations
