"""Slice-overlay figures of test cases: image, reference contour and prediction contour.

:func:`central_slices` cuts one axial slice (the last spatial axis, the 88-slice axis of LA) through the
reference's centroid out of a case; :func:`plot_case_overlays` draws several such cases (e.g. the best and the
worst test case) as rows of a PNG. Matplotlib runs with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["central_slices", "plot_case_overlays"]

_ENTRY_KEYS = ("case", "dice", "image", "label", "pred")


def _volume(x: Any, name: str) -> np.ndarray:
    """``(H, W, D)``, ``(1, H, W, D)`` or ``(C, H, W, D)`` (channel 0 is taken) tensor/array → ``(H, W, D)`` array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}.")
    if x.ndim == 4:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (H, W, D) or (C, H, W, D), got shape {tuple(x.shape)}.")
    return x


def central_slices(image: Any, label: Any, pred: Any) -> dict[str, Any]:
    """The axial slice through the reference's centroid, of image, reference and prediction.

    The axial axis is the last spatial axis ``D``. The slice index is the rounded mean ``D`` coordinate of the
    reference's foreground voxels (label > 0); with an empty reference it is the middle slice ``D // 2``.

    Args:
        image: ``(H, W, D)`` or ``(C, H, W, D)`` (channel 0 is shown), array or tensor.
        label: reference ``(H, W, D)`` or ``(1, H, W, D)``; foreground is ``> 0``.
        pred: prediction, same shape as ``label``; foreground is ``> 0``.

    Returns:
        ``{"image": (H, W) float32, "label": (H, W) bool, "pred": (H, W) bool, "index": int, "empty_reference": bool}``.

    Raises:
        TypeError: an input is neither an array nor a tensor.
        ValueError: an input has the wrong number of dimensions or the spatial shapes differ.
    """
    image_v, label_v, pred_v = _volume(image, "image"), _volume(label, "label") > 0, _volume(pred, "pred") > 0
    if not image_v.shape == label_v.shape == pred_v.shape:
        raise ValueError(
            f"image, label and pred must share the spatial shape, got {image_v.shape}, {label_v.shape}, {pred_v.shape}."
        )
    depth = image_v.shape[-1]
    z = np.nonzero(label_v)[-1]
    empty = z.size == 0
    index = depth // 2 if empty else int(np.clip(np.rint(z.mean()), 0, depth - 1))
    return {
        "image": image_v[..., index].astype(np.float32),
        "label": label_v[..., index],
        "pred": pred_v[..., index],
        "index": index,
        "empty_reference": empty,
    }


def _check_entries(entries: Sequence[dict[str, Any]]) -> None:
    if len(entries) == 0:
        raise ValueError("entries must hold at least one case dict.")
    for i, entry in enumerate(entries):
        missing = [k for k in _ENTRY_KEYS if k not in entry]
        if missing:
            raise ValueError(f"entries[{i}] lacks keys {missing}; each entry needs {list(_ENTRY_KEYS)}.")


def _contour(ax: Any, mask: np.ndarray, color: str) -> None:
    """Draw the 0.5 iso-line of a 2-D mask in display orientation; nothing for an empty or full mask."""
    if mask.any() and not mask.all():
        ax.contour(mask.T.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.2, origin="lower")


def plot_case_overlays(entries: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Write a PNG with one row per case: image; image + reference contour; image + prediction contour.

    The third panel draws the reference contour (green) under the prediction (red), so misses show at a glance.

    Each entry is ``{"case": str, "dice": float (fraction), "image", "label", "pred"}`` where image/label/pred
    are either 2-D ``(H, W)`` slices (e.g. from :func:`central_slices`) or 3-D volumes, which are cut with
    :func:`central_slices`. Slices are drawn with ``H`` horizontal, ``W`` vertical (transposed, origin lower).

    Args:
        entries: the cases to draw, top to bottom.
        path: output PNG path (folders are created).
        title: figure title.

    Returns:
        the written path.

    Raises:
        ValueError: no entries, an entry without one of the keys above, or slices of different shapes.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    _check_entries(entries)
    rows = []
    for i, entry in enumerate(entries):
        image, label, pred = (np.asarray(entry[k].detach().cpu() if isinstance(entry[k], torch.Tensor) else entry[k])
                              for k in ("image", "label", "pred"))  # fmt: skip
        if image.ndim >= 3:
            cut = central_slices(image, label, pred)
            image, label, pred = cut["image"], cut["label"], cut["pred"]
        if not image.ndim == label.ndim == pred.ndim == 2 or not image.shape == label.shape == pred.shape:
            raise ValueError(
                f"entries[{i}] ({entry['case']}): image, label and pred must be 2-D slices of one shape or 3-D "
                f"volumes, got {image.shape}, {label.shape}, {pred.shape}."
            )
        rows.append((str(entry["case"]), float(entry["dice"]), image.astype(np.float32), label > 0, pred > 0))

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for (case, dice, image, label, pred), row in zip(rows, axes):
        for ax, heading in zip(row, ("image", "reference", "prediction")):
            ax.imshow(image.T, cmap="gray", origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{case}: {heading}" if heading == "image" else heading, fontsize=9)
        _contour(row[1], label, "lime")
        _contour(row[2], label, "lime")
        _contour(row[2], pred, "red")
        row[2].set_title(f"prediction (red) on reference (green), Dice {100 * dice:.1f} %", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
