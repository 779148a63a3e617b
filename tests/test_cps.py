"""Tests of the CPS loss (Eqs. (9)–(14)) and its sampling helpers."""

from __future__ import annotations

import math

import pytest
import torch

from crln_monai.losses import CPSLoss
from crln_monai.losses.cps import (
    _gather_voxels,
    negative_class_weights,
    sample_categorical_rows,
    sample_from_mask_rows,
)

TAU = 0.5
NQ, NN = 3, 5

# Six voxels (spatial 6x1x1), embedding width D = 4.
#   v0: class 0, valid, p0 = 0.6   -> the only anchor of class 0
#   v1: class 1, valid, p1 = 0.7   -> the only anchor and the only voxel of class 1
#   v2: class 0, valid, p0 = 0.99  -> confident: in V_0 (class mean, negative of class 1) but no anchor
#   v3..v5: invalid (would be an anchor / a negative if they were valid)
# cos(v0, v1) = cos(v2, v1) = 0.6 / sqrt(2), so every negative draw has the same cosine.
EMBEDDING = [
    [0.6, 0.8, 0.0, 0.0],
    [1.0, 0.0, 1.0, 0.0],
    [1.2, -1.6, 0.0, 0.0],
    [-3.0, 1.0, 2.0, 5.0],
    [4.0, 4.0, -1.0, 2.0],
    [0.0, -1.0, 0.0, 3.0],
]
LABEL = [0, 1, 0, 0, -1, 1]
VALID = [True, True, True, False, False, False]
PROBS = [[0.6, 0.4], [0.3, 0.7], [0.99, 0.01], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8]]

COS_NEG = 0.6 / math.sqrt(2)  # every anchor–negative cosine
COS_POS_MEAN = (0.22 / math.sqrt(0.97), 1.0)  # cos(v0, r̄0 = (0.9, -0.4, 0, 0)), cos(v1, r̄1 = v1)


def info_nce(cos_pos: float, cos_neg: float = COS_NEG, num_negatives: int = NN) -> float:
    """-log(e^{p/τ} / (e^{p/τ} + N e^{n/τ})) for one anchor with identical negatives."""
    return math.log(1 + num_negatives * math.exp((cos_neg - cos_pos) / TAU))


def forced_case(num_classes: int = 2, requires_grad: bool = False):
    """(embedding, label, valid, probs) of the six-voxel case, batch 1, spatial (6, 1, 1)."""
    embedding = torch.tensor(EMBEDDING).T.reshape(1, 4, 6, 1, 1).contiguous().requires_grad_(requires_grad)
    label = torch.tensor(LABEL).reshape(1, 6, 1, 1)
    valid = torch.tensor(VALID).reshape(1, 6, 1, 1)
    probs = torch.zeros(1, num_classes, 6, 1, 1)
    probs[:, :2] = torch.tensor(PROBS).T.reshape(1, 2, 6, 1, 1)
    return embedding, label, valid, probs


def make_loss(**kwargs) -> CPSLoss:
    args = dict(num_queries=NQ, num_negatives=NN, temperature=TAU, strong_threshold=0.97, positive="mean")
    args.update(kwargs)
    return CPSLoss(**args)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def prototypes_feature(pi: list[list[float]], width: int = 3) -> torch.Tensor:
    """(C, K, F) prototypes whose mean over the feature axis is ``pi`` (C, K)."""
    offsets = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    return torch.tensor(pi).unsqueeze(-1) + offsets


PI = [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]  # prototype means of class 0 and class 1


def test_hand_computed_mean_positive():
    expected = (info_nce(COS_POS_MEAN[0]) + info_nce(COS_POS_MEAN[1])) / 2
    got = make_loss()(*forced_case(), generator=seeded())
    assert got.ndim == 0 and got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the result is forced: another seed and (B, 1, ...) label/valid give the same
    embedding, label, valid, probs = forced_case()
    again = make_loss()(embedding, label[:, None], valid[:, None], probs, generator=seeded(7))
    assert again.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_only_through_anchors():
    embedding, label, valid, probs = forced_case(requires_grad=True)
    make_loss()(embedding, label, valid, probs, generator=seeded()).backward()
    voxel_grad = embedding.grad.abs().sum(1).flatten()
    assert voxel_grad[0] > 0 and voxel_grad[1] > 0  # the two anchors
    assert torch.all(voxel_grad[2:] == 0)  # confident (mean/negative only) and invalid voxels


