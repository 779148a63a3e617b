"""What a data set holds: its json, every case's header, the labelled cases' label values and foreground.

Our own statistics rather than MONAI's ``monai.apps.auto3dseg.DataAnalyzer`` (docs/planning.md#what-the-plan-reads),
because of what the plan needs and what DataAnalyzer does with it:

- a plan needs the header (shape, spacing, channels) of *every* case, the image-only ones included; those are read
  from the NIfTI header alone (nibabel, no voxel data), while DataAnalyzer loads every voxel of every image;
- a bad case must stop the plan with one line naming it; DataAnalyzer drops a case that fails (e.g. a channel with no
  positive voxel) with only an INFO log;
- its summary intensity is channel 0 only and its summary percentiles are means of per-case percentiles; nnU-Net's
  CT rule needs percentiles of the *pooled* foreground voxels (what :func:`foreground_intensities` samples);
- the label statistics are wanted from the labelled cases of the semi-supervised split only (the unlabelled pool's
  label files, where a benchmark ships them, must not steer the plan).

Axis order: every shape, spacing and box here is in RAS axis order (the array after MONAI's
``Orientationd(axcodes="RAS")``, which the plan sets), not the file's and not nnU-Net's transposed order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "CaseHeader",
    "DatasetJson",
    "LabelSummary",
    "PlanError",
    "count_label_entries",
    "foreground_intensities",
    "read_case_header",
    "read_dataset_json",
    "read_label",
]

_NIFTI_ENDINGS = (".nii", ".nii.gz")


class PlanError(ValueError):
    """The data set cannot be planned; the message is one line naming the case or key and what was expected."""


@dataclass(frozen=True)
class DatasetJson:
    """The planning-relevant part of the data set json.

    Attributes:
        path: the json file, ``None`` when there is none (nnU-Net layout without json).
        name: the json's ``name``, else the folder name.
        class_names: names by label index (``labels``, either Decathlon form), ``None`` without ``labels``.
        modalities: names by channel (``channel_names`` or ``modality``), ``None`` without either.
        raw: the whole json object (``{}`` without a file).
    """

    path: Path | None
    name: str
    class_names: list[str] | None
    modalities: list[str] | None
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class CaseHeader:
    """One case as its header describes it (no voxel data read).

    Attributes:
        case: case id.
        role: ``"labelled"``, ``"unlabelled"``, ``"validation"`` or ``"test"`` (in the full-list split).
        images: the image file(s), one per channel file.
        label: the label file or ``None``.
        shape: spatial size in RAS axis order.
        spacing: voxel size in mm in RAS axis order (column norms of the affine, as MONAI's ``Spacingd`` reads it).
        channels: number of image channels (files × 4th dimension).
        ras_axes: for each RAS axis, the file axis it comes from.
    """

    case: str
    role: str
    images: tuple[str, ...]
    label: str | None
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    channels: int
    ras_axes: tuple[int, int, int]


@dataclass(frozen=True)
class LabelSummary:
    """One label file: voxels per class and the foreground's bounding box.

    Attributes:
        case: case id.
        counts: voxels per label value, index = value (length = largest value + 1, at least the json's classes).
        box: per RAS axis ``(first, last)`` voxel index of the foreground (label > 0) in the file's index direction
            (axes permuted to RAS, flips not applied: the plan only uses extents and symmetric overlaps), ``None``
            without foreground.
    """

    case: str
    counts: np.ndarray
    box: tuple[tuple[int, int], ...] | None

    @property
    def voxels(self) -> int:
        return int(self.counts.sum())

    @property
    def foreground_fraction(self) -> float:
        return float(self.counts[1:].sum() / max(self.voxels, 1))


# ------------------------------------------------------------------------------------------------- the json


def _indexed_names(value: Any, key: str, where: str) -> list[str]:
    """``{"0": "a", "1": "b"}`` or ``{"a": 0, "b": 1}`` (or a list) → ``["a", "b"]``; indices must be 0..K-1."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if not isinstance(value, Mapping) or not value:
        raise PlanError(f"{where} '{key}' must map indices to names, got {value!r:.200}.")
    if all(isinstance(k, str) and k.strip().isdigit() and isinstance(v, str) for k, v in value.items()):
        by_index = {int(k): v for k, v in value.items()}
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
        by_index = {v: k for k, v in value.items()}
    else:
        raise PlanError(
            f"{where} '{key}' must be {{\"0\": name, ...}} or {{name: 0, ...}} with single integer values "
            f"(region lists are not supported), got {value!r:.200}."
        )
    if sorted(by_index) != list(range(len(by_index))):
        indices = sorted(by_index)
        raise PlanError(f"{where} '{key}' indices are {indices}; expected 0..{len(indices) - 1} without gaps.")
    return [by_index[i] for i in range(len(by_index))]


def read_dataset_json(dataset_dir: Path, datalist_file: str) -> DatasetJson:
    """Read ``dataset_dir / datalist_file`` (absent is fine: the nnU-Net layout does not need it).

    Raises:
        PlanError: the file is not a JSON object, or its ``labels`` / ``channel_names`` / ``modality`` is malformed.
    """
    path = dataset_dir / datalist_file
    if not path.is_file():
        return DatasetJson(None, dataset_dir.name, None, None, {})
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PlanError(f"{path} is not valid JSON ({e}); expected a dataset description object.") from e
    if not isinstance(raw, Mapping):
        raise PlanError(f"{path} holds a {type(raw).__name__}; expected a dataset description object.")
    labels = raw.get("labels")
    class_names = None if labels is None else _indexed_names(labels, "labels", str(path))
    if class_names is not None and len(class_names) < 2:
        raise PlanError(f"{path} 'labels' names {len(class_names)} class; expected background and at least one more.")
    key = "channel_names" if "channel_names" in raw else "modality"
    modalities = _indexed_names(raw[key], key, str(path)) if key in raw else None
    name = raw.get("name") if isinstance(raw.get("name"), str) and raw.get("name") else dataset_dir.name
    return DatasetJson(path, name, class_names, modalities, raw)


def count_label_entries(dataset_dir: Path, meta: DatasetJson) -> int:
    """Label files the data set names: ``label`` entries of the json's lists (Decathlon) or files in ``labelsTr``."""
    raw = meta.raw
    if isinstance(raw.get("training"), list):
        lists = [raw.get("training", []), raw.get("unlabelled", [])]
        return sum(isinstance(e, Mapping) and e.get("label") is not None for entries in lists for e in entries)
    folder = dataset_dir / "labelsTr"
    return sum(p.is_file() and not p.name.startswith(".") for p in folder.iterdir()) if folder.is_dir() else 0


# ---------------------------------------------------------------------------------------------- headers


def _is_nifti(path: str) -> bool:
    return path.endswith(_NIFTI_ENDINGS)


def _shape_affine(path: str) -> tuple[tuple[int, ...], np.ndarray]:
    """Array shape and affine of an image file; NIfTI from the header alone, other formats through MONAI."""
    if _is_nifti(path):
        image = nib.load(path)
        return tuple(int(s) for s in image.shape), np.asarray(image.affine, dtype=float)
    from monai.transforms import LoadImage  # reads the voxels: only for formats without a cheap header reader

    data = LoadImage(image_only=True)(path)
    return tuple(int(s) for s in data.shape), np.asarray(data.affine, dtype=float)


def _load_array(path: str, dtype: Any = None) -> np.ndarray:
    if _is_nifti(path):
        image = nib.load(path)
        return image.get_fdata(dtype=dtype) if dtype is not None else np.asanyarray(image.dataobj)
    from monai.transforms import LoadImage

    data = np.asarray(LoadImage(image_only=True)(path))
    return data.astype(dtype) if dtype is not None else data


def _ras_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """For each RAS axis, the file axis that ``Orientationd("RAS")`` moves there (nearest axis for oblique affines)."""
    ornt = nib.orientations.io_orientation(affine)
    axes = [0, 0, 0]
    for file_axis, (ras_axis, _) in enumerate(ornt[:3]):
        axes[int(ras_axis)] = file_axis
    return axes[0], axes[1], axes[2]


def read_case_header(item: Mapping[str, Any], role: str) -> CaseHeader:
    """Header of one datalist item (``{"image": path | [paths], "label"?: path, "case": id}``).

    Raises:
        PlanError: an image is not 3D (or 3D + channels), or the channel files of the case differ in shape or grid.
    """
    case = str(item["case"])
    images = tuple(item["image"]) if isinstance(item["image"], (list, tuple)) else (item["image"],)
    channels, first_shape, first_affine = 0, None, None
    for path in images:
        shape, affine = _shape_affine(path)
        if len(shape) < 3:
            raise PlanError(f"case {case!r}: image {path} has shape {shape}; expected a 3D volume.")
        if first_shape is None:
            first_shape, first_affine = shape[:3], affine
        elif shape[:3] != first_shape or not np.allclose(affine[:3], first_affine[:3], atol=1e-3):
            raise PlanError(
                f"case {case!r}: channel file {path} has shape {shape[:3]} on another grid than {images[0]} "
                f"{first_shape}; expected every channel file of a case on the same grid."
            )
        channels += int(np.prod(shape[3:])) if len(shape) > 3 else 1
    assert first_shape is not None and first_affine is not None
    spacing = np.sqrt((first_affine[:3, :3] ** 2).sum(axis=0))
    axes = _ras_axes(first_affine)
    return CaseHeader(
        case=case,
        role=role,
        images=images,
        label=item.get("label"),
        shape=tuple(int(first_shape[a]) for a in axes),  # type: ignore[arg-type]
        spacing=tuple(float(spacing[a]) for a in axes),  # type: ignore[arg-type]
        channels=channels,
        ras_axes=axes,
    )


# ----------------------------------------------------------------------------------------------- labels


def _describe(class_names: Sequence[str] | None) -> str:
    if class_names is None:
        return "non-negative integers"
    shown = ", ".join(f"{i} {n}" for i, n in enumerate(class_names))
    return f"the json's labels 0..{len(class_names) - 1} ({shown})"


def read_label(header: CaseHeader, class_names: Sequence[str] | None) -> LabelSummary:
    """Check one label file against its image and the json's ``labels``; count voxels per class.

    Raises:
        PlanError: the label grid differs from the image's, or it holds a value that is not an integer of the json's
            ``labels`` (any non-negative integer when the json has no ``labels``).
    """
    assert header.label is not None
    array = _load_array(header.label)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    file_shape = tuple(header.shape[header.ras_axes.index(a)] for a in range(3))
    if array.shape != file_shape:
        raise PlanError(
            f"case {header.case!r}: label {header.label} has shape {array.shape}; expected the image's {file_shape}."
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.rint(array)):
            bad = np.unique(array[~np.isfinite(array) | (array != np.rint(array))])[:5]
            raise PlanError(
                f"case {header.case!r}: label {header.label} holds non-integer value(s) {bad.tolist()}; "
                f"expected {_describe(class_names)}."
            )
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iub":
        raise PlanError(f"case {header.case!r}: label {header.label} has dtype {array.dtype}; expected integers.")
    limit = len(class_names) if class_names is not None else None
    low, high = int(array.min()), int(array.max())
    if low < 0 or (limit is not None and high >= limit):
        values = np.unique(array)
        bad = [int(v) for v in values if v < 0 or (limit is not None and v >= limit)]
        raise PlanError(
            f"case {header.case!r}: label {header.label} holds value(s) {bad[:10]}; expected {_describe(class_names)}."
        )
    counts = np.bincount(array.ravel().astype(np.int64, copy=False), minlength=limit or 0)
    foreground = array > 0
    box = None
    if foreground.any():
        file_box = []
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            hits = np.flatnonzero(foreground.any(axis=others))
            file_box.append((int(hits[0]), int(hits[-1])))
        box = tuple(file_box[a] for a in header.ras_axes)
    return LabelSummary(header.case, counts, box)


def foreground_intensities(
    headers: Sequence[CaseHeader], max_voxels: int = 10_000_000, seed: int = 0
) -> list[np.ndarray]:
    """Pooled foreground (label > 0) intensities per channel of the given labelled cases, nnU-Net's CT fingerprint.

    Every foreground voxel is kept while a case has at most ``max_voxels / len(headers)`` of them; above that a
    uniform random sample of that many (without replacement, fixed ``seed``) stands for the case.

    Returns:
        one 1D float64 array per channel.
    """
    rng = np.random.default_rng(seed)
    per_case = max(1, max_voxels // max(len(headers), 1))
    pooled: list[list[np.ndarray]] = []
    for header in headers:
        assert header.label is not None
        mask = _load_array(header.label)
        mask = (mask[..., 0] if mask.ndim == 4 else mask) > 0
        where = np.flatnonzero(mask)
        if where.size > per_case:
            where = np.sort(rng.choice(where, per_case, replace=False))
        channels = []
        for path in header.images:
            data = _load_array(path, np.float32)
            data = data.reshape(data.shape[:3] + (-1,))
            channels += [data[..., c].ravel()[where] for c in range(data.shape[3])]
        if not pooled:
            pooled = [[] for _ in channels]
        for store, values in zip(pooled, channels):
            store.append(values.astype(np.float64))
    return [np.concatenate(store) if store else np.zeros(0) for store in pooled]
