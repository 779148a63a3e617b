"""Check a data set's files before any work: readable, complete, 3-D, the right channels, matching labels.

:func:`check_cases` runs at the start of training, evaluation and inference (bundle run lists) so that a broken
file is named with a one-line message before the first cached case, iteration or prediction — instead of an
``EOFError`` without a file name half-way through caching, or a wrong channel count that fails only when the
case is drawn.

What it reads, per file:

* **the NIfTI header** (nibabel, the first ~350 bytes) for the shape and the affine, through
  :func:`~crln_monai.data.dataset.read_volume` (the reader the plan's headers use too);
* **the gzip trailer** of a ``.nii.gz`` (its last 4 bytes: the uncompressed size modulo 2**32) against the size
  the header announces, so a truncated file is found without decompressing it; only when the two disagree is the
  stream decompressed once (a multi-member gzip, or to confirm the truncation);
* **label voxels**: label maps are read in full (uint8, small) to check their values against the classes;
* **image voxels** only with ``check_finite=True`` (NaN / Inf): that decompresses every image once, about the cost
  of loading it, so it is meant where that is cheap against the work that follows (evaluation and inference run
  a sliding-window prediction per case) or where the loading pipeline would not see every case up front
  (training with ``cache_rate < 1``; with ``cache_rate == 1`` the pipeline's
  :class:`~crln_monai.data.transforms.CheckFinited` refuses such a case while it caches it, before iteration 1).

Files that are not NIfTI (``.nrrd``, ``.mha``, ``.npy``, ...) are read with MONAI's ``LoadImage`` (voxels
included: those formats have no cheap header path here); their geometry comes from MONAI's meta data.

MONAI has no such pre-flight check (its readers fail at load time, inside a worker or a cache thread);
nnU-Net's ``verify_dataset_integrity`` is the model for the list of checks.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from .dataset import Volume, image_channels, is_nifti, read_volume, same_grid

__all__ = ["check_cases"]

logger = logging.getLogger(__name__)

_READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, struct.error, ValueError)
_CHUNK = 1 << 22


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _unreadable(path: str, what: str, error: BaseException) -> ValueError:
    return ValueError(f"{what} {path} cannot be read ({_one_line(error)}); expected a complete, valid image file.")


def _expected_nifti_bytes(image: Any) -> int:
    """Bytes of a single-file NIfTI: the data offset nibabel reads from (``vox_offset``, 352 when it is 0) + data."""
    proxy = image.dataobj
    return int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize


def _stream_size(path: str) -> int:
    """Uncompressed size of a gzip file, decompressing it once (raises on a truncated or corrupt stream)."""
    size = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
    return size


def _check_complete(path: str, image: Any, what: str) -> None:
    """Refuse a NIfTI file shorter than its header announces (truncated download or copy)."""
    expected = _expected_nifti_bytes(image)
    if path.endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 18:
                raise ValueError(f"{what} {path} is truncated ({f.tell()} bytes); expected a complete .nii.gz file.")
            f.seek(-4, os.SEEK_END)
            trailer = struct.unpack("<I", f.read(4))[0]
        if trailer == expected % (1 << 32):
            return
        try:
            size = _stream_size(path)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(
                f"{what} {path} is truncated or corrupt ({_one_line(e)}); expected a complete .nii.gz file."
            ) from None
    else:
        size = os.path.getsize(path)
    if size < expected:
        raise ValueError(
            f"{what} {path} is truncated: {size} bytes of NIfTI data where its header announces {expected}."
        )


def _read_volume(path: str, what: str) -> Volume:
    """:func:`~crln_monai.data.dataset.read_volume` of ``path`` (header of a NIfTI file, whole file of another
    format), every read failure one line naming it; a NIfTI file's completeness checked."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} not found.")
    errors = _READ_ERRORS if is_nifti(path) else (Exception,)  # MONAI wraps each reader's own error types
    try:
        volume = read_volume(path)
    except errors as e:
        raise _unreadable(path, what, e) from None
    if volume.image is not None:
        _check_complete(path, volume.image, what)
    return volume


def _voxels(volume: Volume, what: str, scaled: bool = True) -> np.ndarray:
    if volume.data is not None:
        return volume.data
    try:
        if scaled:
            return np.asanyarray(volume.image.dataobj)
        return np.asanyarray(volume.image.dataobj.get_unscaled())
    except _READ_ERRORS as e:
        raise ValueError(f"{what} {volume.path}: voxel data cannot be read ({_one_line(e)}).") from None


def _check_geometry(volume: Volume, what: str) -> None:
    if any(s == 0 for s in volume.shape):
        raise ValueError(f"{what} {volume.path} is empty (shape {volume.shape}); expected a 3-D volume.")
    linear = volume.affine[:3, :3]
    if not np.all(np.isfinite(volume.affine)) or abs(float(np.linalg.det(linear))) < 1e-12:
        raise ValueError(
            f"{what} {volume.path} has a degenerate affine {volume.affine[:3].round(4).tolist()}; expected finite, "
            "non-zero voxel sizes."
        )