def test_invalid_voxels_have_no_influence():
    embedding, label, valid, probs = forced_case()
    reference = make_loss()(embedding, label, valid, probs, generator=seeded())
    embedding, label, probs = embedding.clone(), label.clone(), probs.clone()
    embedding[0, :, 3:] = torch.randn(4, 3, 1, 1) * 10
    label[0, 3:] = torch.tensor([1, 0, 0]).view(3, 1, 1)
    probs[0, :, 3:] = 0.5
    changed = make_loss()(embedding, label, valid, probs, generator=seeded())
    assert changed.item() == pytest.approx(reference.item(), rel=1e-6)


def test_confident_voxels_are_not_anchors():
    # with threshold 1.0 the confident v2 becomes an anchor of class 0 too, and cos(v2, r̄0) != cos(v0, r̄0)
    forced = make_loss(num_queries=64)(*forced_case(), generator=seeded())
    loose = make_loss(num_queries=64, strong_threshold=1.0)(*forced_case(), generator=seeded())
    cos_v2 = (1.08 + 0.64) / (2 * math.sqrt(0.97))
    assert forced.item() == pytest.approx((info_nce(COS_POS_MEAN[0]) + info_nce(1.0)) / 2, rel=1e-5)
    assert loose.item() != pytest.approx(forced.item(), rel=1e-3)
    # the loose loss mixes the two class-0 anchors, so it lies between the two pure values
    pure = sorted([(info_nce(c) + info_nce(1.0)) / 2 for c in (COS_POS_MEAN[0], cos_v2)])
    assert pure[0] < loose.item() < pure[1]


def test_prototype_positive():
    protos = prototypes_feature(PI)  # (2, 4, 3): mean over F gives PI
    got = make_loss(positive="prototype")(*forced_case(), protos, generator=seeded())
    # cos(v0, π0 = e2) = 0.8, cos(v1, π1 = e1) = 1/sqrt(2)
    expected = (info_nce(0.8) + info_nce(1 / math.sqrt(2))) / 2
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_unassertive_positive():
    protos = prototypes_feature(PI)
    got = make_loss(positive="unassertive", xi=0.6)(*forced_case(), protos, generator=seeded())
    # r+0 ∝ r̄0 + 0.6 π0 = (0.9, 0.2, 0, 0); r+1 ∝ v1 + 0.6 π1 = (1.6, 0, 1, 0)
    cos0 = (0.54 + 0.16) / math.sqrt(0.85)
    cos1 = 2.6 / (math.sqrt(2) * math.sqrt(3.56))
    assert got.item() == pytest.approx((info_nce(cos0) + info_nce(cos1)) / 2, rel=1e-5)


def test_prototype_reduce_over_prototypes():
    # (C, K=5, F=4) with offsets that cancel over K: the mean over the prototypes is PI
    offsets = (torch.arange(5, dtype=torch.float32) - 2).view(1, 5, 1) * torch.tensor([1.0, -2.0, 0.5, 3.0])
    protos = torch.tensor(PI).unsqueeze(1) + offsets
    got = make_loss(positive="prototype", prototype_reduce="prototype")(*forced_case(), protos, generator=seeded())
    assert got.item() == pytest.approx((info_nce(0.8) + info_nce(1 / math.sqrt(2))) / 2, rel=1e-5)


def test_prototype_size_mismatch_raises():
    with pytest.raises(ValueError, match=r"= 5.*D = 4"):
        make_loss(positive="prototype")(*forced_case(), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match=r"= 3.*D = 4"):
        make_loss(positive="unassertive", prototype_reduce="prototype")(*forced_case(), torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="prototypes"):
        make_loss(positive="prototype")(*forced_case(), torch.zeros(3, 4, 3))


@pytest.mark.parametrize("positive", ["mean", "prototype", "unassertive"])
def test_without_prototypes_every_mode_uses_the_class_mean(positive):
    got = make_loss(positive=positive)(*forced_case(), None, generator=seeded())
    assert got.item() == pytest.approx((info_nce(COS_POS_MEAN[0]) + info_nce(1.0)) / 2, rel=1e-5)


