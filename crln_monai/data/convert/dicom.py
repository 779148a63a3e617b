"""Read one CT DICOM series (a folder of single-slice files) into a volume in Hounsfield units and a RAS affine.

Hand-written on pydicom rather than MONAI's ``PydicomReader``/ITK because the converter needs the checks MONAI
does not make: slices sorted along the slice normal, the same orientation / pixel spacing / size in every slice,
no gantry tilt, a uniform slice step, and a clear error naming the case for a missing or duplicated slice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .output import CONVERT_EXTRA_HINT

__all__ = ["read_dicom_series"]

_SPACING_RTOL = 0.01
"""Relative tolerance on the slice step (and pixel spacing) across a series."""


def _import_pydicom() -> Any:
    try:
        import pydicom
    except ImportError as e:
        raise ImportError(f"reading DICOM series needs pydicom: {CONVERT_EXTRA_HINT}") from e
    return pydicom


def _floats(ds: Any, keyword: str, path: Path, case: str, count: int) -> np.ndarray:
    value = getattr(ds, keyword, None)
    if value is None:
        raise ValueError(f"case {case!r}: {path} has no {keyword}.")
    values = np.asarray([float(v) for v in (value if count > 1 else [value])])
    if values.shape != (count,):
        raise ValueError(f"case {case!r}: {path} {keyword} must hold {count} numbers, got {list(value)}.")
    return values


def _read_slice(pydicom: Any, path: Path, case: str) -> Any:
    try:
        return pydicom.dcmread(str(path))
    except Exception as e:  # pydicom raises InvalidDicomError, EOFError, OSError, ... on bad files
        raise ValueError(f"case {case!r}: {path} is not a readable DICOM file ({type(e).__name__}: {e}).") from e


def read_dicom_series(folder: str | os.PathLike, case: str, pattern: str = "**/*.dcm") -> tuple[np.ndarray, np.ndarray]:
    """Read the DICOM slices under ``folder`` as one volume.

    Voxel axes: ``i`` = column (along the first ImageOrientationPatient vector), ``j`` = row (second vector),
    ``k`` = slice, sorted by ImagePositionPatient along the slice normal ``row × column``. The affine maps
    ``(i, j, k)`` to RAS mm (DICOM's LPS with x and y negated), origin = the first slice's position.

    Args:
        folder: the case's folder (searched recursively).
        case: case name for error messages.
        pattern: glob of the slice files under ``folder``.

    Returns:
        ``(volume, affine)``: ``(X, Y, Z)`` float32 Hounsfield units (RescaleSlope/RescaleIntercept applied) and
        the ``(4, 4)`` affine.

    Raises:
        FileNotFoundError: no slice file.
        ValueError: several series, a missing geometry tag, inconsistent orientation / pixel spacing / size,
            gantry tilt, a duplicated slice, missing slices (a gap that is a multiple of the slice step) or an
            otherwise non-uniform slice step.
        ImportError: pydicom is not installed.
    """
    pydicom = _import_pydicom()
    folder = Path(folder)
    paths = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not paths:
        raise FileNotFoundError(f"case {case!r}: no DICOM files ({pattern}) under {folder}.")
    slices = [(path, _read_slice(pydicom, path, case)) for path in paths]
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise ValueError(f"case {case!r}: {folder} holds {len(series)} DICOM series; expected one.")

    first_path, first = slices[0]
    orientation = _floats(first, "ImageOrientationPatient", first_path, case, 6)
    pixel_spacing = _floats(first, "PixelSpacing", first_path, case, 2)
    size = (int(first.Rows), int(first.Columns))
    for path, ds in slices[1:]:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", path, case, 6), orientation, atol=1e-4):
            raise ValueError(f"case {case!r}: inconsistent orientation: {path} differs from {first_path}.")
        if not np.allclose(_floats(ds, "PixelSpacing", path, case, 2), pixel_spacing, rtol=_SPACING_RTOL):
            raise ValueError(f"case {case!r}: inconsistent pixel spacing: {path} differs from {first_path}.")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise ValueError(f"case {case!r}: inconsistent slice size: {path} differs from {first_path}.")

    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([_floats(ds, "ImagePositionPatient", path, case, 3) for path, ds in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    if len(slices) > 1 and np.abs(in_plane).max() > 0.1 * pixel_spacing.min():
        raise ValueError(f"case {case!r}: slice positions are sheared (gantry tilt); not supported.")

    step = _slice_step(positions @ normal, [p for p, _ in slices], case)
    volume = np.empty((size[1], size[0], len(slices)), dtype=np.float32)
    for k, (path, ds) in enumerate(slices):
        slope, intercept = float(getattr(ds, "RescaleSlope", 1.0)), float(getattr(ds, "RescaleIntercept", 0.0))
        volume[:, :, k] = (ds.pixel_array.astype(np.float32) * slope + intercept).T

    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]  # columns advance along the row direction by the column spacing
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = normal * step
    affine[:3, 3] = positions[0]
    affine[:2] *= -1  # LPS → RAS
    return volume, affine


def _slice_step(depths: np.ndarray, paths: list[Path], case: str) -> float:
    """The uniform slice step of sorted slice depths; errors name the offending slices."""
    if len(depths) == 1:
        return 1.0
    gaps = np.diff(depths)
    duplicated = np.flatnonzero(gaps < 1e-3)
    if duplicated.size:
        i = int(duplicated[0])
        raise ValueError(f"case {case!r}: duplicated slice position {depths[i]:.3f} mm ({paths[i]}, {paths[i + 1]}).")
    step = float(np.median(gaps))
    ratio = gaps / step
    for i in np.flatnonzero(np.abs(ratio - 1) > _SPACING_RTOL):
        n = round(float(ratio[i]))
        if n >= 2 and abs(ratio[i] - n) <= _SPACING_RTOL * n:
            raise ValueError(
                f"case {case!r}: {n - 1} missing slice(s) between {paths[i].name} ({depths[i]:.3f} mm) and "
                f"{paths[i + 1].name} ({depths[i + 1]:.3f} mm); slice step {step:.3f} mm."
            )
        raise ValueError(
            f"case {case!r}: inconsistent slice spacing: {gaps[i]:.3f} mm between {paths[i].name} and "
            f"{paths[i + 1].name}, {step:.3f} mm elsewhere."
        )
    return float(gaps.mean())
