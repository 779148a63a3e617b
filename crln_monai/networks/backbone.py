"""The output contract shared by every CRLN backbone."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["BackboneOutput", "check_backbone_input", "init_backbone_weights"]


class BackboneOutput(NamedTuple):
    """What a backbone returns.

    Attributes:
        logits: segmentation logits ``(B, num_classes, H, W, D)``.
        features: the decoder taps the method uses, coarse to fine:
            ``(B, 64, H/4, W/4, D/4)``, ``(B, 32, H/2, W/2, D/2)``, ``(B, 16, H, W, D)``
            (the last after dropout; it feeds the segmentation and representation heads).
    """

    logits: torch.Tensor
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def init_backbone_weights(module: nn.Module) -> None:
    """Kaiming-normal weights for every ``Conv3d``; BatchNorm weight 1 and bias 0 (the UA-MT/SSL4MIS init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_backbone_input(x: torch.Tensor, in_channels: int, divisor: int, owner: str) -> None:
    """Raise a ValueError naming the shape unless ``x`` is ``(B, in_channels, H, W, D)`` with sides divisible by ``divisor``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{owner}: input must be a 5-D tensor (B, C, H, W, D), got {shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{owner}: input of shape {tuple(x.shape)} has {x.shape[1]} channels, expected {in_channels}")
    if any(side % divisor for side in x.shape[2:]):
        raise ValueError(
            f"{owner}: input of shape {tuple(x.shape)} has spatial size {tuple(x.shape[2:])}; "
            f"every side must be divisible by {divisor}"
        )
