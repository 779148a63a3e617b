"""Whole-run progress in the log: total iterations, seconds per iteration and the expected end of the run."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable

from ignite.engine import Engine, Events

from .run_start import on_run_start

__all__ = ["RunProgress"]


def _duration(seconds: float) -> str:
    """``3725.4`` → ``"1:02:05"`` (days are counted in the hours)."""
    total = max(0, int(round(seconds)))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


class RunProgress:
    """Log the whole run's progress: its size at the start, then s/it and the expected end every ``log_interval``.

    Lines (logger ``crln.progress``):

    - at the first epoch start of this process: ``run: 40000 iterations in total (200 epochs x 200 iterations)``,
      with ``, resuming after iteration 1200 (38800 left)`` when a checkpoint was restored;
    - ``first_report`` iterations after the ``warmup`` ones, then at every iteration that is a multiple of
      ``log_interval``: ``iteration 120/40000 (0.3 %): 0.412 s/it, 4:33:40 left, expected end 2026-11-27 14:05:09``
      (local wall-clock time);
    - when the run completes: ``run finished: 38800 iterations in 4:30:01 (0.418 s/it)``.

    The rate counts only iterations run in this process, from the end of the first ``warmup`` of them (compile,
    cuDNN autotuning and worker start-up are left out) and includes everything between iterations (validation,
    checkpoints), so the expected end is the run's. Only ``engine.state``'s Python integers and the clock are
    read: no device tensor, hence no host synchronisation.

    Ignite's ``ProgressBar`` stays beside it: its bar (and tqdm's remaining time) covers the current epoch only and
    is drawn on the terminal, not in a log file; ``ignite.handlers.Timer`` would give the s/it but not the totals,
    the resume offset or the lines, which are all this handler is.

    Args:
        log_interval: iterations between progress lines (the bundle's ``log_interval``).
        warmup: first iterations of this process left out of the timing.
        first_report: timed iterations before the first rate line.
        name: logger name.
        clock: monotonic seconds (default ``time.perf_counter``).
        wall_clock: seconds since the epoch for the expected end (default ``time.time``).
    """

    def __init__(
        self,
        log_interval: int = 20,
        warmup: int = 2,
        first_report: int = 3,
        name: str = "crln.progress",
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for key, value, low in (("log_interval", log_interval, 1), ("warmup", warmup, 0), ("first_report", first_report, 1)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"RunProgress: {key} must be an integer >= {low}, got {value!r}")
        self.log_interval = int(log_interval)
        self.warmup = int(warmup)
        self.first_report = int(first_report)
        self.logger = logging.getLogger(name)
        self.clock = clock
        self.wall_clock = wall_clock
        self.total = 0
        self.start_iteration: int | None = None
        self.start_time = 0.0
        self.timed_from: tuple[int, float] | None = None  # (iteration, clock) where the timing starts

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        on_run_start(engine, lambda iteration: self.begin(engine))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self, engine: Engine | None = None) -> None:
        self.start_iteration = None
        self.timed_from = None

    def begin(self, engine: Engine) -> None:
        """Where the run starts (after a resume has restored the iteration): log the run's size, start the clock."""
        if self.start_iteration is not None:  # begun by an iteration already (attached after the epoch started)
            return
        state = engine.state
        self.total = int(state.max_epochs or 0) * int(state.epoch_length or 0)
        self.start_iteration = int(state.iteration)
        self.start_time = self.clock()
        if self.warmup == 0:
            self.timed_from = (self.start_iteration, self.start_time)
        line = f"run: {self.total} iterations in total ({state.max_epochs} epochs x {state.epoch_length} iterations)"
        if self.start_iteration > 0:
            line += f", resuming after iteration {self.start_iteration} ({self.total - self.start_iteration} left)"
        self.logger.info(line)

    def rate(self, iteration: int) -> float | None:
        """Seconds per iteration over the timed iterations up to ``iteration``, or None before any was timed."""
        if self.timed_from is None or iteration <= self.timed_from[0]:
            return None
        return (self.clock() - self.timed_from[1]) / (iteration - self.timed_from[0])

    def iteration_completed(self, engine: Engine) -> None:
        if self.start_iteration is None:  # attached after the epoch started
            self.begin(engine)
        assert self.start_iteration is not None
        iteration = int(engine.state.iteration)
        done_here = iteration - self.start_iteration
        if done_here == self.warmup and self.timed_from is None:
            self.timed_from = (iteration, self.clock())
            return
        if done_here < self.warmup + self.first_report:
            return
        if done_here != self.warmup + self.first_report and iteration % self.log_interval != 0:
            return
        seconds = self.rate(iteration)
        if seconds is None:
            return
        left = max(0, self.total - iteration)
        end = datetime.datetime.fromtimestamp(self.wall_clock() + left * seconds)
        share = 100.0 * iteration / self.total if self.total else 100.0
        self.logger.info(
            f"iteration {iteration}/{self.total} ({share:.1f} %): {seconds:.3f} s/it, {_duration(left * seconds)} left, "
            f"expected end {end:%Y-%m-%d %H:%M:%S}"
        )

    def completed(self, engine: Engine) -> None:
        if self.start_iteration is None:
            return
        done = int(engine.state.iteration) - self.start_iteration
        elapsed = self.clock() - self.start_time
        per = f" ({elapsed / done:.3f} s/it)" if done > 0 else ""
        self.logger.info(f"run finished: {done} iterations in {_duration(elapsed)}{per}")
