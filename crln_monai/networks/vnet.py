"""The UA-MT VNet, the backbone CRLN uses on LA and Pancreas (docs/method.md#ua-mt-vnet).

Hand-written because MONAI's ``monai.networks.nets.VNet`` is Milletari's V-Net, a different network:
residual 5³ stages, ELU, concatenating skips, dropout on every skip and 45.6 M parameters
(MONAI 1.6.1). The UA-MT variant below has plain 3³ conv-norm-ReLU stages, additive skips and
dropout only on the bottleneck and the last decoder block (9.45 M parameters at the default width).
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

__all__ = ["VNet"]

_NORMS = ("batch", "instance", "none")


def _norm(norm: str, channels: int) -> list[nn.Module]:
    """The normalisation layer after a conv, as a list (empty for ``"none"``)."""
    if norm == "batch":
        return [nn.BatchNorm3d(channels)]
    if norm == "instance":
        return [nn.InstanceNorm3d(channels)]
    return []


def _conv_stage(num_convs: int, in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """``num_convs`` × (3³ conv with bias, norm, ReLU); the first conv maps ``in_channels`` → ``out_channels``."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers.append(nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1))
        layers += _norm(norm, out_channels)
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _resample(in_channels: int, out_channels: int, norm: str, up: bool, stride: tuple[int, int, int]) -> nn.Sequential:
    """Conv (``up=False``, divides each side by its stride) or transposed conv (``up=True``, multiplies it), norm, ReLU.

    Kernel = stride per axis (2³ stride 2 at the default; an axis with stride 1 gets kernel 1 and keeps its size).
    """
    conv_type = nn.ConvTranspose3d if up else nn.Conv3d
    return nn.Sequential(
        conv_type(in_channels, out_channels, stride, stride=stride), *_norm(norm, out_channels), nn.ReLU(inplace=True)
    )


