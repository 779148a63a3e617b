"""The output contract and the argument and input checks shared by every CRLN backbone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import NamedTuple, Union

import torch
from torch import nn

__all__ = [
    "BackboneOutput",
    "Strides",
    "check_backbone_input",
    "check_positive_int",
    "check_spatial_size",
    "check_probability",
    "init_backbone_weights",
    "normalise_strides",
    "planar_settings",
    "resolve_out_channels",
    "size_divisor",
]

Strides = Sequence[Union[int, Sequence[int]]]
"""Per-level down-sampling factors: one entry per level, an int (every axis) or one int per axis, each 1 or 2."""

_AXES = ("H", "W", "D")
_CONVS = (nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


class BackboneOutput(NamedTuple):
    """What a backbone returns.

    Attributes:
        logits: segmentation logits ``(B, num_classes, H, W, D)``.
        features: the decoder taps the method uses, coarse to fine, with the backbone's ``feature_channels``
            ``(c0, c1, c2)`` ((64, 32, 16) at the default widths) and ``s0``, ``s1`` its first two strides:
            ``(B, c0, (H, W, D) / (s0·s1))``, ``(B, c1, (H, W, D) / s0)``, ``(B, c2, H, W, D)``
            (``/ 4`` and ``/ 2`` at the default strides; the last tap is after dropout and feeds the
            segmentation and representation heads).
    """

    logits: torch.Tensor
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def init_backbone_weights(module: nn.Module) -> None:
    """Kaiming-normal weights for every ``Conv3d`` / ``Conv2d``; BatchNorm weight 1 and bias 0 (the UA-MT/SSL4MIS
    init)."""
    for m in module.modules():
        if isinstance(m, _CONVS):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, _BATCH_NORMS):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_positive_int(owner: str, name: str, value: object) -> int:
    """``value`` as an int; a ValueError naming ``owner``, ``name`` and the value unless it is an int ≥ 1."""
    if not _is_int(value) or int(value) < 1:  # type: ignore[call-overload]
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def check_probability(owner: str, name: str, value: float) -> float:
    """``value`` as a float; a ValueError naming ``owner``, ``name`` and the value unless it is in [0, 1]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1], got {value!r}")
    return number


def resolve_out_channels(owner: str, num_classes: int | None, out_channels: int | None, default: int = 2) -> int:
    """The output channel count from ``num_classes`` or MONAI's name for it, ``out_channels``.

    Either may be given (``default`` when neither is); both given and different is a ValueError.
    """
    if num_classes is not None and out_channels is not None and num_classes != out_channels:
        raise ValueError(
            f"{owner}: num_classes={num_classes!r} and out_channels={out_channels!r} name the same thing; "
            f"give one of them (or equal values)"
        )
    value = num_classes if num_classes is not None else out_channels
    return default if value is None else value


def configure_backbone(
    module: nn.Module,
    in_channels: object,
    num_classes: int | None,
    out_channels: int | None,
    strides: Strides | None,
    spatial_dims: int = 3,
) -> str:
    """Check and set what every backbone holds: ``in_channels``, ``num_classes`` (or MONAI's ``out_channels``),
    ``strides`` (per level, per axis, for ``module.num_levels`` levels) and ``size_divisor``.

    Returns:
        the class name, for the backbone's own argument checks.

    Raises:
        ValueError: as :func:`resolve_out_channels`, :func:`check_positive_int` and :func:`normalise_strides`.
    """
    owner = type(module).__name__
    num_classes = resolve_out_channels(owner, num_classes, out_channels)
    module.in_channels = check_positive_int(owner, "in_channels", in_channels)
    module.num_classes = check_positive_int(owner, "num_classes", num_classes)
    module.strides = normalise_strides(strides, module.num_levels, owner, spatial_dims=spatial_dims)
    module.size_divisor = size_divisor(module.strides)
    return owner


