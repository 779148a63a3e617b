"""Stop a diverged run before anything writes its weights."""

from __future__ import annotations

from ignite.engine import Engine, Events

__all__ = ["NonFiniteCheck"]


class NonFiniteCheck:
    """Call the trainer's ``check_finite()`` at every epoch end and at the end of the run.

    :meth:`~crln_monai.engines.SemiSupervisedTrainer.check_finite` raises ``FloatingPointError`` when a loss was
    non-finite since its last check. Attach this before the validation and the checkpoint savers (Ignite calls an
    event's handlers in the order they were attached), so no checkpoint, best model or export ever holds the
    weights of a diverged run. Under DDP the check is a collective: attach it on every rank.
    """

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        engine.check_finite()