def _check_finite(volume: Volume, what: str) -> None:
    if volume.data is None:
        header = volume.image.header
        slope, inter = header.get_slope_inter()
        for name, value in (("scl_slope", slope), ("scl_inter", inter)):
            if value is not None and not np.isfinite(value):
                raise ValueError(f"{what} {volume.path}: header {name} is {value}; expected a finite scaling.")
        raw = _voxels(volume, what, scaled=False)  # integers are finite: reading them still proves the stream
    else:
        raw = volume.data
    if not np.issubdtype(raw.dtype, np.floating) and not np.issubdtype(raw.dtype, np.complexfloating):
        return
    finite = np.isfinite(raw)
    if finite.all():
        return
    nan = int(np.isnan(raw).sum())
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise ValueError(
        f"{what} {volume.path}: {nan} NaN and {raw.size - int(finite.sum()) - nan} Inf voxels of {raw.size} "
        f"(first at voxel {first}); expected finite intensities."
    )


def _check_label_values(volume: Volume, what: str, num_classes: int) -> np.ndarray:
    """Refuse values that are not class indices; returns which classes the label holds (bool per class)."""
    values = _voxels(volume, what)
    if values.size == 0:
        return np.zeros(num_classes, dtype=bool)
    low, high = values.min(), values.max()
    integral = np.issubdtype(values.dtype, np.integer) or bool(np.all(values == np.round(values)))
    if integral and 0 <= low and high < num_classes:
        indices = values.ravel() if np.issubdtype(values.dtype, np.integer) else values.ravel().astype(np.int64)
        return np.bincount(indices, minlength=num_classes)[:num_classes] > 0
    unique = np.unique(values)
    bad = unique[~((unique >= 0) & (unique < num_classes) & (unique == np.round(unique)))]
    raise ValueError(
        f"{what} {volume.path} holds values {bad[:10].tolist()} that are not class indices; expected integers in "
        f"0..{num_classes - 1} (num_classes={num_classes})."
    )


def _geometry_mismatch(what: str, volume: Volume, reference: Volume, reference_what: str, atol: float) -> str:
    if volume.shape[:3] != reference.shape[:3]:
        return (
            f"{what} {volume.path} has spatial shape {volume.shape[:3]}, {reference_what} {reference.path} has "
            f"{reference.shape[:3]}; expected the same voxel grid."
        )
    difference = float(np.abs(volume.affine - reference.affine).max())
    return (
        f"{what} {volume.path} and {reference_what} {reference.path} have different affines (largest difference "
        f"{difference:.4g} > {atol:g}); expected the same voxel grid."
    )


def _as_item(item: Any, image_key: str) -> Mapping[str, Any]:
    if isinstance(item, (str, os.PathLike)):
        return {image_key: os.fspath(item)}
    if not isinstance(item, Mapping) or image_key not in item:
        raise ValueError(f"data check: expected a file path or a dict with an {image_key!r} key, got {item!r:.200}.")
    return item


def _paths(value: Any, what: str) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, Sequence) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    raise ValueError(f"{what}: expected a file path or a non-empty list of channel files, got {value!r:.200}.")


def _check_item(
    item: Mapping[str, Any],
    in_channels: int | None,
    num_classes: int | None,
    image_key: str,
    label_key: str,
    check_finite: bool,
    affine_atol: float,
    present: np.ndarray | None = None,
) -> int:
    """Check one case; returns the number of files read. ``present`` (bool per class) gets the label's classes."""
    case = item.get("case")
    suffix = f" (case {case!r})" if case is not None else ""
    image_what, label_what = f"image{suffix}", f"label{suffix}"
    paths = _paths(item[image_key], image_what)
    volumes = []
    channels = 0
    for path in paths:
        volume = _read_volume(path, image_what)
        _check_geometry(volume, image_what)
        channels += image_channels(volume, image_what)
        if volumes and not same_grid(volume, volumes[0], affine_atol):
            raise ValueError(_geometry_mismatch(image_what, volume, volumes[0], "first channel file", affine_atol))
        volumes.append(volume)
    if in_channels is not None and channels != in_channels:
        files = f"{len(paths)} channel files ({', '.join(paths)})" if len(paths) > 1 else f"{paths[0]}"
        shape = "" if len(paths) > 1 else f" (shape {volumes[0].shape})"
        raise ValueError(
            f"{image_what} {files}{shape} has {channels} channel(s); expected in_channels={in_channels} (a 4-D "
            "image's 4th axis is read as channels)."
        )
    if check_finite:
        for volume in volumes:
            _check_finite(volume, image_what)
    label = item.get(label_key)
    if label is None:
        return len(paths)
    if not isinstance(label, (str, os.PathLike)):
        raise ValueError(f"{label_what}: expected one label file path, got {label!r:.200}.")
    label_path = os.fspath(label)
    volume = _read_volume(label_path, label_what)
    _check_geometry(volume, label_what)
    if not (len(volume.shape) == 3 or (len(volume.shape) == 4 and volume.shape[3] == 1)):
        raise ValueError(
            f"{label_what} {label_path} has shape {volume.shape}; expected a 3-D label map (H, W, D) of class indices."
        )
    if not same_grid(volume, volumes[0], affine_atol):
        raise ValueError(_geometry_mismatch(label_what, volume, volumes[0], "image", affine_atol))
    if num_classes is not None:
        held = _check_label_values(volume, label_what, num_classes)
        if present is not None:
            present |= held
    return len(paths) + 1


