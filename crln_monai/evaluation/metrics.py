"""Per-case segmentation metrics equivalent to medpy's ``dc``, ``jc``, ``hd95`` and ``asd``, and the
case bootstrap (docs/method.md#metrics-and-bootstrap, A14, A15).

Definitions (medpy's, re-implemented on scipy; medpy itself is not a dependency):

* **Surface** of a mask: its voxels minus its binary erosion by the connectivity-1 structuring element
  (``scipy.ndimage.generate_binary_structure(ndim, 1)``), with the outside of the array counting as
  background, so a mask touching the array border has a surface there.
* **Surface distances** ``A→B``: for every surface voxel of ``A``, the Euclidean distance to the nearest
  surface voxel of ``B`` (``scipy.ndimage.distance_transform_edt(~surface_B, sampling=spacing)``).
* **HD95**: the 95th percentile (``numpy.percentile``, linear interpolation) of the **pooled**
  distances ``pred→ref`` and ``ref→pred`` concatenated. MONAI's ``HausdorffDistanceMetric`` takes
  ``max(p95(pred→ref), p95(ref→pred))`` instead, which is why it is not used (MONAI 1.6.1).
* **ASD**: the mean of ``pred→ref`` only (one direction, medpy ``asd``, not ``assd``).
* **Units**: voxels when ``spacing`` is None, millimetres when a per-axis spacing is given.

Empty-mask rule (explicit, so that reports can flag it):

* empty prediction, non-empty reference: dice = jaccard = hd95 = asd = 0 (the authors' convention,
  kept for parity; flagged so reports can list such cases);
* non-empty prediction, empty reference: dice = jaccard = 0, hd95 = asd = NaN;
* both empty: dice = jaccard = 1, hd95 = asd = 0.

The flags ``empty_prediction`` / ``empty_reference`` say whether each mask is empty (both are True
when both are).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

__all__ = ["METRIC_NAMES", "segmentation_metrics", "multiclass_metrics", "surface_distances", "bootstrap"]

METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` (NumPy array or torch tensor, any device) as a NumPy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")


def _binary_mask(x: Any, name: str) -> np.ndarray:
    """``x`` as a bool array; raises if it holds values other than 0 and 1."""
    arr = _to_numpy(x, name)
    if arr.dtype == np.bool_:
        return arr
    if not ((arr == 0) | (arr == 1)).all():
        raise ValueError(f"{name} must be a binary mask (values 0 and 1 only), got values {np.unique(arr)[:8]}")
    return arr != 0


def _check_shapes(pred: np.ndarray, label: np.ndarray) -> None:
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got pred {pred.shape} and label {label.shape}")
    if pred.ndim < 2:
        raise ValueError(f"pred and label must have at least 2 spatial dims, got shape {pred.shape}")
    if min(pred.shape) < 2:
        # Erosion treats the outside as background, so a size-1 axis makes every voxel "surface".
        raise ValueError(
            f"pred and label must be spatial arrays without size-0/1 axes (squeeze batch/channel axes), "
            f"got shape {pred.shape}"
        )


def _normalise_spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    """``spacing`` as one positive float per axis (a scalar is repeated), or None."""
    if spacing is None:
        return None
    if np.isscalar(spacing):
        values = (float(spacing),) * ndim  # type: ignore[arg-type]
    else:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(values) != ndim:
        raise ValueError(f"spacing must have one value per axis ({ndim}), got {spacing!r}")
    if not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be finite and > 0, got {spacing!r}")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` removed by one connectivity-1 erosion (outside of the array = background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(
    source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...] | None = None
) -> np.ndarray:
    """Distances from each surface voxel of ``source`` to the nearest surface voxel of ``target``.

    Both masks are first cropped to the bounding box of their union plus one voxel (clipped to the
    array). This is exact: every surface voxel of either mask lies in the box, and a voxel's
    connectivity-1 neighbours outside the box are background (or outside the array) either way.

    Args:
        source: bool mask, any shape, non-empty.
        target: bool mask, same shape, non-empty.
        spacing: per-axis voxel size, or None for voxel units.

    Returns:
        float64 array ``(N,)``, one distance per surface voxel of ``source`` (C order).

    Raises:
        ValueError: if either mask is empty or the shapes differ.
    """
    if source.shape != target.shape:
        raise ValueError(f"source and target must have the same shape, got {source.shape} and {target.shape}")
    if not source.any() or not target.any():
        raise ValueError("surface_distances needs two non-empty masks")
    box = ndimage.find_objects((source | target).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, source.shape))
    source_surface, target_surface = _surface(source[box]), _surface(target[box])
    distance_to_target = ndimage.distance_transform_edt(~target_surface, sampling=spacing)
    return np.asarray(distance_to_target[source_surface], dtype=np.float64)


def segmentation_metrics(
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    spacing: float | Sequence[float] | None = None,
) -> dict[str, float | bool]:
    """Dice, Jaccard, HD95 and ASD of one binary prediction against one binary reference (medpy's).

    Empty masks follow the module's rule: empty prediction with a non-empty reference gives all four
    metrics 0 (authors' convention, flagged by ``empty_prediction``); an empty reference with a
    non-empty prediction gives dice = jaccard = 0 and hd95 = asd = NaN (``empty_reference``); both
    empty give dice = jaccard = 1 and hd95 = asd = 0 (both flags True).

    Args:
        pred: binary mask ``(H, W[, D, ...])`` (bool or 0/1 values), NumPy or torch (any device).
        label: binary reference, same shape.
        spacing: voxel size per axis (or one scalar for all axes); None gives voxel units,
            a spacing in mm gives hd95/asd in mm. Dice and Jaccard do not depend on it.

    Returns:
        ``{"dice", "jaccard"}`` as fractions in ``[0, 1]``, ``{"hd95", "asd"}`` as floats, and
        ``{"empty_prediction", "empty_reference"}`` as bools.

    Raises:
        ValueError: if the shapes differ (both are named), have fewer than 2 dims or a size-0/1 axis,
            the masks are not binary, or ``spacing`` is malformed.
        TypeError: if an input is neither a NumPy array nor a torch tensor.
    """
    pred_np = _to_numpy(pred, "pred")
    label_np = _to_numpy(label, "label")
    _check_shapes(pred_np, label_np)
    p, r = _binary_mask(pred_np, "pred"), _binary_mask(label_np, "label")
    sampling = _normalise_spacing(spacing, p.ndim)

    n_pred, n_ref = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    flags = {"empty_prediction": n_pred == 0, "empty_reference": n_ref == 0}
    if n_pred == 0 and n_ref == 0:
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, **flags}
    if n_pred == 0:
        return {"dice": 0.0, "jaccard": 0.0, "hd95": 0.0, "asd": 0.0, **flags}
    if n_ref == 0:
        return {"dice": 0.0, "jaccard": 0.0, "hd95": float("nan"), "asd": float("nan"), **flags}

    n_both = int(np.count_nonzero(p & r))
    pred_to_ref = surface_distances(p, r, sampling)
    ref_to_pred = surface_distances(r, p, sampling)
    return {
        "dice": 2.0 * n_both / (n_pred + n_ref),
        "jaccard": n_both / (n_pred + n_ref - n_both),
        "hd95": float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95)),
        "asd": float(pred_to_ref.mean()),
        **flags,
    }


def multiclass_metrics(
    pred_labels: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
) -> dict[int, dict[str, float | bool]]:
    """:func:`segmentation_metrics` of each foreground class ``1 .. num_classes - 1``.

    Args:
        pred_labels: integer class map ``(H, W[, D])`` (e.g. an argmax), values in ``[0, num_classes)``.
        label: integer reference map, same shape and range.
        num_classes: number of classes including background (≥ 2).
        spacing: as in :func:`segmentation_metrics`.

    Returns:
        ``{class_index: metrics dict}`` for every foreground class.

    Raises:
        ValueError: if ``num_classes < 2``, shapes differ, or a map holds values outside
            ``[0, num_classes)`` or non-integer values.
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    maps = {}
    for name, x in (("pred_labels", pred_labels), ("label", label)):
        arr = _to_numpy(x, name)
        out_of_range = arr.size and (arr.min() < 0 or arr.max() >= num_classes)
        if out_of_range or not np.array_equal(arr, np.round(arr)):
            raise ValueError(
                f"{name} must hold integer class indices in [0, {num_classes}), got values {np.unique(arr)[:8]}"
            )
        maps[name] = arr
    _check_shapes(maps["pred_labels"], maps["label"])
    pred_np, label_np = maps["pred_labels"], maps["label"]
    return {c: segmentation_metrics(pred_np == c, label_np == c, spacing) for c in range(1, int(num_classes))}


def bootstrap(
    values: Sequence[float] | np.ndarray, num_resamples: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Case bootstrap of a mean: resample cases with replacement, nan-mean each resample.

    The authors' protocol (docs/method.md#metrics-and-bootstrap): 100 resamples of the test cases, report
    mean ± std across resamples. Indices come from ``numpy.random.default_rng(seed).integers`` (one
    ``(num_resamples, n)`` draw). A resample whose values are all NaN has no mean and is skipped by the
    final nan-mean/nan-std; the std is the population std (``ddof=0``).

    Args:
        values: per-case values ``(n,)``; NaN marks a case without a value (e.g. empty reference).
        num_resamples: number of resamples (≥ 1).
        seed: seed of the NumPy Generator.

    Returns:
        ``(mean, std)`` over resample means; ``(nan, nan)`` if every value is NaN.

    Raises:
        ValueError: if ``values`` is empty or not 1-D, or ``num_resamples < 1``.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {arr.shape}")
    if int(num_resamples) != num_resamples or num_resamples < 1:
        raise ValueError(f"num_resamples must be an integer >= 1, got {num_resamples!r}")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, arr.size, size=(int(num_resamples), arr.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples
        resample_means = np.nanmean(arr[indices], axis=1)
        return float(np.nanmean(resample_means)), float(np.nanstd(resample_means))
