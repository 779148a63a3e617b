"""The SSL4MIS-style 3D U-Net, the backbone CRLN uses on BraTS (METHOD.md §3.2).

Hand-written because none of MONAI's U-Nets has this layout: ``UNet`` uses strided convs and
PReLU/residual units, ``BasicUNet`` uses LeakyReLU and 2³ deconvs with different widths; here
down-sampling is max-pooling, conv units are (3³ conv, InstanceNorm, ReLU) × 2, and up-sampling is a
3³ transposed conv + BatchNorm + ReLU whose output is concatenated with the skip.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import BackboneOutput, check_backbone_input, init_backbone_weights

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
    """Double the size of the coarse map, concatenate the skip, fuse.

    Transposed conv (kernel 3, stride 2, padding 1, output padding 1; ``in_channels`` → ``in_channels``),
    BatchNorm, ReLU; concatenation ``[skip, up]`` on channels; conv unit ``in + out`` → ``out``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose3d(in_channels, in_channels, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm3d(in_channels),
            nn.ReLU(inplace=True),
        )
        self.fuse = _conv_unit(in_channels + out_channels, out_channels)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """``skip`` ``(B, out, 2S)`` and ``coarse`` ``(B, in, S)`` → ``(B, out, 2S)``."""
        return self.fuse(torch.cat([skip, self.up(coarse)], dim=1))


class UNet3D(nn.Module):
    """SSL4MIS-style 3D U-Net returning the logits and CRLN's three decoder taps.

    Widths ``f = (64, 128, 256, 512, 1024) / feature_scale`` ((16, 32, 64, 128, 256) at the default 4).
    Encoder: conv units at widths f0…f3, each followed by 2³ max-pooling, then the centre conv unit (f4)
    and ``Dropout(dropout)``. Decoder: up-blocks up4 (f4 → f3), up3 (→ f2), up2 (→ f1), up1 (→ f0), then
    ``Dropout(dropout)`` on up1 and a 1³ conv head f0 → ``num_classes``. Dropout is element-wise
    (``nn.Dropout``), as in the authors' code. Every Conv3d gets Kaiming-normal weights (its bias keeps
    PyTorch's default), BatchNorm gets weight 1 and bias 0; transposed convs keep PyTorch's default init;
    InstanceNorm has no parameters.

    Args:
        in_channels: input channels.
        num_classes: output classes (logit channels).
        feature_scale: divisor of the reference widths (64, …, 1024); must divide 64.
        dropout: ``Dropout`` probability after the centre block and on up1 (the full-resolution tap).

    Raises:
        ValueError: a count is not a positive int, ``feature_scale`` does not divide 64, or
            ``dropout`` is outside [0, 1].
    """

    size_divisor: int = 16  # four 2³ max-poolings

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        feature_scale: int = 4,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("feature_scale", feature_scale)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet3D: {name} must be a positive int, got {value!r}")
        if 64 % feature_scale:
            raise ValueError(f"UNet3D: feature_scale must divide 64 (1, 2, 4, …, 64), got {feature_scale}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"UNet3D: dropout must be in [0, 1], got {dropout!r}")
        f = [width // feature_scale for width in (64, 128, 256, 512, 1024)]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_channels: tuple[int, int, int] = (f[2], f[1], f[0])

        self.conv1 = _conv_unit(in_channels, f[0])
        self.conv2 = _conv_unit(f[0], f[1])
        self.conv3 = _conv_unit(f[1], f[2])
        self.conv4 = _conv_unit(f[2], f[3])
        self.pool = nn.MaxPool3d(2)
        self.center = _conv_unit(f[3], f[4])
        self.bottleneck_dropout = nn.Dropout(dropout)

        self.up4 = _UpBlock(f[4], f[3])
        self.up3 = _UpBlock(f[3], f[2])
        self.up2 = _UpBlock(f[2], f[1])
        self.up1 = _UpBlock(f[1], f[0])
        self.feature_dropout = nn.Dropout(dropout)

        self.head = nn.Conv3d(f[0], num_classes, 1)
        init_backbone_weights(self)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, H, W, D)`` with H, W and D divisible by 16.

        Returns:
            ``BackboneOutput(logits, features)``: logits ``(B, num_classes, H, W, D)``; features
            ``((B, f2, H/4, W/4, D/4), (B, f1, H/2, W/2, D/2), (B, f0, H, W, D))`` = (up3, up2, up1), up1
            after dropout (the logits are the head applied to it); (64, 32, 16) channels at feature_scale 4.

        Raises:
            ValueError: ``x`` is not 5-D, has the wrong channel count, or a side not divisible by 16.
        """
        check_backbone_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        c1 = self.conv1(x)
        c2 = self.conv2(self.pool(c1))
        c3 = self.conv3(self.pool(c2))
        c4 = self.conv4(self.pool(c3))
        centre = self.bottleneck_dropout(self.center(self.pool(c4)))

        u4 = self.up4(c4, centre)
        u3 = self.up3(c3, u4)
        u2 = self.up2(c2, u3)
        u1 = self.feature_dropout(self.up1(c1, u2))
        return BackboneOutput(self.head(u1), (u3, u2, u1))
