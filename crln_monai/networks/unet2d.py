"""The 2-D U-Net of SSL4MIS-style semi-supervised studies (ACDC), CRLN's backbone for slice-wise configurations.

Hand-written because none of MONAI's U-Nets has this layout: ``BasicUNet`` has other widths, 2² deconvs and no
encoder dropout schedule, ``UNet`` strided residual units, ``DynUNet`` strided convs. Here each conv block is
(3² conv, BatchNorm, LeakyReLU, Dropout, 3² conv, BatchNorm, LeakyReLU) with the encoder's dropout growing from
0.05 to 0.5, down-sampling is max-pooling, and up-sampling is a 1² conv followed by bilinear interpolation whose
output is concatenated with the skip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import (
    BackboneOutput,
    Strides,
    check_backbone_input,
    check_positive_int,
    check_probability,
    configure_backbone,
    init_backbone_weights,
)

__all__ = ["UNet2D"]

#: Encoder dropout per level in SSL4MIS's 2-D U-Net (finest first).
ENCODER_DROPOUT: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)


def _conv_block(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """3² conv, BN, LeakyReLU, Dropout(``dropout``), 3² conv, BN, LeakyReLU; ``in_channels`` → ``out_channels``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(),
        nn.Dropout(dropout),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(),
    )


class _UpBlock(nn.Module):
    """1² conv ``in → skip`` channels, bilinear up-sampling by the level's stride, ``[skip, up]``, conv block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, skip_channels, 1)
        self.stride = stride
        self.fuse = _conv_block(2 * skip_channels, out_channels, 0.0)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """``skip`` ``(B, skip, s·S)`` and ``coarse`` ``(B, in, S)`` → ``(B, out, s·S)``; ``s``: stride per axis."""
        up = F.interpolate(self.reduce(coarse), size=skip.shape[2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([skip, up], dim=1))


class UNet2D(nn.Module):
    """SSL4MIS-style 2-D U-Net returning the logits and CRLN's three decoder taps.

    Widths ``(n, 2n, 4n, 8n, 16n)`` ((16, 32, 64, 128, 256) at the default ``base_filters=16``), encoder dropout
    :data:`ENCODER_DROPOUT` scaled by ``dropout / 0.5``, four max-pooling levels, four up-blocks, a 1² conv head.
    The taps, coarse to fine, are the outputs of the 2nd, 3rd and 4th up-blocks (``4n``, ``2n`` and ``n``
    channels at 1/4, 1/2 and full resolution), as the VNet's blocks 7–9 are for the 3-D method.

    Args:
        in_channels: input channels.
        num_classes: output classes (logit channels); 2 when neither it nor ``out_channels`` is given.
        base_filters: ``n``.
        dropout: dropout of the bottleneck (SSL4MIS: 0.5); the finer levels get SSL4MIS's schedule scaled by
            ``dropout / 0.5`` (0 turns dropout off).
        strides: down-sampling factors of the four levels, finest first: each 1 or 2 or one such factor per
            in-plane axis (H, W); ``None``: 2 everywhere.
        out_channels: MONAI's name for ``num_classes``.

    Attributes:
        spatial_dims: 2.
        feature_channels: widths of the three taps, coarse to fine, ``(4n, 2n, n)``.
        strides: the normalised ``strides``, four ``(sH, sW)``.
        size_divisor: per axis, the product of the strides: every input side must be divisible by it.

    Raises:
        ValueError: a count is not a positive int, ``dropout`` is outside [0, 1], a stride is not 1 or 2, or
            ``num_classes`` and ``out_channels`` differ.
    """

    num_levels: int = 4
    spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int | None = None,
        base_filters: int = 16,
        dropout: float = 0.5,
        strides: Strides | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        owner = configure_backbone(self, in_channels, num_classes, out_channels, strides, spatial_dims=2)
        in_channels, num_classes = self.in_channels, self.num_classes
        n = check_positive_int(owner, "base_filters", base_filters)
        dropout = check_probability(owner, "dropout", dropout)
        widths = [n * 2**i for i in range(5)]
        self.feature_channels: tuple[int, int, int] = (widths[2], widths[1], widths[0])
        rates = [rate * dropout / 0.5 for rate in ENCODER_DROPOUT]

        self.encoder = nn.ModuleList(
            _conv_block(in_channels if i == 0 else widths[i - 1], widths[i], rates[i]) for i in range(5)
        )
        self.pools = nn.ModuleList(nn.MaxPool2d(s) for s in self.strides)  # no parameters
        self.decoder = nn.ModuleList(_UpBlock(widths[i + 1], widths[i], widths[i], self.strides[i]) for i in (3, 2, 1, 0))
        self.head = nn.Conv2d(n, num_classes, 1)
        init_backbone_weights(self)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, H, W)``, each side divisible by that axis' :attr:`size_divisor` (16 by default).

        Returns:
            ``BackboneOutput(logits, features)``: logits ``(B, num_classes, H, W)``; features
            ``((B, 4n, (H, W) / (s1·s2)), (B, 2n, (H, W) / s1), (B, n, H, W))`` (``/ 4`` and ``/ 2`` by default).

        Raises:
            ValueError: ``x`` is not 4-D, has the wrong channel count, or a side not divisible by its axis'
                :attr:`size_divisor`.
        """
        check_backbone_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        skips = [self.encoder[0](x)]
        for block, pool in zip(self.encoder[1:], self.pools):
            skips.append(block(pool(skips[-1])))
        taps: list[torch.Tensor] = []
        out = skips[-1]
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            out = block(skip, out)
            taps.append(out)
        return BackboneOutput(self.head(out), (taps[1], taps[2], taps[3]))
