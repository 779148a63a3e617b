"""What a data set holds: the labelled cases' label values and foreground (its json and every case's header are read
by :mod:`crln_monai.data.dataset`, the one reader of a data set: :func:`read_case_header` is re-exported here).

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from crln_monai.data.dataset import CaseHeader, is_nifti, read_case_header

__all__ = [
    "CaseHeader",
    "LabelSummary",
    "PlanError",
    "foreground_intensities",
    "read_case_header",
    "read_label",
]


class PlanError(ValueError):
    """The data set cannot be planned; the message is one line naming the case or key and what was expected."""


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


def _load_array(path: str, dtype: Any = None) -> np.ndarray:
    if is_nifti(path):
        image = nib.load(path)
        return image.get_fdata(dtype=dtype) if dtype is not None else np.asanyarray(image.dataobj)
    from monai.transforms import LoadImage

    data = np.asarray(LoadImage(image_only=True)(path))
    return data.astype(dtype) if dtype is not None else data


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
