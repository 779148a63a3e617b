"""RunProgress: total iterations first, then s/it and the expected end, on a fake clock; resume counts only new work."""

from __future__ import annotations

import datetime
import logging

import pytest
from ignite.engine import Engine, Events

from crln_monai.handlers import RunProgress

WALL = 1_800_000_000.0  # a fixed "now" for the expected end


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _engine(clock: FakeClock, durations) -> Engine:
    """Each iteration advances the clock by durations(iteration) seconds."""

    def step(engine, batch):
        clock.now += durations(engine.state.iteration)

    return Engine(step)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "crln.progress"]


def _end(seconds_from_now: float) -> str:
    return f"{datetime.datetime.fromtimestamp(WALL + seconds_from_now):%Y-%m-%d %H:%M:%S}"


def test_total_then_rate_and_expected_end(caplog):
    clock = FakeClock()
    # the first two iterations are slow (compilation): they are not timed
    engine = _engine(clock, lambda it: 10.0 if it <= 2 else 0.5)
    RunProgress(log_interval=5, warmup=2, first_report=3, clock=clock, wall_clock=lambda: WALL).attach(engine)
    with caplog.at_level(logging.INFO, logger="crln.progress"):
        engine.run(range(10), max_epochs=2, epoch_length=10)
    lines = _lines(caplog)
    assert lines[0] == "run: 20 iterations in total (2 epochs x 10 iterations)"
    # timed from the end of iteration 2; first rate line 3 iterations later (iteration 5), then every 5
    assert lines[1] == f"iteration 5/20 (25.0 %): 0.500 s/it, 0:00:08 left, expected end {_end(15 * 0.5)}"
    assert lines[2] == f"iteration 10/20 (50.0 %): 0.500 s/it, 0:00:05 left, expected end {_end(10 * 0.5)}"
    assert [line.split(":")[0] for line in lines[3:5]] == ["iteration 15/20 (75.0 %)", "iteration 20/20 (100.0 %)"]
    assert lines[5] == "run finished: 20 iterations in 0:00:29 (1.450 s/it)"
    assert len(lines) == 6


def test_resume_counts_only_this_process(caplog):
    clock = FakeClock()
    engine = _engine(clock, lambda it: 2.0)
    RunProgress(log_interval=4, warmup=1, first_report=2, clock=clock, wall_clock=lambda: WALL).attach(engine)

    @engine.on(Events.STARTED)  # like the bundle's resume CheckpointLoader: attached after the train handlers
    def restore(e):
        e.state.iteration, e.state.epoch = 12, 3

    with caplog.at_level(logging.INFO, logger="crln.progress"):
        engine.run(range(4), max_epochs=5, epoch_length=4)
    lines = _lines(caplog)
    assert lines[0] == "run: 20 iterations in total (5 epochs x 4 iterations), resuming after iteration 12 (8 left)"
    # timing from iteration 13; first line at 12 + 1 + 2 = 15 (4.0 s over 2 iterations), then 16 and 20
    assert lines[1] == f"iteration 15/20 (75.0 %): 2.000 s/it, 0:00:10 left, expected end {_end(10.0)}"
    assert lines[2].startswith("iteration 16/20 (80.0 %): 2.000 s/it") and lines[3].startswith("iteration 20/20")
    assert lines[4] == "run finished: 8 iterations in 0:00:16 (2.000 s/it)"


def test_no_device_tensor_is_read():
    """The handler reads engine.state's integers only: an output that fails on any access proves it."""

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"RunProgress read the output ({name})")

    clock = FakeClock()
    engine = Engine(lambda e, b: Untouchable())
    RunProgress(log_interval=1, warmup=0, clock=clock).attach(engine)
    engine.run(range(3), max_epochs=1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="log_interval must be an integer >= 1, got 0"):
        RunProgress(log_interval=0)
