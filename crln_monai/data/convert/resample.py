"""Resample an axis-aligned voxel grid to a target spacing, optionally only a box of the output grid.

Hand-written on ``scipy.ndimage.affine_transform`` instead of MONAI's ``Spacing`` because the converters need to
resample only the crop box of the output grid (a CT volume at 1 mm is ~50 M voxels; the pancreas box ~2 M), with
the exact output grid defined below; MONAI's ``Spacing`` resamples the whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["resampled_shape", "resample_to_spacing", "voxel_spacing"]


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """The voxel size (mm) of each voxel axis of a ``(4, 4)`` affine: the norms of its first three columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """Output grid size: ``floor((n - 1) * spacing / target) + 1`` per axis.

    The first output voxel centre is the first input voxel centre; every output centre lies inside the span of
    input centres (no extrapolation).
    """
    return tuple(int(np.floor((n - 1) * s / t + 1e-6)) + 1 for n, s, t in zip(shape, spacing, target))


def resample_to_spacing(
    volume: np.ndarray,
    affine: np.ndarray,
    target: Sequence[float],
    order: int,
    box: Sequence[slice] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``volume`` to voxel size ``target`` (the grid of :func:`resampled_shape`), or a box of that grid.

    Args:
        volume: ``(X, Y, Z)`` array.
        affine: its ``(4, 4)`` voxel → world affine (any orientation; voxel axes are kept).
        target: output voxel size per axis (mm).
        order: spline order: 1 (linear) for images, 0 (nearest) for labels.
        box: per-axis ``slice(start, stop)`` of the output grid to compute (default: all of it).

    Returns:
        ``(resampled, affine)``: the output array (``volume``'s dtype) and its affine.
    """
    spacing = voxel_spacing(affine)
    target = np.asarray(target, dtype=np.float64)
    full = resampled_shape(volume.shape, spacing, target)
    box = tuple(box) if box is not None else tuple(slice(0, n) for n in full)
    starts = np.array([b.start for b in box], dtype=np.float64)
    shape = tuple(b.stop - b.start for b in box)
    step = target / spacing  # input voxels per output voxel
    resampled = ndimage.affine_transform(
        volume, step, offset=starts * step, output_shape=shape, order=order, mode="nearest", prefilter=False
    )
    out_affine = np.asarray(affine, dtype=np.float64).copy()
    out_affine[:3, 3] = affine[:3, :3] @ (starts * step) + affine[:3, 3]
    out_affine[:3, :3] = affine[:3, :3] * step
    return resampled, out_affine
