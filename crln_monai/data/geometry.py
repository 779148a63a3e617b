"""The geometry a network was trained at, and the resampling of inputs that lie outside it.

A plan that keeps the native spacing (``target_spacing: null``, e.g. thick slices of varying thickness) trains on the
cases' own grids, so nothing in the preprocessing says what spacing the network learnt. :func:`trained_geometry`
records it from the training cases' headers (orientation codes, median spacing and the range seen, per axis in the
network's order); training stores it in its checkpoints and in the exported bundle, and evaluation and inference
put :class:`ResampleOutsideTrainingd` after the orientation step: an input whose spacing lies outside the trained
range on any axis is resampled to the trained spacing, and its prediction inverted back onto the input's grid.
MONAI's ``Spacingd`` always resamples; this transform decides per case, logs what it does, and stays invertible.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import InvertibleTransform, MapTransform, Spacing
from monai.utils import TraceKeys

__all__ = ["GEOMETRY_TOLERANCE", "ResampleOutsideTrainingd", "case_spacing", "trained_geometry"]

logger = logging.getLogger(__name__)

#: An input within this relative distance of the trained spacing range is not resampled.
GEOMETRY_TOLERANCE = 0.05
_NIFTI = (".nii", ".nii.gz")


def _first_path(value: Any) -> str:
    return str(value[0] if isinstance(value, (list, tuple)) else value)


def case_spacing(path: str, orientation: str | None) -> list[float]:
    """Voxel spacing (mm) of one image file, per axis in the order ``orientation`` puts them (file order for None).

    NIfTI headers are read alone; other formats through MONAI's reader.
    """
    if path.endswith(_NIFTI):
        affine = np.asarray(nib.load(path).affine, dtype=float)
    else:
        from monai.transforms import LoadImage

        affine = np.asarray(LoadImage(image_only=True)(path).affine, dtype=float)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if orientation is None:
        return [float(s) for s in spacing]
    target = nib.orientations.axcodes2ornt(tuple(orientation.upper()))
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), target)
    ordered = [0.0] * 3
    for file_axis, (new_axis, _) in enumerate(ornt[:3]):
        ordered[int(new_axis)] = float(spacing[file_axis])
    return ordered


def trained_geometry(items: Sequence[Mapping[str, Any] | str], orientation: str | None) -> dict[str, Any] | None:
    """What the training cases look like in the network's space: ``orientation``, median ``spacing`` and the
    ``spacing_low`` / ``spacing_high`` seen, per axis (mm, rounded to 1e-4); ``None`` for no cases.

    Args:
        items: datalist items (``{"image": path | [paths], ...}``) or image paths.
        orientation: the preprocessing's ``orientation`` codes (``None`` keeps the file's axis order).
    """
    paths = [_first_path(item["image"] if isinstance(item, Mapping) else item) for item in items]
    if not paths:
        return None
    spacings = np.array([case_spacing(p, orientation) for p in paths])
    rounded = lambda values: [round(float(v), 4) for v in values]  # noqa: E731
    return {
        "orientation": orientation,
        "spacing": rounded(np.median(spacings, axis=0)),
        "spacing_low": rounded(spacings.min(axis=0)),
        "spacing_high": rounded(spacings.max(axis=0)),
    }


class ResampleOutsideTrainingd(MapTransform, InvertibleTransform):
    """Resample a case to the trained spacing when its own lies outside the trained range (after orientation).

    Per case and axis: an axis whose spacing lies within ``[low · (1 − tolerance), high · (1 + tolerance)]`` of the
    ``geometry`` (:func:`trained_geometry`) keeps its voxels; the other axes are resampled to the trained median
    spacing (image bilinear, label nearest), and an INFO line names the file, both spacings and the range. The
    inverse undoes it, so ``Invertd`` writes predictions on the input's grid either way.

    Args:
        keys: image (and label) keys, channel first, oriented as in training.
        geometry: :func:`trained_geometry`'s record; ``None`` makes the transform a no-op.
        modes: interpolation per key (``"bilinear"`` for images, ``"nearest"`` for labels).
        tolerance: relative slack around the trained range.
    """

    def __init__(
        self,
        keys: KeysCollection,
        geometry: Mapping[str, Any] | None,
        modes: Sequence[str] = ("bilinear", "nearest"),
        tolerance: float = GEOMETRY_TOLERANCE,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.geometry = None if geometry is None else dict(geometry)
        self.modes = dict(zip(self.keys, modes))
        self.tolerance = float(tolerance)
        # one resampler per set of axes to resample (a non-positive pixdim keeps that axis): the inverse must be
        # called on the instance that resampled
        self.resamplers: dict[tuple[int, ...], Spacing] = {}
        if geometry is not None:
            for mask in range(1, 8):
                axes = tuple(a for a in range(3) if mask >> a & 1)
                pixdim = [s if a in axes else -1.0 for a, s in enumerate(geometry["spacing"])]
                self.resamplers[axes] = Spacing(pixdim=pixdim, dtype=torch.float32)

    def outside(self, spacing: Sequence[float]) -> tuple[int, ...]:
        """The axes whose ``spacing`` lies outside the trained range (with the tolerance)."""
        if self.geometry is None:
            return ()
        low, high = self.geometry["spacing_low"], self.geometry["spacing_high"]
        return tuple(
            a
            for a, (s, lo, hi) in enumerate(zip(spacing, low, high))
            if s < lo * (1 - self.tolerance) or s > hi * (1 + self.tolerance)
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            spacing = [float(s) for s in d[key].pixdim[:3]] if hasattr(d[key], "pixdim") else None
            axes = () if spacing is None else self.outside(spacing)
            if axes:
                meta = getattr(d[key], "meta", {}) or {}
                if key == self.keys[0]:
                    target = [self.geometry["spacing"][a] if a in axes else round(s, 4) for a, s in enumerate(spacing)]
                    logger.info(
                        f"resampling {meta.get('filename_or_obj', key)} from spacing {[round(s, 4) for s in spacing]} "
                        f"mm to {target} mm: the network was trained at {self.geometry['spacing_low']}–"
                        f"{self.geometry['spacing_high']} mm; the prediction is resampled back onto the input's grid"
                    )
                d[key] = self.resamplers[axes](d[key], mode=self.modes.get(key, "bilinear"))
            self.push_transform(d, key, extra_info={"axes": list(axes)})
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            axes = tuple(self.get_most_recent_transform(d, key)[TraceKeys.EXTRA_INFO]["axes"])
            self.pop_transform(d, key)  # ours is the most recent; the Spacing's own trace lies under it
            if axes:
                d[key] = self.resamplers[axes].inverse(d[key])
        return d