class VNet(nn.Module):
    """UA-MT VNet returning the logits and CRLN's three decoder taps.

    Encoder stages 1–5 have 1, 2, 3, 3, 3 convs and widths n, 2n, 4n, 8n, 16n (n = ``base_filters``),
    joined by down-convs (stride-2 2³ at the default ``strides``; kernel = stride per axis). Decoder stages
    6–9 have 3, 3, 2, 1 convs and widths 8n, 4n, 2n, n; each is preceded by the transposed conv mirroring
    the down-conv of that level, whose output is ADDED to the encoder stage of the same resolution.
    ``Dropout3d(dropout)`` follows stage 5 (bottleneck) and stage 9; a 1³ conv head maps stage 9 to the
    logits. Every Conv3d gets Kaiming-normal weights (its bias keeps PyTorch's default),
    BatchNorm gets weight 1 and bias 0; transposed convs keep PyTorch's default init, as in the authors'
    code (their init loop matches ``nn.Conv3d`` only).

    Args:
        in_channels: input channels.
        num_classes: output classes (logit channels); 2 when neither it nor ``out_channels`` is given.
        base_filters: n, the width of stage 1; the taps have 4n, 2n and n channels.
        dropout: ``Dropout3d`` probability on the bottleneck and on the full-resolution tap.
        norm: ``"batch"`` (as UA-MT and CRLN), ``"instance"`` or ``"none"``.
        strides: down-sampling factors of the four levels, finest first, as MONAI's ``DynUNet`` takes them:
            each entry 1 or 2, or one such factor per axis (H, W, D), e.g. ``[[2, 2, 1], [2, 2, 1], [2, 2, 2],
            [2, 2, 1]]`` for thick-slice volumes. ``None``: 2 on every axis at every level (UA-MT). The
            decoder mirrors them.
        out_channels: MONAI's name for ``num_classes``; give one of the two (equal values are accepted).

    Attributes:
        feature_channels: widths of the three taps, coarse to fine, ``(4n, 2n, n)``.
        strides: the normalised ``strides``, four ``(sH, sW, sD)``.
        size_divisor: per axis, the product of the strides (``(16, 16, 16)`` at the default): every input
            side must be divisible by it.

    Raises:
        ValueError: a count is not a positive int, ``dropout`` is outside [0, 1], ``norm`` is unknown, a
            stride is not 1 or 2, or ``num_classes`` and ``out_channels`` differ.
    """

    num_levels: int = 4

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int | None = None,
        base_filters: int = 16,
        dropout: float = 0.5,
        norm: str = "batch",
        strides: Strides | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        owner = configure_backbone(self, in_channels, num_classes, out_channels, strides)
        in_channels, num_classes = self.in_channels, self.num_classes
        n = check_positive_int(owner, "base_filters", base_filters)
        dropout = check_probability(owner, "dropout", dropout)
        if norm not in _NORMS:
            raise ValueError(f"{owner}: norm must be one of {_NORMS}, got {norm!r}")
        self.feature_channels: tuple[int, int, int] = (4 * n, 2 * n, n)
        s1, s2, s3, s4 = self.strides

        self.block1 = _conv_stage(1, in_channels, n, norm)
        self.down1 = _resample(n, 2 * n, norm, up=False, stride=s1)
        self.block2 = _conv_stage(2, 2 * n, 2 * n, norm)
        self.down2 = _resample(2 * n, 4 * n, norm, up=False, stride=s2)
        self.block3 = _conv_stage(3, 4 * n, 4 * n, norm)
        self.down3 = _resample(4 * n, 8 * n, norm, up=False, stride=s3)
        self.block4 = _conv_stage(3, 8 * n, 8 * n, norm)
        self.down4 = _resample(8 * n, 16 * n, norm, up=False, stride=s4)
        self.block5 = _conv_stage(3, 16 * n, 16 * n, norm)
        self.bottleneck_dropout = nn.Dropout3d(dropout)

        self.up5 = _resample(16 * n, 8 * n, norm, up=True, stride=s4)
        self.block6 = _conv_stage(3, 8 * n, 8 * n, norm)
        self.up6 = _resample(8 * n, 4 * n, norm, up=True, stride=s3)
        self.block7 = _conv_stage(3, 4 * n, 4 * n, norm)
        self.up7 = _resample(4 * n, 2 * n, norm, up=True, stride=s2)
        self.block8 = _conv_stage(2, 2 * n, 2 * n, norm)
        self.up8 = _resample(2 * n, n, norm, up=True, stride=s1)
        self.block9 = _conv_stage(1, n, n, norm)
        self.feature_dropout = nn.Dropout3d(dropout)

        self.head = nn.Conv3d(n, num_classes, 1)
        init_backbone_weights(self)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, H, W, D)``, each side divisible by that axis' :attr:`size_divisor`
                (16 at the default strides).

        Returns:
            ``BackboneOutput(logits, features)``: logits ``(B, num_classes, H, W, D)``; features
            ``((B, 4n, (H, W, D) / (s1·s2)), (B, 2n, (H, W, D) / s1), (B, n, H, W, D))`` from stages 7, 8
            and 9 (``s1``, ``s2`` the first two strides: ``/ 4`` and ``/ 2`` at the default), the last after
            dropout (the logits are the head applied to it).

        Raises:
            ValueError: ``x`` is not 5-D, has the wrong channel count, or a side not divisible by its axis'
                :attr:`size_divisor`.
        """
        check_backbone_input(x, self.in_channels, self.size_divisor, type(self).__name__)
        x1 = self.block1(x)
        x2 = self.block2(self.down1(x1))
        x3 = self.block3(self.down2(x2))
        x4 = self.block4(self.down3(x3))
        x5 = self.bottleneck_dropout(self.block5(self.down4(x4)))

        x6 = self.block6(self.up5(x5) + x4)
        x7 = self.block7(self.up6(x6) + x3)
        x8 = self.block8(self.up7(x7) + x2)
        x9 = self.feature_dropout(self.block9(self.up8(x8) + x1))
        return BackboneOutput(self.head(x9), (x7, x8, x9))
