"""Supervised segmentation loss of CRLN, paper Eq. (1): ½(CE + Dice)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

__all__ = ["SegmentationLoss", "as_channel_label"]


def as_channel_label(label: torch.Tensor, logits: torch.Tensor, name: str = "label") -> torch.Tensor:
    """Return ``label`` as a ``(B, 1, *spatial)`` map matching ``logits`` ``(B, C, *spatial)``.

    Args:
        label: ``(B, *spatial)`` or ``(B, 1, *spatial)``, any dtype.
        logits: ``(B, C, *spatial)``; only its shape is used.
        name: argument name used in the error message.

    Raises:
        ValueError: when the shapes do not fit together.
    """
    if label.ndim == logits.ndim - 1:
        label = label.unsqueeze(1)
    if label.ndim != logits.ndim or label.shape[1] != 1 or label.shape[2:] != logits.shape[2:] or label.shape[0] != logits.shape[0]:
        raise ValueError(
            f"{name} must have shape (B, *spatial) or (B, 1, *spatial) matching logits {tuple(logits.shape)}, "
            f"got {tuple(label.shape)}."
        )
    return label


class SegmentationLoss(nn.Module):
    """``½ (CE + Dice)`` on logits, the supervised loss of paper Eq. (1) (docs/method.md#supervised-loss).

    - CE: mean over the voxels whose label is not ``ignore_index`` (0 when every voxel is ignored,
      where ``F.cross_entropy`` would give NaN).
    - Dice: the V-Net/UA-MT squared-denominator form pooled over the whole batch,
      ``1 - (2 Σ s t + ε) / (Σ s² + Σ t² + ε)`` with ``s`` the softmax probability and ``t`` the one-hot
      label, computed per foreground class ``1..C-1`` and averaged over them (``C = 2``: the foreground
      channel only, as in the authors' code). Ignored voxels are left out of every sum.

    The Dice term is MONAI's ``DiceLoss(include_background=False, to_onehot_y=True, softmax=True,
    squared_pred=True, batch=True, smooth_nr=smooth_dr=smooth, ignore_index=ignore_index)``, which is
    algebraically this form (checked against a hand computation in ``tests/test_losses.py``). MONAI computes
    ``Σ s t`` from vector norms, so on a full 112×112×80 batch it differs from a direct float32 sum by
    about 1e-5 relative: rounding only.

    Args:
        ignore_index: label value excluded from both terms.
        smooth: ``ε`` in the numerator and denominator of Dice.
    """

    def __init__(self, ignore_index: int = -1, smooth: float = 1e-5) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}.")
        self.ignore_index = int(ignore_index)
        self.dice = DiceLoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            smooth_nr=smooth,
            smooth_dr=smooth,
            ignore_index=self.ignore_index,
        )

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            logits: ``(B, C, *spatial)`` with ``C >= 2``.
            label: ``(B, 1, *spatial)`` or ``(B, *spatial)``, integer valued (float allowed), in
                ``0..C-1`` or ``ignore_index``.

        Returns:
            scalar tensor.

        Raises:
            ValueError: when ``logits`` has fewer than two channels or the label shape does not fit.
        """
        if logits.ndim < 3 or logits.shape[1] < 2:
            raise ValueError(f"logits must be (B, C, *spatial) with C >= 2, got {tuple(logits.shape)}.")
        label = as_channel_label(label, logits).long()
        target = label[:, 0]
        ce_sum = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        num_valid = (target != self.ignore_index).sum().clamp_min(1)
        ce = ce_sum / num_valid
        return 0.5 * (ce + self.dice(logits, label))
