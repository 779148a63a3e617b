"""Tests of the rectifier variants (docs/method.md#rectification: Eq. 8, Eq. 16, Table 7, A7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crln_monai.networks.rectifier import RECTIFIER_MODES, Rectifier

SHAPE = (2, 2, 4, 4, 3)


def random_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=generator), torch.rand(SHAPE, generator=generator) * 3


def half_ce_dice(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Eq. (1): ½(CE + foreground Dice with squared denominator), written out for the test."""
    foreground = logits.softmax(dim=1)[:, 1]
    target = (label == 1).float()
    dice = 1 - (2 * (foreground * target).sum() + 1e-5) / ((foreground**2).sum() + (target**2).sum() + 1e-5)
    return 0.5 * (F.cross_entropy(logits, label) + dice)


def set_mu(rectifier: Rectifier, value: float) -> None:
    with torch.no_grad():
        rectifier.raw_mu.fill_(value)


def test_v3_starts_at_mu_zero_and_adds_the_map():
    rectifier = Rectifier()
    logits, relation_map = random_pair()
    assert [name for name, _ in rectifier.named_parameters()] == ["raw_mu"]
    assert rectifier.raw_mu.shape == () and rectifier.mu.item() == 0.0
    assert torch.allclose(rectifier(logits, relation_map), logits + relation_map)


@pytest.mark.parametrize("raw, effective", [(1.0, 1.0), (2.0, 1.0), (-1.0, 0.0), (0.25, 0.25)])
def test_v3_clamps_mu(raw, effective):
    rectifier = Rectifier()
    set_mu(rectifier, raw)
    logits, relation_map = random_pair()
    assert rectifier.mu.item() == effective
    rectified = rectifier(logits, relation_map)
    if effective == 1.0:
        assert torch.equal(rectified, logits)
    else:
        assert torch.allclose(rectified, logits + (1 - effective) * relation_map)


@pytest.mark.parametrize(
    "raw, sign, passes",
    [
        (0.0, 1, True),  # at the boundary the gradient passes either way
        (0.0, -1, True),
        (0.5, 1, True),
        (2.0, -1, False),  # above 1, a descent step would raise mu further: blocked
        (2.0, 1, True),  # ... but a step back down passes
        (-1.0, 1, False),  # below 0, a step further down is blocked
        (-1.0, -1, True),
    ],
)
def test_v3_gradient_passes_inside_and_inwards_only(raw, sign, passes):
    rectifier = Rectifier()
    set_mu(rectifier, raw)
    logits, relation_map = random_pair()
    # d/dmu of sign * -<rectified, map> = sign * sum(map²) > 0 for sign=1 (descent lowers mu)
    (-sign * (rectifier(logits, relation_map) * relation_map).sum()).backward()
    expected = sign * (relation_map**2).sum()
    if passes:
        assert torch.allclose(rectifier.raw_mu.grad, expected)
    else:
        assert rectifier.raw_mu.grad.item() == 0.0


def test_mu_objective_moves_mu_and_only_mu():
    torch.manual_seed(0)
    image = torch.randn(2, 1, 8, 8, 4)
    label = (image[:, 0] > 0).long()
    logits_producer = torch.nn.Conv3d(1, 2, 1)
    map_producer = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():  # logits follow the label; the relation map votes for the wrong class
        logits_producer.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1))
        logits_producer.bias.zero_()
        map_producer.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1, 1))
        map_producer.bias.fill_(2.0)
    producers = [*logits_producer.parameters(), *map_producer.parameters()]
    producer_state = [parameter.detach().clone() for parameter in producers]
    rectifier = Rectifier()
    optimiser = torch.optim.SGD(rectifier.parameters(), lr=0.1)
    with torch.no_grad():  # step B of the alternation: the student is frozen
        logits, relation_map = logits_producer(image), map_producer(image)
    before = half_ce_dice(rectifier(logits, relation_map), label)
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    assert rectifier.raw_mu.item() > 0  # a harmful map: less of it
    assert 0 < rectifier.mu.item() <= 1
    assert half_ce_dice(rectifier(logits, relation_map), label) < before
    for parameter, state in zip(producers, producer_state):
        assert parameter.grad is None
        assert torch.equal(parameter, state)


def test_mu_objective_with_a_helpful_map_lowers_raw_mu():
    torch.manual_seed(0)
    label = torch.randint(0, 2, (2, 6, 6, 4))
    onehot = F.one_hot(label, 2).permute(0, 4, 1, 2, 3).float()
    logits = torch.zeros(2, 2, 6, 6, 4)  # undecided prediction
    relation_map = 2 * onehot  # a map that knows the answer
    rectifier = Rectifier()
    optimiser = torch.optim.SGD(rectifier.parameters(), lr=0.1)
    half_ce_dice(rectifier(logits, relation_map), label).backward()
    optimiser.step()
    assert rectifier.raw_mu.item() < 0 and rectifier.mu.item() == 0.0


def _logit_pair(confidence: float) -> list[float]:
    """Two-class logits whose softmax gives class 1 the probability ``confidence``."""
    return [0.0, math.log(confidence / (1 - confidence))]


def test_fixed_v1_voxel_cases():
    cases = [  # (plain confidence, map confidence, expected source)
        (0.99, 0.999, "logits"),  # plain prediction already confident
        (0.60, 0.90, "map"),  # unconfident prediction, more confident map
        (0.60, 0.55, "logits"),  # map less confident
        (0.80, 0.80, "logits"),  # tie: the map must be strictly more confident
    ]
    logits = torch.tensor([_logit_pair(p) for p, _, _ in cases]).T.reshape(1, 2, len(cases), 1, 1)
    relation_map = torch.tensor([_logit_pair(q)[::-1] for _, q, _ in cases]).T.reshape(1, 2, len(cases), 1, 1)
    rectifier = Rectifier("fixed_v1")
    assert count_parameters(rectifier) == 0 and rectifier.mu is None
    output = rectifier(logits, relation_map)
    for voxel, (_, _, source) in enumerate(cases):
        expected = relation_map if source == "map" else logits
        assert torch.equal(output[0, :, voxel], expected[0, :, voxel]), cases[voxel]
    assert torch.equal(Rectifier("fixed_v1", confidence_threshold=0.5)(logits, relation_map), logits)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("num_classes", [2, 3])
def test_learnable_v2_starts_as_sum(num_classes):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, num_classes, 4, 4, 3, generator=generator)
    relation_map = torch.rand(2, num_classes, 4, 4, 3, generator=generator)
    rectifier = Rectifier("learnable_v2", num_classes=num_classes)
    assert count_parameters(rectifier) == 2 * num_classes * num_classes + num_classes
    assert rectifier.mu is None
    output = rectifier(logits, relation_map)
    assert torch.allclose(output, logits + relation_map, atol=1e-6)
    output.sum().backward()
    assert rectifier.fuse.weight.grad is not None


def test_bad_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="learnable_v3.*fixed_v1.*learnable_v2"):
        Rectifier("learnable_v4")
    assert RECTIFIER_MODES == ("learnable_v3", "fixed_v1", "learnable_v2")


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="confidence_threshold"):
        Rectifier("fixed_v1", confidence_threshold=1.5)
    logits, relation_map = random_pair()
    with pytest.raises(ValueError, match=r"\(B, 2, H, W, D\)"):
        Rectifier()(logits, relation_map[:, :, :2])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W, D\)"):
        Rectifier(num_classes=3)(logits, relation_map)