def normalise_strides(
    strides: Strides | None, num_levels: int, owner: str, spatial_dims: int = 3
) -> tuple[tuple[int, ...], ...]:
    """Per-level, per-axis down-sampling factors, as MONAI's ``DynUNet`` takes ``strides``.

    Args:
        strides: ``None`` (2 on every axis at every level) or ``num_levels`` entries, finest level first, each
            an int (the same factor on every axis) or ``spatial_dims`` ints (H, W[, D]); every factor is 1 or 2.
        num_levels: the backbone's number of down-sampling levels.
        owner: the class name for error messages.
        spatial_dims: 3 (volumes) or 2 (slices).

    Returns:
        ``num_levels`` tuples of ``spatial_dims`` factors, e.g. ``(sH, sW, sD)``.

    Raises:
        ValueError: wrong number of entries or a factor other than 1 or 2, naming the entry.
    """
    if strides is None:
        return ((2,) * spatial_dims,) * num_levels
    if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or len(strides) != num_levels:
        raise ValueError(
            f"{owner}: strides must be None or {num_levels} entries (one per down-sampling level), got {strides!r}"
        )
    axes = ", ".join(_AXES[:spatial_dims])
    result = []
    for level, entry in enumerate(strides):
        factors = (entry,) * spatial_dims if _is_int(entry) else entry
        if (
            isinstance(factors, (str, bytes))
            or not isinstance(factors, Sequence)
            or len(factors) != spatial_dims
            or not all(_is_int(f) and int(f) in (1, 2) for f in factors)
        ):
            raise ValueError(
                f"{owner}: strides[{level}] must be 1, 2 or {spatial_dims} of them ({axes}), got {entry!r}"
            )
        result.append(tuple(int(f) for f in factors))
    return tuple(result)


def planar_settings(
    patch_size: Sequence[int], strides: Strides | None, num_levels: int, owner: str
) -> tuple[tuple[int, int], tuple[tuple[int, int], ...]]:
    """The in-plane patch and strides of a 2-D (slice-wise) configuration written in the bundle's 3-D terms.

    A 2-D configuration is a 3-D one whose patch is one slice thick: ``patch_size`` ``[h, w, 1]`` (or ``[h, w]``)
    and ``strides`` ``None`` or entries whose slice-axis factor is 1 (``[sH, sW, 1]``, ``[sH, sW]`` or an int for
    both in-plane axes). The data pipeline, the sliding window and the bundle keys stay three-dimensional.

    Returns:
        ``((h, w), ((sH, sW), ...))``.

    Raises:
        ValueError: a patch thicker than one slice, or a stride other than 1 on the slice axis.
    """
    patch = tuple(int(p) for p in patch_size)
    if len(patch) not in (2, 3) or (len(patch) == 3 and patch[2] != 1):
        raise ValueError(
            f"{owner}: a 2-D backbone segments one slice at a time: patch_size must be [h, w, 1] (or [h, w]), "
            f"got {list(patch_size)}"
        )
    if strides is not None and isinstance(strides, Sequence) and not isinstance(strides, (str, bytes)):
        planar = []
        for level, entry in enumerate(strides):
            if isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)) and len(entry) == 3:
                if entry[2] != 1:
                    raise ValueError(
                        f"{owner}: strides[{level}] = {list(entry)} pools the slice axis; a 2-D backbone needs 1 there"
                    )
                entry = list(entry[:2])
            planar.append(entry)
        strides = planar
    return (patch[0], patch[1]), normalise_strides(strides, num_levels, owner, spatial_dims=2)  # type: ignore[return-value]


def size_divisor(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per axis, the product of the strides: what every input side (and patch side) must be divisible by."""
    return tuple(math.prod(level[axis] for level in strides) for axis in range(len(strides[0])))


def check_backbone_input(x: torch.Tensor, in_channels: int, divisor: int | Sequence[int], owner: str) -> None:
    """Raise a one-line ValueError unless ``x`` is ``(B, in_channels, H, W, D)`` (``(B, in_channels, H, W)`` for a
    2-D ``divisor``), each side divisible by ``divisor``.

    ``divisor`` is an int (three axes) or one int per axis (see :func:`size_divisor`); the message names the
    first axis that fails, its size and the required multiple.
    """
    spatial_dims = 3 if isinstance(divisor, int) else len(divisor)
    if not isinstance(x, torch.Tensor) or x.ndim != spatial_dims + 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        layout = ", ".join(("B", "C") + _AXES[:spatial_dims])
        raise ValueError(f"{owner}: input must be a {spatial_dims + 2}-D tensor ({layout}), got {shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{owner}: input of shape {tuple(x.shape)} has {x.shape[1]} channels, expected {in_channels}")
    check_spatial_size(tuple(x.shape[2:]), divisor, owner, "input of spatial size")


def check_spatial_size(spatial: Sequence[int], divisor: int | Sequence[int], owner: str, what: str) -> None:
    """Raise a one-line ValueError naming the axis, its size and the required multiple unless every side of
    ``spatial`` ``(H, W[, D])`` is divisible by ``divisor`` (an int, or one int per axis); ``what`` names the size."""
    spatial = tuple(int(side) for side in spatial)
    divisors = (divisor,) * len(spatial) if isinstance(divisor, int) else tuple(divisor)
    for axis, (side, multiple) in enumerate(zip(spatial, divisors)):
        if side % multiple:
            raise ValueError(
                f"{owner}: {what} {spatial} has size {side} on axis {axis} ({_AXES[axis]}), which is not "
                f"divisible by {multiple} (the product of that axis' strides)"
            )