def _warn_absent_classes(present: np.ndarray, labels: int, class_names: Sequence[str] | None) -> None:
    absent = np.flatnonzero(~present)
    if absent.size == 0:
        return
    names = [
        f"{i} ({class_names[i]!r})" if class_names is not None and i < len(class_names) else str(i) for i in absent
    ]
    logger.warning(
        f"data check: class(es) {', '.join(names)} of num_classes={present.size} are held by none of the {labels} "
        "label file(s) checked: a class no label holds is never learned (training) and never scored (evaluation); "
        "check num_classes and class_names against the labels."
    )


def check_cases(
    items: Iterable[Mapping[str, Any] | str | os.PathLike],
    in_channels: int | None,
    num_classes: int | None = None,
    *,
    check_finite: bool = False,
    image_key: str = "image",
    label_key: str = "label",
    affine_atol: float = 1e-3,
    require_label: bool = False,
    class_names: Sequence[str] | None = None,
) -> list:
    """Check every case's files before any work; refuse the first bad one with a one-line message naming it.

    Per case: every image file (one path, or a list of channel files) exists, is a readable, complete file
    (truncated ``.nii.gz`` found from the gzip trailer, see the module docstring), is 3-D ``(H, W, D)`` or 4-D
    ``(H, W, D, C)`` with the channels on the 4th axis, has a finite non-degenerate affine, and the channels add
    up to ``in_channels``; channel files share one voxel grid. A label (when the item has one) is a readable 3-D
    map on the image's grid (same spatial shape; affine equal within ``affine_atol`` mm) holding integers in
    ``[0, num_classes)``.

    Cost: headers only (milliseconds per file) except the label voxels (read in full: one decompression of each
    label map) and, with ``check_finite``, the image voxels (one decompression of each image, about the cost of
    loading it). Memory: one volume at a time.

    Args:
        items: datalist items ``{"image": path | [paths], "label": path (optional), "case": id (optional)}``, or
            plain image paths (inference inputs).
        in_channels: expected image channels; ``None`` skips the count.
        num_classes: label values must lie in ``[0, num_classes)``; ``None`` skips the values (labels are still
            checked for shape and affine).
        check_finite: also read every image's voxels and refuse NaN / Inf.
        image_key: key of the image path(s) in an item.
        label_key: key of the label path in an item.
        affine_atol: largest allowed difference between the image's and the label's affine entries (mm).
        require_label: refuse a case without a label (evaluation scores every test case against its label; without
            this check an image-only case fails only when it is loaded, after the cases before it were predicted).
        class_names: names of the classes, for the warning below (default: their indices only).

    A class of ``num_classes`` that none of the label files checked holds is logged as a warning naming it (a plan
    edited to more classes than the labels hold trains and exports a class no case taught): one line per call.

    Returns:
        ``items`` as a list (unchanged), so the check can wrap a list where it is used.

    Raises:
        FileNotFoundError: a listed file does not exist.
        ValueError: an unreadable, truncated or corrupt file; a 2-D (or 5-D) image; a wrong channel count;
            label/image shape or affine mismatch; label values outside the classes; NaN/Inf voxels
            (``check_finite``). The message names the file (and the case) and what was expected.
    """
    start = time.perf_counter()
    items = list(items)
    files = 0
    present = np.zeros(num_classes or 0, dtype=bool)
    labels = 0
    for item in items:
        item = _as_item(item, image_key)
        if require_label and item.get(label_key) is None:
            case = f" (case {item['case']!r})" if item.get("case") is not None else ""
            raise ValueError(
                f"image{case} {item[image_key]} has no label file; expected a label for every case here (evaluation "
                "scores each test case against its label)."
            )
        files += _check_item(
            item, in_channels, num_classes, image_key, label_key, bool(check_finite), affine_atol, present
        )  # fmt: skip
        labels += item.get(label_key) is not None
    if num_classes is not None and labels:
        _warn_absent_classes(present, labels, class_names)
    finite = ", voxels finite" if check_finite else ""
    seconds = time.perf_counter() - start
    logger.info(f"data check: {len(items)} case(s), {files} file(s) passed{finite} in {seconds:.1f} s")
    return items
