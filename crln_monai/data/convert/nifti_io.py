"""Deterministic, atomic NIfTI writing for the converters, and the uint8 grid re-encoding of 8-bit-derived images.

nibabel's ``nib.save(img, "x.nii.gz")`` stamps the current time into the gzip header, so two runs give different
bytes. Here the NIfTI bytes come from ``img.to_bytes()`` and are gzipped with ``mtime=0`` (level 9), then written with
:func:`crln_monai.io.atomic_write` (flushed to the disk): a file at its final path is always complete, and rerunning a
conversion reproduces it byte for byte.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ...io import atomic_write

__all__ = [
    "encode_uint8_grid",
    "image_nifti",
    "is_complete_nifti_gz",
    "label_nifti",
    "nifti_gz_bytes",
    "write_text_if_changed",
]

_GRID_ULPS = 4.0
"""A value fits the uint8 grid when it decodes back within this many float32 ulps of the largest magnitude."""


def encode_uint8_grid(values: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """Re-encode values that lie on a uniform grid ``inter + k * slope`` (k = 0..255) as uint8 codes.

    Images derived from 8-bit sources (LA MRI, then z-scored) take at most 256 distinct values on such a grid;
    storing the codes with NIfTI ``scl_slope``/``scl_inter`` is lossless up to float32 rounding and 4x smaller.

    The grid: ``k`` = rounded (value − min) / smallest gap between distinct values; ``slope`` = least-squares fit
    of the distinct values on ``k`` (stored as float32); ``inter`` = the float32 midpoint of the residual range
    (minimises the worst decoding error).

    Args:
        values: array of any shape, float or integer.

    Returns:
        ``(codes, slope, inter)`` with ``codes`` uint8 of the same shape, or ``None`` when the values do not fit
        (more than 256 distinct values, not on a uniform grid, not finite, or decoding error above 4 float32 ulps
        of the largest magnitude).
    """
    values = np.asarray(values)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    distinct, inverse = np.unique(values, return_inverse=True)
    if distinct.size > 256:
        return None
    u = distinct.astype(np.float64)
    if u.size == 1:
        k = np.zeros(1)
        slope = np.float32(1.0)
    else:
        k = np.rint((u - u[0]) / np.diff(u).min())
        if k.max() > 255:
            return None
        design = np.stack([np.ones_like(k), k], axis=1)
        slope = np.float32(np.linalg.lstsq(design, u, rcond=None)[0][1])
        if not np.isfinite(slope) or slope == 0:
            return None
    residual = u - k * np.float64(slope)
    inter = np.float32((residual.max() + residual.min()) / 2)
    decoded = k * np.float64(slope) + np.float64(inter)
    tolerance = _GRID_ULPS * float(np.spacing(np.float32(np.abs(u).max())))
    if np.abs(decoded - u).max() > tolerance:
        return None
    codes = k.astype(np.uint8)[inverse.reshape(values.shape)]
    return codes, float(slope), float(inter)


def _with_geometry(img: nib.Nifti1Image, affine: np.ndarray) -> nib.Nifti1Image:
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def image_nifti(values: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """An image volume as NIfTI: uint8 codes + ``scl_slope``/``scl_inter`` where the values fit the grid, else float32.

    Args:
        values: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` (channel last, as NIfTI stores it) float array.
        affine: ``(4, 4)`` voxel → RAS mm matrix; written to qform and sform (code 1, scanner), units mm.
    """
    encoded = encode_uint8_grid(values)
    if encoded is None:
        return _with_geometry(nib.Nifti1Image(np.asarray(values, dtype=np.float32), affine), affine)
    codes, slope, inter = encoded
    img = _with_geometry(nib.Nifti1Image(codes, affine), affine)
    img.header.set_slope_inter(slope, inter)
    return img


def label_nifti(labels: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A label map ``(X, Y, Z)`` as uint8 NIfTI (``scl_slope`` 1, ``scl_inter`` 0), geometry as :func:`image_nifti`.

    Raises:
        ValueError: labels outside 0..255.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label values must lie in 0..255, got range [{labels.min()}, {labels.max()}].")
    img = _with_geometry(nib.Nifti1Image(labels.astype(np.uint8), affine), affine)
    img.header.set_slope_inter(1.0, 0.0)
    return img


def nifti_gz_bytes(img: nib.Nifti1Image) -> bytes:
    """The ``.nii.gz`` bytes of ``img``: single-file NIfTI-1, gzip level 9, gzip mtime 0 (deterministic)."""
    return gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)


def write_text_if_changed(text: str, path: str | os.PathLike) -> bool:
    """Atomically write ``text`` to ``path`` unless the file already holds exactly it (mtime then unchanged).

    Returns:
        whether the file was written.
    """
    path = Path(path)
    data = text.encode()
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, data, fsync=True)
    return True


def is_complete_nifti_gz(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an intact ``.nii.gz``: valid gzip (CRC checked), a NIfTI-1 header, all voxel bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        raw = gzip.decompress(path.read_bytes())
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
        expected = int(header["vox_offset"]) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    except (OSError, EOFError, zlib.error, ValueError, nib.spatialimages.HeaderDataError):
        return False
    return len(raw) == expected
