"""Unsupervised (pseudo-label) loss of CRLN, paper Eq. (2) and its code form (docs/method.md#pseudo-label-loss, A1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .segmentation import as_channel_label

__all__ = ["PseudoLabelLoss", "PSEUDO_LABEL_WEIGHTINGS"]

PSEUDO_LABEL_WEIGHTINGS = ("reco_ratio", "indicator")


class PseudoLabelLoss(nn.Module):
    """Confidence-weighted cross-entropy of the student on teacher pseudo-labels.

    With ``CE`` the per-voxel cross-entropy, ``q`` the teacher confidence, ``δ = threshold`` and
    valid voxels those whose pseudo-label is not ``ignore_index`` (e.g. padding of the strong rescale):

    - ``"reco_ratio"`` (default; the authors' code, after ReCo): each volume ``b`` gets the scalar
      weight ``w_b = #(valid voxels with q ≥ δ) / #(valid voxels)``, and
      ``loss = Σ w_b CE / #(valid voxels with CE > 0)``, the mean of ``w_b CE`` over the valid voxels
      whose CE is positive (the code averages after dropping ``CE == 0`` entries).
    - ``"indicator"`` (paper text, Eq. (2)): ``loss = Σ 1[q ≥ δ] CE / #(valid voxels)``. The paper
      divides by all voxels ``|Ω|``; we divide by the valid voxels so that padding does not dilute
      the loss (identical when nothing is padded).

    Both return 0 (not NaN) when no voxel is valid; divisions are clamped on the device, so there is
    no host synchronisation.

    Args:
        threshold: confidence threshold ``δ_s``.
        weighting: ``"reco_ratio"`` or ``"indicator"``.
        ignore_index: pseudo-label value of voxels to ignore.

    Raises:
        ValueError: on an unknown ``weighting``.
    """

    def __init__(self, threshold: float = 0.97, weighting: str = "reco_ratio", ignore_index: int = -1) -> None:
        super().__init__()
        if weighting not in PSEUDO_LABEL_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {PSEUDO_LABEL_WEIGHTINGS}, got {weighting!r}.")
        self.threshold = float(threshold)
        self.weighting = weighting
        self.ignore_index = int(ignore_index)

    def forward(self, logits: torch.Tensor, pseudo_label: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            logits: student logits ``(B, C, *spatial)``.
            pseudo_label: ``(B, *spatial)`` or ``(B, 1, *spatial)``, integer valued, ``ignore_index`` = ignore.
            confidence: teacher max-probability ``(B, *spatial)`` or ``(B, 1, *spatial)``.

        Returns:
            scalar tensor.

        Raises:
            ValueError: when the shapes do not fit ``logits``.
        """
        if logits.ndim < 3:
            raise ValueError(f"logits must be (B, C, *spatial), got {tuple(logits.shape)}.")
        target = as_channel_label(pseudo_label, logits, "pseudo_label")[:, 0].long()
        confidence = as_channel_label(confidence, logits, "confidence")[:, 0]
        valid = target != self.ignore_index
        ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")  # 0 where ignored
        confident = valid & (confidence >= self.threshold)
        if self.weighting == "indicator":
            return (ce * confident).sum() / valid.sum().clamp_min(1)
        batch = logits.shape[0]
        weight = confident.reshape(batch, -1).sum(1) / valid.reshape(batch, -1).sum(1).clamp_min(1)
        weight = weight.view(batch, *([1] * (ce.ndim - 1))).to(ce.dtype)
        num_positive = (valid & (ce > 0)).sum().clamp_min(1)
        return (weight * ce).sum() / num_positive
