"""Device-side statistics of teacher pseudo-labels (the paper's Fig. 1 and Fig. 11 as curves)."""

from __future__ import annotations

import torch

__all__ = ["confident_share", "pseudo_label_dice"]


def confident_share(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """Share of voxels whose confidence reaches ``threshold``; ``confidence`` any shape → 0-dim tensor."""
    return (confidence >= threshold).float().mean()


def pseudo_label_dice(pseudo_label: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean foreground Dice of pseudo-labels against labels that exist on disk, without a host sync.

    Args:
        pseudo_label: ``(B, H, W, D)`` class indices.
        label: ``(B, H, W, D)`` or ``(B, 1, H, W, D)``; volumes whose label is all negative (no label file) are skipped.
        num_classes: classes including background.

    Returns:
        0-dim tensor: Dice pooled over the labelled volumes, averaged over foreground classes; NaN when no
        volume has a label.
    """
    label = label.reshape(pseudo_label.shape).long()
    has_label = (label >= 0).flatten(1).any(1).view(-1, *([1] * (label.dim() - 1)))
    classes = torch.arange(1, num_classes, device=label.device).view(-1, 1, *([1] * label.dim()))
    pred = (pseudo_label.unsqueeze(0) == classes) & has_label
    ref = (label.unsqueeze(0) == classes) & has_label
    dims = tuple(range(1, pred.dim()))
    inter = (pred & ref).sum(dims).float()
    total = pred.sum(dims).float() + ref.sum(dims).float()
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)).mean()
    return torch.where(has_label.any(), dice, torch.full_like(dice, float("nan")))