def test_xi_uniform_is_random_and_fixed_is_not():
    protos = prototypes_feature(PI)
    fixed = [make_loss(positive="unassertive")(*forced_case(), protos, generator=seeded(s)) for s in (1, 2)]
    uniform = [make_loss(positive="unassertive", xi_mode="uniform")(*forced_case(), protos, generator=seeded(s)) for s in (1, 2)]
    assert fixed[0].item() == fixed[1].item()
    assert uniform[0].item() != uniform[1].item()
    zero = make_loss(positive="unassertive", xi=0.0, xi_mode="uniform")(*forced_case(), protos, generator=seeded(1))
    assert zero.item() == pytest.approx((info_nce(COS_POS_MEAN[0]) + info_nce(1.0)) / 2, rel=1e-5)


@pytest.mark.parametrize("case", ["one_class", "none_valid"])
def test_fewer_than_two_valid_classes_gives_zero(case):
    embedding, label, valid, probs = forced_case(requires_grad=True)
    if case == "one_class":
        valid = valid & (label == 0)
    else:
        valid = torch.zeros_like(valid)
    loss = make_loss()(embedding, label, valid, probs, generator=seeded())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert embedding.grad is not None and torch.all(embedding.grad == 0)


def test_three_classes_with_an_empty_class():
    # class 2 has no valid voxel: |C_v| = 2, same value as the binary case
    got = make_loss()(*forced_case(num_classes=3), generator=seeded())
    assert got.item() == pytest.approx((info_nce(COS_POS_MEAN[0]) + info_nce(1.0)) / 2, rel=1e-5)


def test_three_classes_class_without_anchors_counts_in_denominator():
    # add v6 of class 2, confident (no anchor). Its direction u has cos(v0, u) = cos(v1, u) = 0.6/sqrt(2),
    # so the negatives of both anchor classes still all have cosine COS_NEG, whichever class they come from.
    y, z = 0.75 / math.sqrt(2), 0.6
    u = [0.0, y, z, math.sqrt(1 - y * y - z * z)]
    embedding, label, valid, probs = forced_case(num_classes=3)
    embedding = torch.cat([embedding, torch.tensor(u).view(1, 4, 1, 1, 1)], dim=2)
    label = torch.cat([label, torch.tensor([2]).view(1, 1, 1, 1)], dim=1)
    valid = torch.cat([valid, torch.tensor([True]).view(1, 1, 1, 1)], dim=1)
    probs = torch.cat([probs, torch.tensor([0.0, 0.005, 0.995]).view(1, 3, 1, 1, 1)], dim=2)
    got = make_loss()(embedding, label, valid, probs, generator=seeded())
    assert got.item() == pytest.approx((info_nce(COS_POS_MEAN[0]) + info_nce(1.0) + 0.0) / 3, rel=1e-5)


def random_case(num_classes: int = 3, dim: int = 8, shape=(2, 10, 9, 8), seed: int = 0):
    torch.manual_seed(seed)
    embedding = torch.randn(shape[0], dim, *shape[1:], requires_grad=True)
    probs = (torch.randn(shape[0], num_classes, *shape[1:]) * 3).softmax(1)
    label = probs.argmax(1)
    valid = probs.amax(1) > 0.5
    return embedding, label, valid, probs


def test_seeded_generator_is_reproducible_and_random_case_works():
    embedding, label, valid, probs = random_case()
    loss = CPSLoss(num_queries=16, num_negatives=32, positive="unassertive", xi_mode="uniform")
    protos = torch.randn(3, 8, 5)  # K = 8 = D
    first = loss(embedding, label, valid, probs, protos, generator=seeded(3))
    second = loss(embedding, label, valid, probs, protos, generator=seeded(3))
    other = loss(embedding, label, valid, probs, protos, generator=seeded(4))
    assert first.item() == second.item()
    assert first.item() != other.item()
    first.backward()
    assert torch.isfinite(first) and first.item() > 0
    assert torch.isfinite(embedding.grad).all()
    touched = (embedding.grad.abs().sum(1) > 0).sum().item()
    assert 0 < touched <= 3 * 16  # at most N_q anchors per class get gradient


