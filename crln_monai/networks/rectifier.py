"""Rectification of segmentation logits by the DIM's relation map (docs/method.md#rectification; the paper's Table 7).

Three variants, picked by ``mode``:

- ``"learnable_v3"`` (the paper's method, Eq. 8): ``logits + (1 - clamp(mu, 0, 1)) * relation_map`` with one
  learnable scalar ``mu`` (initialised to 0, trained by Eq. 16 with its own optimiser).
- ``"fixed_v1"`` (Eq. 17, ablation): no parameters; per voxel, take the relation map as logits where the plain
  prediction is unconfident and the relation map is more confident.
- ``"learnable_v2"`` (ablation): a ``1³`` conv over the concatenation ``[logits, relation_map]``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RECTIFIER_MODES", "Rectifier"]

RECTIFIER_MODES = ("learnable_v3", "fixed_v1", "learnable_v2")
"""Valid values of :class:`Rectifier`'s ``mode`` (the paper's Table 7, docs/method.md#rectification)."""


class _ClampWithInwardGradient(torch.autograd.Function):
    """``clamp(x, low, high)`` whose gradient also passes outside ``[low, high]`` when it points back inside.

    ``torch.clamp`` passes the gradient on the closed interval only, so a parameter that a descent step pushed
    outside would be frozen there for good. Here the gradient passes inside the interval (boundaries included),
    and outside it only if a descent step ``x - lr * grad`` moves ``x`` towards the interval.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        inside = (x >= ctx.low) & (x <= ctx.high)
        inward = ((x < ctx.low) & (grad < 0)) | ((x > ctx.high) & (grad > 0))
        return grad * (inside | inward).to(grad.dtype), None, None


class Rectifier(nn.Module):
    """Combines logits and the DIM relation map into rectified logits.

    Args:
        mode: one of :data:`RECTIFIER_MODES`.

            - ``"learnable_v3"`` (default, Eq. 8): ``logits + (1 - clamp(mu, 0, 1)) * relation_map``. The parameter
              :attr:`raw_mu` is an unconstrained scalar initialised to 0 and clamped to ``[0, 1]`` where used (A7).
              Its gradient passes on ``[0, 1]`` (so it is nonzero at the initial ``mu = 0``) and, outside, only in
              the direction back into ``[0, 1]``; a plain clamp would freeze ``mu`` once a step left the interval.
            - ``"fixed_v1"`` (Eq. 17): no parameters. Per voxel, if ``max softmax(logits) < confidence_threshold``
              and ``max softmax(relation_map)`` is strictly higher, output the relation map, else the logits.
            - ``"learnable_v2"``: ``Conv3d(2C -> C, 1³)`` on ``cat([logits, relation_map], channels)``; its weights
              are initialised to two identity blocks and its bias to zero, so at the start the output equals
              ``logits + relation_map``.
        num_classes: ``C`` (checked against the inputs; sets the ``learnable_v2`` conv width).
        confidence_threshold: ``fixed_v1`` threshold on the plain prediction's confidence (``0.97`` = δ_s).

    Raises:
        ValueError: for an unknown ``mode``, ``num_classes < 1`` or a threshold outside ``(0, 1]``.
    """

    def __init__(self, mode: str = "learnable_v3", num_classes: int = 2, confidence_threshold: float = 0.97) -> None:
        super().__init__()
        if mode not in RECTIFIER_MODES:
            raise ValueError(f"mode must be one of {RECTIFIER_MODES}, got {mode!r}.")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if not 0.0 < confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in (0, 1], got {confidence_threshold}.")
        self.mode = mode
        self.num_classes = num_classes
        self.confidence_threshold = confidence_threshold
        self.raw_mu: nn.Parameter | None = None
        self.fuse: nn.Conv3d | None = None
        if mode == "learnable_v3":
            self.raw_mu = nn.Parameter(torch.zeros(()))
        elif mode == "learnable_v2":
            self.fuse = nn.Conv3d(2 * num_classes, num_classes, 1)
            with torch.no_grad():
                identity = torch.eye(num_classes).view(num_classes, num_classes, 1, 1, 1)
                self.fuse.weight.copy_(torch.cat([identity, identity], dim=1))
                self.fuse.bias.zero_()

    @property
    def mu(self) -> torch.Tensor | None:
        """The clamped ``mu`` in ``[0, 1]`` (detached, for logging) in ``learnable_v3``; ``None`` otherwise."""
        if self.raw_mu is None:
            return None
        return self.raw_mu.detach().clamp(0.0, 1.0)

    def forward(self, logits: torch.Tensor, relation_map: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: segmentation logits ``(B, C, H, W, D)``, or ``(B, C, H, W)`` for slices.
            relation_map: DIM relation map of the same shape.

        Returns:
            rectified logits of the same shape.

        Raises:
            ValueError: when the shapes differ, are neither 4-D nor 5-D, or ``C != num_classes``.
        """
        if logits.shape != relation_map.shape or logits.ndim not in (4, 5) or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits and relation_map must both have shape (B, {self.num_classes}, H, W, D) or "
                f"(B, {self.num_classes}, H, W); got {tuple(logits.shape)} and {tuple(relation_map.shape)}."
            )
        if self.mode == "learnable_v3":
            if torch.is_grad_enabled() and self.raw_mu.requires_grad:
                mu = _ClampWithInwardGradient.apply(self.raw_mu, 0.0, 1.0)
            else:  # same value; a plain clamp keeps inference traceable for TorchScript export
                mu = self.raw_mu.clamp(0.0, 1.0)
            return logits + (1.0 - mu) * relation_map
        if self.mode == "learnable_v2":  # a 1³ conv; slices pass through it with a unit depth
            stacked = torch.cat([logits, relation_map], dim=1)
            return self.fuse(stacked) if stacked.ndim == 5 else self.fuse(stacked.unsqueeze(-1)).squeeze(-1)
        plain_confidence = logits.softmax(dim=1).amax(dim=1, keepdim=True)
        relation_confidence = relation_map.softmax(dim=1).amax(dim=1, keepdim=True)
        use_relation = (plain_confidence < self.confidence_threshold) & (relation_confidence > plain_confidence)
        return torch.where(use_relation, relation_map, logits)
