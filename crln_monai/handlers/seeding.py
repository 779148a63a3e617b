"""Per-epoch reseeding, so that a run resumed at an epoch boundary repeats the uninterrupted run exactly."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events
from monai.utils import set_determinism

from ..utils import epoch_seed

__all__ = ["EpochSeeder"]


class EpochSeeder:
    """At every ``EPOCH_STARTED``, reseed everything random as a function of (seed, epoch).

    Reseeds the global generators (``monai.utils.set_determinism``: torch, numpy, random; dropout and DataLoader
    worker seeds derive from them), the dataset's transforms (used directly when ``num_workers=0``), the batch
    sampler (``set_epoch``) and the trainer's device generator (``reseed``: strong augmentation and CPS sampling).
    Without it a resumed run would continue from freshly seeded generators and diverge from the uninterrupted one.

    Args:
        seed: base seed.
        sampler: an object with ``set_epoch(epoch)`` (the two-stream batch sampler), optional.
        dataset: a dataset whose ``transform`` has ``set_random_state(seed)``, optional.
        deterministic: also ask torch for deterministic algorithms (slower on GPU; see the docs).
    """

    def __init__(self, seed: int = 0, sampler: Any = None, dataset: Any = None, deterministic: bool = False) -> None:
        self.seed = seed
        self.sampler = sampler
        self.dataset = dataset
        self.deterministic = deterministic

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        seed = epoch_seed(self.seed, epoch)
        set_determinism(seed=seed, use_deterministic_algorithms=self.deterministic or None)
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(engine, "reseed"):
            engine.reseed(epoch)
