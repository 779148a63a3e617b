"""The SSL4MIS-style 3D U-Net, the backbone CRLN uses on BraTS (docs/method.md#3-d-u-net).

Hand-written because none of MONAI's U-Nets has this layout: ``UNet`` uses strided convs and
PReLU/residual units, ``BasicUNet`` uses LeakyReLU and 2³ deconvs with different widths, ``DynUNet``
uses strided convs and LeakyReLU (optionally residual) blocks; here down-sampling is max-pooling, conv
units are (3³ conv, InstanceNorm, ReLU) × 2, and up-sampling is a 3³ transposed conv + BatchNorm + ReLU
whose output is concatenated with the skip. Per-axis ``strides`` are taken as ``DynUNet`` takes them.
"""

from __future__ import annotations

import torch
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

__all__ = ["UNet3D"]


def _conv_unit(in_channels: int, out_channels: int) -> nn.Sequential:
    """(3³ conv with bias, InstanceNorm3d without affine, ReLU) × 2; ``in_channels`` → ``out_channels``."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1),
        nn.InstanceNorm3d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1),
        nn.InstanceNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class _UpBlock(nn.Module):
    """Multiply each side of the coarse map by its stride, concatenate the skip, fuse.

    Transposed conv (kernel 3, stride ``s``, padding 1, output padding ``s - 1`` per axis: stride 2,
    output padding 1 at the default; ``in_channels`` → ``in_channels``), BatchNorm, ReLU; concatenation
    ``[skip, up]`` on channels; conv unit ``in + out`` → ``out``. The kernel does not depend on the stride,
    so neither does the parameter count.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int] = (2, 2, 2)) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose3d(
                in_channels, in_channels, 3, stride=stride, padding=1, output_padding=tuple(s - 1 for s in stride)
            ),
            nn.BatchNorm3d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.fuse = _conv_unit(in_channels + out_channels, out_channels)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """``skip`` ``(B, out, s·S)`` and ``coarse`` ``(B, in, S)`` → ``(B, out, s·S)``; ``s``: stride per axis."""
        return self.fuse(torch.cat([skip, self.up(coarse)], dim=1))


class UNet3D(nn.Module):
    """SSL4MIS-style 3D U-Net returning the logits and CRLN's three decoder taps.

    Widths ``f = (64, 128, 256, 512, 1024) / feature_scale`` ((16, 32, 64, 128, 256) at the default 4).
    Encoder: conv units at widths f0…f3, each followed by max-pooling (2³ at the default ``strides``;
    kernel = stride per axis), then the centre conv unit (f4)
    and ``Dropout(dropout)``. Decoder: up-blocks up4 (f4 → f3), up3 (→ f2), up2 (→ f1), up1 (→ f0), then
    ``Dropout(dropout)`` on up1 and a 1³ conv head f0 → ``num_classes``. Dropout is element-wise
    (``nn.Dropout``), as in the authors' code. Every Conv3d gets Kaiming-normal weights (its bias keeps
    PyTorch's default), BatchNorm gets weight 1 and bias 0; transposed convs keep PyTorch's default init;
    InstanceNorm has no parameters.

    Args:
        in_channels: input channels.
        num_classes: output classes (logit channels); 2 when neither it nor ``out_channels`` is given.
        feature_scale: divisor of the reference widths (64, …, 1024); must divide 64.
        dropout: ``Dropout`` probability after the centre block and on up1 (the full-resolution tap).
        strides: down-sampling factors of the four levels, finest first, as MONAI's ``DynUNet`` takes them:
            each entry 1 or 2, or one such factor per axis (H, W, D), e.g. ``[[2, 2, 1], [2, 2, 1], [2, 2, 2],
            [2, 2, 1]]`` for thick-slice volumes. ``None``: 2 on every axis at every level (SSL4MIS). The
            decoder mirrors them; the parameter count does not depend on them.
        out_channels: MONAI's name for ``num_classes``; give one of the two (equal values are accepted).

    Attributes:
        feature_channels: widths of the three taps, coarse to fine, ``(f2, f1, f0)``.
        strides: the normalised ``strides``, four ``(sH, sW, sD)``.
        size_divisor: per axis, the product of the strides (``(16, 16, 16)`` at the default): every input
            side must be divisible by it.

    Raises:
        ValueError: a count is not a positive int, ``feature_scale`` does not divide 64, ``dropout`` is
            outside [0, 1], a stride is not 1 or 2, or ``num_classes`` and ``out_channels`` differ.
    """

    num_levels: int = 4

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int | None = None,
        feature_scale: int = 4,
        dropout: float = 0.3,
        strides: Strides | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        owner = configure_backbone(self, in_channels, num_classes, out_channels, strides)
        in_channels, num_classes = self.in_channels, self.num_classes
        feature_scale = check_positive_int(owner, "feature_scale", feature_scale)
        if 64 % feature_scale:
            raise ValueError(f"{owner}: feature_scale must divide 64 (1, 2, 4, …, 64), got {feature_scale}")
        dropout = check_probability(owner, "dropout", dropout)
        f = [width // feature_scale for width in (64, 128, 256, 512, 1024)]
        self.feature_channels: tuple[int, int, int] = (f[2], f[1], f[0])
        s1, s2, s3, s4 = self.strides

        self.conv1 = _conv_unit(in_channels, f[0])
        self.conv2 = _conv_unit(f[0], f[1])
        self.conv3 = _conv_unit(f[1], f[2])
        self.conv4 = _conv_unit(f[2], f[3])
        self.pools = nn.ModuleList(nn.MaxPool3d(s) for s in self.strides)  # no parameters
        self.center = _conv_unit(f[3], f[4])
        self.bottleneck_dropout = nn.Dropout(dropout)

        self.up4 = _UpBlock(f[4], f[3], s4)
        self.up3 = _UpBlock(f[3], f[2], s3)
        self.up2 = _UpBlock(f[2], f[1], s2)
        self.up1 = _UpBlock(f[1], f[0], s1)
        self.feature_dropout = nn.Dropout(dropout)

        self.head = nn.Conv3d(f[0], num_classes, 1)
        init_backbone_weights(self)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, H, W, D)``, each side divisible by that axis' :attr:`size_divisor`
                (16 at the default strides).

        Returns:
            ``BackboneOutput(logits, features)``: logits ``(B, num_classes, H, W, D)``; features
            ``((B, f2, (H, W, D) / (s1·s2)), (B, f1, (H, W, D) / s1), (B, f0, H, W, D))`` = (up3, up2, up1)
            (``s1``, ``s2`` the first two strides: ``/ 4`` and ``/ 2`` at the default), up1 after dropout
            (the logits are the head applied to it); (64, 32, 16) channels at feature_scale 4.

        Raises:
            ValueError: ``x`` is not 5-D, has the wrong channel count, or a side not divisible by its axis'
                :attr:`size_divisor`.
        """
        check_backbone_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        pool1, pool2, pool3, pool4 = self.pools
        c1 = self.conv1(x)
        c2 = self.conv2(pool1(c1))
        c3 = self.conv3(pool2(c2))
        c4 = self.conv4(pool3(c3))
        centre = self.bottleneck_dropout(self.center(pool4(c4)))

        u4 = self.up4(c4, centre)
        u3 = self.up3(c3, u4)
        u2 = self.up2(c2, u3)
        u1 = self.feature_dropout(self.up1(c1, u2))
        return BackboneOutput(self.head(u1), (u3, u2, u1))
