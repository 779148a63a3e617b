"""The output contract shared by every CRLN backbone."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["BackboneOutput"]


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
