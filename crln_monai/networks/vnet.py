"""The UA-MT VNet, the backbone CRLN uses on LA and Pancreas (METHOD.md §3.1).

Hand-written because MONAI's ``monai.networks.nets.VNet`` is Milletari's V-Net, a different network:
residual 5³ stages, ELU, concatenating skips, dropout on every skip and 45.6 M parameters
(MONAI.md §12). The UA-MT variant below has plain 3³ conv-norm-ReLU stages, additive skips and
dropout only on the bottleneck and the last decoder block (9.45 M parameters at the default width).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import BackboneOutput, check_backbone_input, init_backbone_weights

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


def _resample(in_channels: int, out_channels: int, norm: str, up: bool) -> nn.Sequential:
    """Stride-2 2³ conv (``up=False``, halves each side) or transposed conv (``up=True``, doubles it), norm, ReLU."""
    conv_type = nn.ConvTranspose3d if up else nn.Conv3d
    return nn.Sequential(conv_type(in_channels, out_channels, 2, stride=2), *_norm(norm, out_channels), nn.ReLU(inplace=True))


class VNet(nn.Module):
    """UA-MT VNet returning the logits and CRLN's three decoder taps.

    Encoder stages 1–5 have 1, 2, 3, 3, 3 convs and widths n, 2n, 4n, 8n, 16n (n = ``base_filters``),
    joined by stride-2 2³ down-convs. Decoder stages 6–9 have 3, 3, 2, 1 convs and widths 8n, 4n, 2n, n;
    each is preceded by a stride-2 2³ transposed conv whose output is ADDED to the encoder stage of the
    same resolution. ``Dropout3d(dropout)`` follows stage 5 (bottleneck) and stage 9; a 1³ conv head maps
    stage 9 to the logits. Every Conv3d gets Kaiming-normal weights (its bias keeps PyTorch's default),
    BatchNorm gets weight 1 and bias 0; transposed convs keep PyTorch's default init, as in the authors'
    code (their init loop matches ``nn.Conv3d`` only).

    Args:
        in_channels: input channels.
        num_classes: output classes (logit channels).
        base_filters: n, the width of stage 1; the taps have 4n, 2n and n channels.
        dropout: ``Dropout3d`` probability on the bottleneck and on the full-resolution tap.
        norm: ``"batch"`` (as UA-MT and CRLN), ``"instance"`` or ``"none"``.

    Raises:
        ValueError: a count is not a positive int, ``dropout`` is outside [0, 1] or ``norm`` is unknown.
    """

    size_divisor: int = 16  # four stride-2 down-samplings

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_filters: int = 16,
        dropout: float = 0.5,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("base_filters", base_filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VNet: {name} must be a positive int, got {value!r}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"VNet: dropout must be in [0, 1], got {dropout!r}")
        if norm not in _NORMS:
            raise ValueError(f"VNet: norm must be one of {_NORMS}, got {norm!r}")
        n = base_filters
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_channels: tuple[int, int, int] = (4 * n, 2 * n, n)

        self.block1 = _conv_stage(1, in_channels, n, norm)
        self.down1 = _resample(n, 2 * n, norm, up=False)
        self.block2 = _conv_stage(2, 2 * n, 2 * n, norm)
        self.down2 = _resample(2 * n, 4 * n, norm, up=False)
        self.block3 = _conv_stage(3, 4 * n, 4 * n, norm)
        self.down3 = _resample(4 * n, 8 * n, norm, up=False)
        self.block4 = _conv_stage(3, 8 * n, 8 * n, norm)
        self.down4 = _resample(8 * n, 16 * n, norm, up=False)
        self.block5 = _conv_stage(3, 16 * n, 16 * n, norm)
        self.bottleneck_dropout = nn.Dropout3d(dropout)

        self.up5 = _resample(16 * n, 8 * n, norm, up=True)
        self.block6 = _conv_stage(3, 8 * n, 8 * n, norm)
        self.up6 = _resample(8 * n, 4 * n, norm, up=True)
        self.block7 = _conv_stage(3, 4 * n, 4 * n, norm)
        self.up7 = _resample(4 * n, 2 * n, norm, up=True)
        self.block8 = _conv_stage(2, 2 * n, 2 * n, norm)
        self.up8 = _resample(2 * n, n, norm, up=True)
        self.block9 = _conv_stage(1, n, n, norm)
        self.feature_dropout = nn.Dropout3d(dropout)

        self.head = nn.Conv3d(n, num_classes, 1)
        init_backbone_weights(self)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """Segment ``x``.

        Args:
            x: ``(B, in_channels, H, W, D)`` with H, W and D divisible by 16.

        Returns:
            ``BackboneOutput(logits, features)``: logits ``(B, num_classes, H, W, D)``; features
            ``((B, 4n, H/4, W/4, D/4), (B, 2n, H/2, W/2, D/2), (B, n, H, W, D))`` from stages 7, 8 and 9,
            the last after dropout (the logits are the head applied to it).

        Raises:
            ValueError: ``x`` is not 5-D, has the wrong channel count, or a side not divisible by 16.
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
