"""Tests of SegmentationLoss (Eq. (1)) and PseudoLabelLoss (Eq. (2) and the code form)."""

from __future__ import annotations

import math

import pytest
import torch

from crln_monai.losses import PseudoLabelLoss, SegmentationLoss

EPS = 1e-5


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def pooled_dice(prob: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Squared-denominator Dice loss pooled over every voxel given (1D tensors)."""
    return 1 - (2 * (prob * onehot).sum() + EPS) / ((prob**2).sum() + (onehot**2).sum() + EPS)


# ---------------------------------------------------------------- SegmentationLoss


def test_segmentation_loss_hand_computed_binary():
    # two voxels: logits (2, 0) labelled 0, logits (0, 1) labelled 1
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 2, 1, 1)
    label = torch.tensor([0, 1]).reshape(1, 1, 2, 1, 1)
    ce = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)))
    s = [sigmoid(-2), sigmoid(1)]  # foreground probabilities
    dice = 1 - (2 * s[1] + EPS) / (s[0] ** 2 + s[1] ** 2 + 1 + EPS)
    expected = 0.5 * (ce + dice)
    got = SegmentationLoss()(logits, label)
    assert got.ndim == 0
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # (B, *spatial) labels and float labels give the same value
    assert SegmentationLoss()(logits, label[:, 0]).item() == pytest.approx(expected, rel=1e-6)
    assert SegmentationLoss()(logits, label.float()).item() == pytest.approx(expected, rel=1e-6)


def test_segmentation_loss_ignores_minus_one():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -3.0]]).T.reshape(1, 2, 3, 1, 1)
    label = torch.tensor([0, 1, -1]).reshape(1, 1, 3, 1, 1)
    loss = SegmentationLoss()
    reference = loss(logits[:, :, :2], label[:, :, :2])
    changed = logits.clone()
    changed[:, :, 2] = torch.tensor([-4.0, 9.0]).view(1, 2, 1, 1)
    assert loss(logits, label).item() == pytest.approx(reference.item(), rel=1e-6)
    assert loss(changed, label).item() == pytest.approx(reference.item(), rel=1e-6)


def test_segmentation_loss_multiclass_pools_batch_and_averages_foreground():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 3, 2) * 2
    label = torch.randint(-1, 3, (2, 4, 3, 2))
    label[0, 0, 0, 0], label[1, 0, 0, 0] = 1, 2  # every class present
    valid = label != -1
    prob = logits.softmax(1)
    ce = torch.nn.functional.cross_entropy(logits, label, ignore_index=-1)
    dices = [pooled_dice(prob[:, c][valid], (label[valid] == c).float()) for c in (1, 2)]
    expected = 0.5 * (ce + (dices[0] + dices[1]) / 2)
    got = SegmentationLoss()(logits, label)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # pooled over the batch: differs from averaging per-volume Dice
    per_volume = [
        pooled_dice(prob[b, c][valid[b]], (label[b][valid[b]] == c).float()) for b in (0, 1) for c in (1, 2)
    ]
    assert abs((0.5 * (ce + sum(per_volume) / 4)).item() - got.item()) > 1e-4


def test_segmentation_loss_gradient_and_all_ignored():
    logits = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    label = torch.randint(0, 2, (1, 3, 3, 3))
    SegmentationLoss()(logits, label).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    logits.grad = None
    loss = SegmentationLoss()(logits, torch.full((1, 3, 3, 3), -1))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_segmentation_loss_bad_input():
    with pytest.raises(ValueError, match="label"):
        SegmentationLoss()(torch.zeros(1, 2, 3, 3, 3), torch.zeros(1, 2, 3, 3, 3))
    with pytest.raises(ValueError, match="C >= 2"):
        SegmentationLoss()(torch.zeros(1, 1, 3, 3, 3), torch.zeros(1, 3, 3, 3))


# ---------------------------------------------------------------- PseudoLabelLoss


def ce2(l0: float, l1: float, target: int) -> float:
    """Two-class cross-entropy written out."""
    own, other = (l0, l1) if target == 0 else (l1, l0)
    return math.log(1 + math.exp(other - own))


# two volumes of four voxels each (spatial 4x1x1); columns are voxels
PL_LOGITS = torch.tensor(
    [
        [[1.0, 0.0, 5.0, 200.0], [0.0, 0.0, -5.0, -200.0]],
        [[0.0, 1.0, 0.0, -7.0], [2.0, 1.0, 3.0, 7.0]],
    ]
).reshape(2, 2, 4, 1, 1)
PL_LABEL = torch.tensor([[0, 1, -1, 0], [1, 1, 0, -1]]).reshape(2, 4, 1, 1)
PL_CONF = torch.tensor([[0.99, 0.5, 0.99, 0.99], [0.98, 0.5, 0.2, 1.0]]).reshape(2, 4, 1, 1)
CE = {
    (0, 0): ce2(1, 0, 0),
    (0, 1): ce2(0, 0, 1),
    (0, 3): 0.0,  # logits (200, -200), label 0: CE is exactly 0 in float32
    (1, 0): ce2(0, 2, 1),
    (1, 1): ce2(1, 1, 1),
    (1, 2): ce2(0, 3, 0),
}


def test_pseudo_label_reco_ratio_hand_computed():
    # volume 0: 3 valid voxels, 2 of them confident -> w0 = 2/3; volume 1: 3 valid, 1 confident -> w1 = 1/3
    # mean over the 5 valid voxels with CE > 0 (voxel (0, 3) has CE == 0 and is left out)
    w0, w1 = 2 / 3, 1 / 3
    expected = (w0 * (CE[0, 0] + CE[0, 1]) + w1 * (CE[1, 0] + CE[1, 1] + CE[1, 2])) / 5
    got = PseudoLabelLoss(threshold=0.97)(PL_LOGITS, PL_LABEL, PL_CONF)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # (B, 1, ...) inputs give the same value
    assert PseudoLabelLoss()(PL_LOGITS, PL_LABEL[:, None], PL_CONF[:, None]).item() == pytest.approx(expected, rel=1e-6)


def test_pseudo_label_indicator_hand_computed():
    # confident valid voxels: (0, 0), (0, 3), (1, 0); divided by the 6 valid voxels
    expected = (CE[0, 0] + CE[0, 3] + CE[1, 0]) / 6
    got = PseudoLabelLoss(threshold=0.97, weighting="indicator")(PL_LOGITS, PL_LABEL, PL_CONF)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # a lower threshold admits more voxels
    lower = PseudoLabelLoss(threshold=0.4, weighting="indicator")(PL_LOGITS, PL_LABEL, PL_CONF)
    assert lower.item() == pytest.approx((CE[0, 0] + CE[0, 1] + CE[1, 0] + CE[1, 1]) / 6, rel=1e-6)


@pytest.mark.parametrize("weighting", ["reco_ratio", "indicator"])
def test_pseudo_label_ignored_voxels_do_not_matter(weighting):
    loss = PseudoLabelLoss(weighting=weighting)
    reference = loss(PL_LOGITS, PL_LABEL, PL_CONF)
    logits, conf = PL_LOGITS.clone(), PL_CONF.clone()
    logits[0, :, 2] = torch.tensor([-9.0, 9.0]).view(2, 1, 1)
    logits[1, :, 3] = torch.tensor([30.0, -30.0]).view(2, 1, 1)
    conf[0, 2], conf[1, 3] = 0.0, 0.1
    assert loss(logits, PL_LABEL, conf).item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("weighting", ["reco_ratio", "indicator"])
def test_pseudo_label_all_ignored_is_zero_with_finite_gradient(weighting):
    logits = torch.randn(2, 2, 3, 3, 3, requires_grad=True)
    loss = PseudoLabelLoss(weighting=weighting)(logits, torch.full((2, 3, 3, 3), -1), torch.ones(2, 3, 3, 3))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("weighting", ["reco_ratio", "indicator"])
def test_pseudo_label_gradient_reaches_weighted_voxels_only(weighting):
    logits = PL_LOGITS.clone().requires_grad_()
    PseudoLabelLoss(weighting=weighting)(logits, PL_LABEL, PL_CONF).backward()
    voxel_grad = logits.grad.abs().sum(1).reshape(2, 4)
    assert voxel_grad[0, 0] > 0 and voxel_grad[1, 0] > 0
    assert voxel_grad[0, 2] == 0 and voxel_grad[1, 3] == 0  # ignored
    if weighting == "indicator":
        assert voxel_grad[0, 1] == 0 and voxel_grad[1, 2] == 0  # valid but not confident
    else:
        assert voxel_grad[0, 1] > 0 and voxel_grad[1, 2] > 0  # weighted by w_b, not masked


def test_pseudo_label_bad_arguments():
    with pytest.raises(ValueError, match="weighting"):
        PseudoLabelLoss(weighting="soft")
    with pytest.raises(ValueError, match="confidence"):
        PseudoLabelLoss()(PL_LOGITS, PL_LABEL, PL_CONF[:1])
