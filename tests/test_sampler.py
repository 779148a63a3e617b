"""Tests of crln_monai.data.sampler.TwoStreamBatchSampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader

from crln_monai.data.sampler import TwoStreamBatchSampler


def test_batch_composition_and_ranges():
    sampler = TwoStreamBatchSampler(5, 11, labelled_batch_size=2, unlabelled_batch_size=3, num_batches=300)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 300 and sampler.batch_size == 5
    b = np.array(batches)
    assert b.shape == (300, 5)
    assert ((b[:, :2] >= 0) & (b[:, :2] < 5)).all()
    assert ((b[:, 2:] >= 5) & (b[:, 2:] < 16)).all()
    # uniform draws cover every case of each stream
    assert set(b[:, :2].ravel()) == set(range(5)) and set(b[:, 2:].ravel()) == set(range(5, 16))


def test_draws_with_replacement():
    sampler = TwoStreamBatchSampler(2, 2, num_batches=400)
    b = np.array(list(sampler))
    repeated_labelled = (b[:, 0] == b[:, 1]).mean()
    repeated_unlabelled = (b[:, 2] == b[:, 3]).mean()
    # with replacement from 2 cases: the same case twice in a batch half of the time (never, without replacement)
    assert 0.35 < repeated_labelled < 0.65 and 0.35 < repeated_unlabelled < 0.65
    counts = np.bincount(b.ravel(), minlength=4)
    assert counts.min() > 0.4 * counts.mean()


def test_deterministic_per_seed_epoch_rank():
    a, b = TwoStreamBatchSampler(8, 30, seed=3), TwoStreamBatchSampler(8, 30, seed=3)
    assert list(a) == list(b) == list(a)  # no hidden state: a second pass of the same epoch replays it
    a.set_epoch(7)
    b.set_epoch(7)
    assert list(a) == list(b)
    epoch7 = list(a)
    a.set_epoch(8)
    assert list(a) != epoch7
    assert list(TwoStreamBatchSampler(8, 30, seed=4)) != list(TwoStreamBatchSampler(8, 30, seed=3))
    np.testing.assert_array_equal(a.batches(7), np.array(epoch7))


def test_rank_split_disjoint_and_covering():
    num_labelled, num_unlabelled, world = 7, 10, 3
    drawn, shares = [], []
    for rank in range(world):
        s = TwoStreamBatchSampler(num_labelled, num_unlabelled, num_batches=500, rank=rank, world_size=world)
        shares.append(set(s.labelled_indices) | set(s.unlabelled_indices))
        b = np.array(list(s))
        drawn.append(set(b.ravel()))
        assert drawn[-1] == shares[-1]  # draws only (and all) of its share
        assert set(b[:, :2].ravel()) == set(range(rank, num_labelled, world))
    for i in range(world):
        for j in range(i + 1, world):
            assert not drawn[i] & drawn[j]
    assert set().union(*drawn) == set(range(num_labelled + num_unlabelled))


def test_rank_split_fallback_for_a_small_stream():
    r0 = TwoStreamBatchSampler(1, 4, num_batches=50, rank=0, world_size=2)
    r1 = TwoStreamBatchSampler(1, 4, num_batches=50, rank=1, world_size=2)
    assert list(r0.labelled_indices) == list(r1.labelled_indices) == [0]  # full stream on both ranks
    assert set(np.array(list(r0))[:, 2:].ravel()) == {1, 3}
    assert set(np.array(list(r1))[:, 2:].ravel()) == {2, 4}
    assert list(r0) != list(r1)  # the rank is part of the seed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_labelled=4, num_unlabelled=0), r"empty unlabelled pool"),
        (dict(num_labelled=0, num_unlabelled=4), r"empty labelled pool"),
        (dict(num_labelled=4, num_unlabelled=4, labelled_batch_size=0), r"labelled_batch_size must be an int >= 1"),
        (dict(num_labelled=4, num_unlabelled=4, num_batches=0), r"num_batches must be an int >= 1"),
        (dict(num_labelled=4, num_unlabelled=4, rank=2, world_size=2), r"rank must be in \[0, world_size=2\)"),
        (dict(num_labelled=4.0, num_unlabelled=4), r"num_labelled must be an int"),
        (dict(num_labelled=4, num_unlabelled=4, seed=-1), r"seed must be an int >= 0"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwoStreamBatchSampler(**kwargs)


def test_set_epoch_error():
    with pytest.raises(ValueError, match=r"epoch must be an int >= 0"):
        TwoStreamBatchSampler(2, 2).set_epoch(-1)


def test_supervised_only_loader():
    s = TwoStreamBatchSampler(3, 0, labelled_batch_size=2, unlabelled_batch_size=0, num_batches=10)
    b = np.array(list(s))
    assert b.shape == (10, 2) and b.max() < 3


def test_with_dataloader():
    dataset = [{"index": i} for i in range(12)]
    sampler = TwoStreamBatchSampler(4, 8, num_batches=6)
    batches = [batch["index"] for batch in DataLoader(dataset, batch_sampler=sampler)]
    assert [b.tolist() for b in batches] == list(sampler)
    assert all(isinstance(b, torch.Tensor) and b.shape == (4,) for b in batches)


def _record(num_epochs: int, resume_from_epoch: int = 0) -> dict[int, list[list[int]]]:
    """Batches seen per epoch by an Ignite engine driven by a loader over the sampler."""
    sampler = TwoStreamBatchSampler(4, 8, num_batches=5, seed=11)
    loader = DataLoader(list(range(12)), batch_sampler=sampler)
    seen: dict[int, list[list[int]]] = {}
    engine = Engine(lambda e, batch: seen.setdefault(e.state.epoch, []).append(batch.tolist()))
    sampler.attach(engine)
    if resume_from_epoch:
        engine.load_state_dict({"epoch": resume_from_epoch, "epoch_length": 5, "max_epochs": num_epochs})
    engine.run(loader, max_epochs=num_epochs)
    return seen


def test_attach_gives_each_epoch_its_own_batches_and_resume_replays_them():
    full = _record(3)
    assert sorted(full) == [1, 2, 3]
    sampler = TwoStreamBatchSampler(4, 8, num_batches=5, seed=11)
    for epoch, batches in full.items():
        assert batches == sampler.batches(epoch).tolist()
    assert full[1] != full[2]
    resumed = _record(3, resume_from_epoch=1)
    assert sorted(resumed) == [2, 3]
    assert resumed[2] == full[2] and resumed[3] == full[3]
