"""UA-MT/TraCoCo sliding-window inference on MONAI's ``SlidingWindowInferer`` (docs/method.md#sliding-window-inference).

The UA-MT tiler, per spatial axis of size ``S`` with patch ``p`` and stride ``s``:

* an axis with ``S < p`` is zero-padded symmetrically to ``p`` (``(p - S) // 2`` before, the rest
  after), then tiled in the padded frame; the stitched output is cropped back to ``S``;
* ``n = ceil((S - p) / s) + 1`` windows start at ``min(i * s, S - p)``, so the last one is flush with
  the border;
* the **softmax** of each window's logits is summed and divided by the per-voxel window count.

MONAI's ``SlidingWindowInferer`` pads and places windows the same way (``dense_patch_slices``), but it
takes an ``overlap`` fraction and derives the stride as ``int(roi * (1 - overlap))``; naive
``1 - s/p`` can truncate to ``s - 1``. :func:`overlap_for_stride` returns the fraction that yields ``s``
exactly, and :class:`UAMTSlidingWindowInferer` wraps the network so that probabilities, not logits,
are averaged (``mode="constant"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

from ..utils import amp_dtype as _amp_dtype

__all__ = ["window_starts", "overlap_for_stride", "UAMTSlidingWindowInferer", "sliding_window_softmax"]


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window starts of the UA-MT tiler along one axis.

    Coordinate frame: if ``size < patch`` the axis is first zero-padded symmetrically to ``patch``
    (``(patch - size) // 2`` voxels before), and the single start ``0`` is in that **padded** frame
    (``-((patch - size) // 2)`` in the original frame). Otherwise starts are in the original frame.

    Args:
        size: axis length ``S`` (≥ 1).
        patch: window length ``p`` (≥ 1).
        stride: step ``s`` (≥ 1).

    Returns:
        ``[min(i * s, S' - p) for i in range(ceil((S' - p) / s) + 1)]`` with ``S' = max(S, p)``.

    Raises:
        ValueError: if any argument is < 1.
    """
    for name, value in (("size", size), ("patch", patch), ("stride", stride)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    padded = max(size, patch)
    count = math.ceil((padded - patch) / stride) + 1
    return [min(i * stride, padded - patch) for i in range(count)]


def overlap_for_stride(patch_size: Sequence[int], stride: Sequence[int]) -> list[float]:
    """Per-axis MONAI ``overlap`` that makes ``int(patch * (1 - overlap)) == stride`` exactly.

    ``1 - (stride + 0.5) / patch`` puts ``patch * (1 - overlap)`` half-way between ``stride`` and
    ``stride + 1``, so float error cannot truncate it; ``stride == patch`` maps to ``0.0``
    (MONAI rejects negative overlaps). E.g. LA ``(112, 112, 80)``/``(18, 18, 4)`` →
    ``[0.8348.., 0.8348.., 0.94375]``.

    Args:
        patch_size: window size per axis.
        stride: step per axis, ``1 <= stride <= patch``.

    Returns:
        One overlap fraction in ``[0, 1)`` per axis.

    Raises:
        ValueError: if lengths differ or a stride is outside ``[1, patch]``.
    """
    if len(patch_size) != len(stride):
        raise ValueError(f"patch_size {tuple(patch_size)} and stride {tuple(stride)} must have the same length")
    overlaps = []
    for p, s in zip(patch_size, stride):
        if int(p) != p or int(s) != s or not 1 <= s <= p:
            raise ValueError(
                f"each stride must be an integer in [1, patch], "
                f"got stride {tuple(stride)} for patch {tuple(patch_size)}"
            )
        overlaps.append(0.0 if s == p else 1.0 - (s + 0.5) / p)
    return overlaps


class _SoftmaxPredictor:
    """Callable ``window (N, Cin, *patch) -> softmax(network(window), dim=1)`` (float32), optionally
    under ``torch.autocast``; a module-level class so that it pickles."""

    def __init__(self, network: Callable[..., torch.Tensor], softmax: bool, amp_dtype: torch.dtype | None) -> None:
        self.network = network
        self.softmax = softmax
        self.amp_dtype = amp_dtype

    def __call__(self, window: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.amp_dtype is None:
            logits = self.network(window, *args, **kwargs)
        else:
            with torch.autocast(device_type=window.device.type, dtype=self.amp_dtype):
                logits = self.network(window, *args, **kwargs)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(
                f"the network given to the sliding-window inferer must return one logits tensor (N, C, ...), "
                f"got {type(logits).__name__}; wrap it to select the logits"
            )
        logits = logits.float()
        return torch.softmax(logits, dim=1) if self.softmax else logits


class UAMTSlidingWindowInferer(SlidingWindowInferer):
    """MONAI ``SlidingWindowInferer`` with the UA-MT stride and softmax averaging.

    Usable wherever MONAI expects an inferer (e.g. a bundle's evaluator ``inferer``): it is called
    as ``inferer(inputs, network, *args, **kwargs)`` and returns the averaged probabilities.

    Args:
        patch_size: window size ``(p_H, p_W, p_D)``; must be the training patch size (docs/method.md, A16).
        stride: window step per axis, ``1 <= stride <= patch``; converted with :func:`overlap_for_stride`.
        sw_batch_size: windows per network call.
        softmax: average ``softmax(logits, dim=1)`` (UA-MT) when True; raw outputs when False.
        amp_dtype: run the network under ``torch.autocast`` with this dtype
            (``torch.float16``/``torch.bfloat16`` or ``"float16"``/``"bfloat16"``); None runs it as is.
            Outputs are cast to float32 before the softmax.
        sw_device: device of the windows/network (default: the input's device).
        device: device of the stitched output (default: the input's device), e.g. ``"cpu"`` for large volumes.
        progress: show a tqdm bar.

    Inputs/outputs of ``__call__``: ``inputs (B, Cin, H, W, D)`` → ``(B, C, H, W, D)`` probabilities
    (dtype of ``inputs``); ``network(window (N, Cin, *patch)) -> logits (N, C, *patch)``.

    Raises:
        ValueError: if ``patch_size``/``stride`` are inconsistent or ``amp_dtype`` is unknown.
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        stride: Sequence[int],
        sw_batch_size: int = 4,
        softmax: bool = True,
        amp_dtype: torch.dtype | str | None = None,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.stride = tuple(int(s) for s in stride)
        super().__init__(
            roi_size=self.patch_size,
            sw_batch_size=sw_batch_size,
            overlap=overlap_for_stride(self.patch_size, self.stride),
            mode="constant",
            padding_mode="constant",
            cval=0.0,
            sw_device=sw_device,
            device=device,
            progress=progress,
        )
        self.softmax = bool(softmax)
        self.amp_dtype = _amp_dtype(amp_dtype)

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        if inputs.ndim != len(self.patch_size) + 2:
            raise ValueError(
                f"inputs must be (B, C, {', '.join('*' * len(self.patch_size))}) for patch_size {self.patch_size}, "
                f"got shape {tuple(inputs.shape)}"
            )
        predictor = _SoftmaxPredictor(network, self.softmax, self.amp_dtype)
        return super().__call__(inputs, predictor, *args, **kwargs)  # type: ignore[return-value]


def sliding_window_softmax(
    inputs: torch.Tensor,
    predictor: Callable[..., torch.Tensor],
    patch_size: Sequence[int],
    stride: Sequence[int],
    sw_batch_size: int = 4,
    amp_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Averaged softmax of ``predictor`` over UA-MT windows (function form of :class:`UAMTSlidingWindowInferer`).

    Args:
        inputs: ``(B, Cin, H, W, D)`` volume.
        predictor: callable ``(N, Cin, *patch) -> logits (N, C, *patch)``.
        patch_size: window size per axis.
        stride: window step per axis.
        sw_batch_size: windows per predictor call.
        amp_dtype: autocast dtype or None (see the class).
        device: device of the stitched output (default: the input's).

    Returns:
        ``(B, C, H, W, D)`` averaged probabilities.
    """
    inferer = UAMTSlidingWindowInferer(
        patch_size, stride, sw_batch_size=sw_batch_size, amp_dtype=amp_dtype, device=device
    )
    return inferer(inputs, predictor)
