"""Two-stream batch sampler: every batch holds labelled cases first, then unlabelled cases.

Neither MONAI nor Ignite has one. Unlike UA-MT's ``TwoStreamBatchSampler`` (which walks
permutations), CRLN's loader draws both streams uniformly **with replacement**, as this sampler does; its
batches depend only on ``(seed, epoch, rank)``, so a resumed run replays exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TwoStreamBatchSampler"]


class TwoStreamBatchSampler(Sampler[list[int]]):
    """Batch sampler over a dataset laid out as ``[labelled cases..., unlabelled cases...]``.

    Each batch is ``labelled_batch_size`` indices in ``[0, num_labelled)`` followed by ``unlabelled_batch_size``
    indices in ``[num_labelled, num_labelled + num_unlabelled)``, each drawn uniformly with replacement. Use it as
    ``DataLoader(dataset, batch_sampler=sampler)``; the trainer splits the batch at ``labelled_batch_size``.

    Determinism: the batches of one pass are a function of ``(seed, epoch, rank)`` only (numpy ``SeedSequence``
    of the three). The epoch does **not** advance by itself: call :meth:`set_epoch` at every epoch start, or
    :meth:`attach` the sampler to the Ignite trainer, which does so at ``EPOCH_STARTED`` with the engine's
    (restored) epoch number.

    DDP: rank ``r`` of ``world_size`` draws only from its share of each stream, the indices ``r::world_size`` of
    that stream, so ranks see disjoint cases. A stream with fewer cases than ``world_size`` cannot be shared
    out; then every rank draws from the full stream (ranks may see the same cases of that stream).

    Args:
        num_labelled: number of labelled cases (the first ones of the dataset).
        num_unlabelled: number of unlabelled cases (following the labelled ones).
        labelled_batch_size: labelled indices per batch (>= 1).
        unlabelled_batch_size: unlabelled indices per batch (>= 0; 0 gives a supervised-only loader).
        num_batches: batches per epoch (``len(sampler)``).
        seed: base seed.
        rank: this process's rank.
        world_size: number of processes.

    Raises:
        ValueError: a size, count or rank out of range, e.g. ``num_unlabelled == 0`` with
            ``unlabelled_batch_size > 0`` ("empty unlabelled pool").
    """

    def __init__(
        self,
        num_labelled: int,
        num_unlabelled: int,
        labelled_batch_size: int = 2,
        unlabelled_batch_size: int = 2,
        num_batches: int = 200,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        for name, value, low in (
            ("num_labelled", num_labelled, 0),
            ("num_unlabelled", num_unlabelled, 0),
            ("labelled_batch_size", labelled_batch_size, 1),
            ("unlabelled_batch_size", unlabelled_batch_size, 0),
            ("num_batches", num_batches, 1),
            ("seed", seed, 0),
            ("world_size", world_size, 1),
            ("rank", rank, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
        if num_labelled == 0:
            raise ValueError("num_labelled=0: empty labelled pool; the two-stream sampler needs labelled cases.")
        if num_unlabelled == 0 and unlabelled_batch_size > 0:
            raise ValueError(
                f"num_unlabelled=0: empty unlabelled pool, but unlabelled_batch_size={unlabelled_batch_size}; "
                "add unlabelled cases or set unlabelled_batch_size=0."
            )
        if rank >= world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
        self.num_labelled = int(num_labelled)
        self.num_unlabelled = int(num_unlabelled)
        self.labelled_batch_size = int(labelled_batch_size)
        self.unlabelled_batch_size = int(unlabelled_batch_size)
        self.num_batches = int(num_batches)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.labelled_indices = self._share(np.arange(self.num_labelled))
        self.unlabelled_indices = self._share(np.arange(self.num_labelled, self.num_labelled + self.num_unlabelled))

    @property
    def batch_size(self) -> int:
        """Indices per batch: labelled + unlabelled."""
        return self.labelled_batch_size + self.unlabelled_batch_size

    def _share(self, stream: np.ndarray) -> np.ndarray:
        """This rank's indices ``stream[rank::world_size]``; the full stream if it has fewer than world_size."""
        return stream if len(stream) < self.world_size else stream[self.rank :: self.world_size]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next ``iter(self)`` yields."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}.")
        self.epoch = int(epoch)

    def attach(self, engine: Any) -> None:
        """Call :meth:`set_epoch` with ``engine.state.epoch`` at every Ignite ``EPOCH_STARTED``.

        Ignite creates the epoch's data iterator after ``EPOCH_STARTED``, so each epoch (also after resuming
        from a checkpoint, which restores ``engine.state.epoch``) gets the batches of its own epoch number.
        Bundle use: ``"$@train::sampler.attach(@train::trainer)"`` in the run list.
        """
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.set_epoch(e.state.epoch))

    def batches(self, epoch: int | None = None) -> np.ndarray:
        """All batches of one epoch, shape ``(num_batches, labelled_batch_size + unlabelled_batch_size)``.

        Args:
            epoch: the epoch; default the one set by :meth:`set_epoch`.
        """
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, self.rank]))
        labelled = rng.choice(self.labelled_indices, size=(self.num_batches, self.labelled_batch_size), replace=True)
        if self.unlabelled_batch_size == 0:
            return labelled
        unlabelled = rng.choice(
            self.unlabelled_indices, size=(self.num_batches, self.unlabelled_batch_size), replace=True
        )
        return np.concatenate([labelled, unlabelled], axis=1)

    def __iter__(self) -> Iterator[list[int]]:
        # drawn eagerly, so the epoch is the one current when the iterator is created
        return iter(self.batches().tolist())

    def __len__(self) -> int:
        return self.num_batches