def test_sample_from_mask_rows_is_uniform_over_the_mask():
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, [1, 4, 7]] = True
    mask[1, 9] = True  # row 2 stays empty
    rows = torch.tensor([0] * 30000 + [1] * 100 + [2] * 100)
    idx = sample_from_mask_rows(mask, rows, seeded(0))
    assert idx.shape == rows.shape and idx.dtype == torch.long
    first = idx[:30000]
    assert set(first.tolist()) == {1, 4, 7}
    freq = torch.bincount(first, minlength=10)[[1, 4, 7]].float() / 30000
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.02)
    assert torch.all(idx[30000:30100] == 9)
    assert torch.all((idx[30100:] >= 0) & (idx[30100:] < 10))  # empty row: garbage but in range


def test_negative_classes_follow_the_cosine_softmax():
    # class means e1, e2 and (e1 + e2)/sqrt(2); class 3 is empty
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    class_valid = torch.tensor([True, True, True, False])
    weights = negative_class_weights(means, class_valid, TAU)
    c = 1 / math.sqrt(2)
    # row 0: classes 1 (cos 0) and 2 (cos c); classes 0 (itself) and 3 (empty) excluded
    p2 = math.exp(c / TAU) / (math.exp(0.0) + math.exp(c / TAU))
    row0 = weights[0] / weights[0].sum()
    assert torch.allclose(row0, torch.tensor([0.0, 1 - p2, p2, 0.0]), atol=1e-6)
    row2 = weights[2] / weights[2].sum()
    assert torch.allclose(row2, torch.tensor([0.5, 0.5, 0.0, 0.0]), atol=1e-6)
    assert torch.all(weights[3] == weights[3]) and weights[:, 3].sum() == 0
    draws = sample_categorical_rows(weights, 40000, seeded(0))
    freq0 = torch.bincount(draws[0], minlength=4).float() / 40000
    assert torch.allclose(freq0, torch.tensor([0.0, 1 - p2, p2, 0.0]), atol=0.01)
    # an all-zero row still gives in-range categories
    empty = sample_categorical_rows(torch.zeros(1, 4), 10, seeded(0))
    assert torch.all((empty >= 0) & (empty < 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        CPSLoss(positive="best")
    with pytest.raises(ValueError, match="xi_mode"):
        CPSLoss(xi_mode="normal")
    with pytest.raises(ValueError, match="prototype_reduce"):
        CPSLoss(prototype_reduce="sum")
    with pytest.raises(ValueError, match="num_queries"):
        CPSLoss(num_queries=0)
    with pytest.raises(ValueError, match="temperature"):
        CPSLoss(temperature=0.0)
    embedding, label, valid, probs = forced_case()
    with pytest.raises(ValueError, match="label"):
        make_loss()(embedding, label[:, :5], valid, probs)
    with pytest.raises(ValueError, match="probs"):
        make_loss()(embedding, label, valid, probs[:, :, :5])


@pytest.mark.gpu
def test_no_host_synchronisation_on_cuda():
    embedding, label, valid, probs = (t.cuda().detach() for t in random_case(shape=(2, 16, 16, 16)))
    embedding.requires_grad_(True)
    protos = torch.randn(3, 8, 5, device="cuda")
    loss_fn = CPSLoss(num_queries=32, num_negatives=64, xi_mode="uniform")
    generator = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = loss_fn(embedding, label, valid, probs, protos, generator=generator)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item() and torch.isfinite(embedding.grad).all().item()


def test_voxel_gather_equals_indexing_and_routes_gradients():
    emb = torch.randn(3, 5, 7, requires_grad=True)  # (B, D, S)
    index = torch.tensor([[0, 20, 8], [13, 13, 6]])  # flat voxel indices in [0, B*S); 13 drawn twice
    expected = emb[index // 7, :, index % 7]  # (2, 3, D)
    gathered = _gather_voxels(emb, index)
    assert torch.equal(gathered, expected)
    gathered.sum().backward()
    count = torch.zeros(3, 7)
    for i in index.flatten().tolist():
        count[i // 7, i % 7] += 1  # voxel 13 (sample 1, voxel 6) twice
    assert torch.equal(emb.grad, count[:, None, :].expand(3, 5, 7))
