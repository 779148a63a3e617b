"""The iteration a training run starts from: 0 for a fresh run, the restored iteration for a resumed one."""

from __future__ import annotations

from collections.abc import Callable

from ignite.engine import Engine, Events

__all__ = ["on_run_start"]


def on_run_start(engine: Engine, callback: Callable[[int], None]) -> None:
    """Call ``callback(iteration)`` once per ``engine.run``, when its first epoch starts.

    ``CheckpointLoader`` (MONAI's and :class:`~crln_monai.handlers.CheckedCheckpointLoader`) restores the trainer
    at ``STARTED``, and a loader is attached after the configured handlers, so ``STARTED`` is too early to see the
    restored iteration; the first ``EPOCH_STARTED`` sees it. Ignite has no event for "the run's state is final".
    """
    fired = [False]

    def started(_: Engine) -> None:
        fired[0] = False

    def epoch_started(e: Engine) -> None:
        if not fired[0]:
            fired[0] = True
            callback(int(e.state.iteration))

    engine.add_event_handler(Events.STARTED, started)
    engine.add_event_handler(Events.EPOCH_STARTED, epoch_started)
