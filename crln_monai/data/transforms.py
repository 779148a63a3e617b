"""MONAI dictionary-transform pipelines of the semi-supervised loader (docs/method.md#weak-view).

One preprocessing definition serves training, evaluation and inference (:func:`preprocessing_transforms`):

    load → channel first → finite check → [label checked / filled] → orientation → [resample] → normalise

Bundles call the factories with the settings gathered once in ``preprocessing_settings``, e.g.
``"$crln_monai.data.semi_supervised_train_transforms(@patch_size, @num_classes, rotate_flip=@weak_rotate_flip,
brightness=@weak_brightness, foreground_share=@foreground_share, **@preprocessing_settings)"``.

Normalisation (nnU-Net's rules, docs/planning.md#normalisation, with MONAI's transforms):

- ``"minmax"``: per volume and channel to [0, 1] (the LA/UA-MT default; a constant channel becomes 0);
- ``"zscore"``: per volume and channel, ``(x - mean) / std`` over the nonzero voxels only, zeros stay 0 —
  nnU-Net's MR / "other modality" scheme with its nonzero mask (``NormalizeIntensityd(nonzero=True)``;
  ``std == 0`` divides by 1 where nnU-Net divides by 1e-8);
- ``"ct"``: clip to ``intensity_range`` [lo, hi], then ``(x - mean) / std`` with the data set's
  ``intensity_stats`` [mean, std] (nnU-Net's CT scheme: foreground 0.5/99.5 percentiles and statistics);
- ``"none"``: as stored.

nnU-Net normalises before it resamples; we resample first so that every normalised volume has exactly the
scheme's range (min-max) or statistics; with linear interpolation the two orders differ only at mask edges.

Rot/flip: UA-MT's ``RandomRotFlip`` draws ``k ∈ {0,1,2,3}`` and an axis ``a ∈ {0,1}`` and returns
``flip_a(rot90^k(x))``. Because ``flip_1 = flip_0 ∘ rot90^2`` in the plane of the first two axes, that is
``flip_0(rot90^(k + 2a)(x))`` — the four reflections of the square's symmetry group, each with probability 1/4.
MONAI's ``RandRotate90(prob=1, max_k=3)`` draws ``k ∈ {1,2,3}`` only (``randint(max_k) + 1``), so we use
``max_k=4`` (``k=4`` is the identity rotation): ``k mod 4`` is uniform. We flip axis 0 *before* rotating
(``rot^k ∘ flip_0 = flip_0 ∘ rot^-k``: the same four reflections, uniformly) so the deterministic flip — and the
normalisation that commutes with any voxel permutation — sit in the part of the pipeline a ``CacheDataset`` caches.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    Flipd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    Randomizable,
    RandCropByLabelClassesd,
    RandRotate90d,
    RandScaleIntensityd,
    RandSpatialCropd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    SpatialPad,
    SpatialPadd,
    Spacingd,
)

from .geometry import ResampleOutsideTrainingd

__all__ = [
    "NORMALISATIONS",
    "CheckFinited",
    "EnsureLabeld",
    "LabelledCropd",
    "PadLabeld",
    "check_preprocessing",
    "evaluation_transforms",
    "preprocessing_transforms",
    "semi_supervised_train_transforms",
]

NORMALISATIONS = ("minmax", "zscore", "ct", "none")
_AXIS_LETTERS = ("LR", "PA", "IS")


def _source_name(data: Any, fallback: str) -> str:
    """The file a loaded tensor came from (``meta["filename_or_obj"]``), else ``fallback``."""
    meta = getattr(data, "meta", None) or {}
    name = meta.get("filename_or_obj")
    return str(name) if name else fallback


class CheckFinited(MapTransform):
    """Refuse an image holding NaN or Inf voxels, naming its file (``meta["filename_or_obj"]``).

    Placed right after loading in every pipeline, so a training ``CacheDataset`` refuses such a case while it
    caches it, and evaluation / inference refuse it before any prediction (a NaN would otherwise give an
    all-background segmentation with exit 0).

    Raises:
        ValueError: ``image <file>: N NaN and M Inf voxels of K; expected finite values.``
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            values = torch.as_tensor(d[key])
            if not values.is_floating_point() or bool(torch.isfinite(values).all()):
                continue
            nan, inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
            raise ValueError(
                f"{key} {_source_name(d[key], f'data[{key!r}]')}: {nan} NaN and {inf} Inf voxels of "
                f"{values.numel()}; expected finite values."
            )
        return d


class EnsureLabeld(MapTransform):
    """Give every case a checked label so labelled and unlabelled items collate into one batch.

    Run after ``LoadImaged`` + ``EnsureChannelFirstd``. A missing label (an unlabelled case without a label file)
    becomes a ``(1, H, W, D)`` tensor filled with ``ignore_value`` that shares the image's meta data; a present
    label must be ``(1, H, W, D)`` with the image's spatial shape and hold integers in ``[0, num_classes)``.
    ``data["has_label"]`` records whether a label was present.

    Args:
        keys: label key(s).
        image_key: key of the image ``(C, H, W, D)`` the label must match.
        num_classes: number of classes; label values must lie in ``[0, num_classes)``.
        ignore_value: fill value of a missing label.
        has_label_key: key of the ``bool`` flag written into the dict.
        allow_missing_keys: fill a missing label (``True``) or raise ``KeyError`` (``False``, for evaluation).

    Raises:
        KeyError: a label is missing and ``allow_missing_keys`` is ``False``, or the image is missing.
        TypeError: the label is not loaded yet (still a path).
        ValueError: the label's channel count or spatial shape is wrong, or it holds non-integer or
            out-of-range values; the message names the label file.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        image_key: str = "image",
        num_classes: int = 2,
        ignore_value: int = -1,
        has_label_key: str = "has_label",
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        if 0 <= ignore_value < num_classes:
            raise ValueError(f"ignore_value={ignore_value} is a valid class in [0, {num_classes}); pick one outside.")
        self.image_key = image_key
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.has_label_key = has_label_key

    def _check(self, label: torch.Tensor, image: torch.Tensor, key: Hashable) -> None:
        name = _source_name(label, f"data[{key!r}]")
        if label.ndim != image.ndim or label.shape[0] != 1:
            raise ValueError(
                f"label {name}: expected shape (1, *spatial) next to image shape {tuple(image.shape)}, "
                f"got {tuple(label.shape)}."
            )
        if label.shape[1:] != image.shape[1:]:
            raise ValueError(
                f"label {name}: spatial shape {tuple(label.shape[1:])} differs from the image's "
                f"{tuple(image.shape[1:])} ({_source_name(image, self.image_key)})."
            )
        values = torch.as_tensor(label)
        in_range = bool(((values >= 0) & (values < self.num_classes)).all())
        if not in_range or not torch.equal(values, values.round()):
            unique = torch.unique(values)
            bad = unique[~((unique >= 0) & (unique < self.num_classes) & (unique == unique.round()))]
            raise ValueError(
                f"label {name}: values {bad[:10].tolist()} are not class indices; declared classes are "
                f"0..{self.num_classes - 1} (num_classes={self.num_classes})."
            )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise KeyError(f"EnsureLabeld: image key {self.image_key!r} not in the data (keys {list(d)}).")
        image = d[self.image_key]
        has_label = True
        for key in self.keys:
            if key not in d or d[key] is None:
                if not self.allow_missing_keys:
                    raise KeyError(f"label key {key!r} missing for image {_source_name(image, self.image_key)}.")
                fill = torch.full((1, *image.shape[1:]), float(self.ignore_value), dtype=torch.float32)
                if isinstance(image, MetaTensor):
                    fill = MetaTensor(fill, meta={**image.meta, "affine": image.affine.clone()})
                d[key] = fill
                has_label = False
                continue
            if not isinstance(d[key], torch.Tensor):
                raise TypeError(f"label {key!r} is a {type(d[key]).__name__}, not a tensor; run LoadImaged first.")
            self._check(d[key], image, key)
        d[self.has_label_key] = has_label
        return d


class PadLabeld(MapTransform):
    """Symmetric constant padding of label maps up to ``spatial_size``: 0 (background) where the case is
    labelled, ``ignore_value`` where it is not, so an unlabelled volume stays "no label" everywhere.

    ``SpatialPadd`` pads every key with the same value; a padded unlabelled case would then hold real
    background voxels and count as labelled (e.g. in the pseudo-label Dice).

    Args:
        keys: label key(s), ``(1, H, W, D)`` each.
        spatial_size: minimum spatial size ``(H, W, D)``.
        ignore_value: padding value of unlabelled cases.
        has_label_key: the flag written by :class:`EnsureLabeld`; a missing flag counts as labelled.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        ignore_value: int = -1,
        has_label_key: str = "has_label",
    ) -> None:
        super().__init__(keys)
        self.has_label_key = has_label_key
        self.labelled = SpatialPad(spatial_size, method="symmetric", mode="constant", value=0)
        self.unlabelled = SpatialPad(spatial_size, method="symmetric", mode="constant", value=ignore_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        pad = self.labelled if d.get(self.has_label_key, True) else self.unlabelled
        for key in self.key_iterator(d):
            d[key] = pad(d[key])
        return d


class LabelledCropd(Randomizable, MapTransform):
    """Random patch: for labelled cases, with probability ``foreground_share`` centred on a foreground voxel
    (class drawn uniformly among the foreground classes present, MONAI's ``RandCropByLabelClassesd``),
    otherwise — and always for unlabelled cases or labels without foreground — a uniform ``RandSpatialCropd``.

    MONAI's ``OneOf(weights=...)`` draws per call but cannot see ``has_label``, hence this small switch. Both
    croppers share this transform's random state (``set_random_state`` passes it on), so a seeded pipeline
    gives the same patches. Only foreground indices are computed (``indices_key``), not the background's.

    Args:
        keys: keys to crop (image and label), each ``(C, H, W, D)`` with ``H, W, D`` ≥ the patch.
        patch_size: patch ``(H, W, D)``.
        num_classes: classes of the label map (background 0 included).
        foreground_share: probability in [0, 1] of a foreground-centred crop for a labelled case.
        label_key: the label ``(1, H, W, D)``.
        has_label_key: the flag written by :class:`EnsureLabeld`.
    """

    _INDICES = "_foreground_indices"

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: Sequence[int],
        num_classes: int,
        foreground_share: float,
        label_key: str = "label",
        has_label_key: str = "has_label",
    ) -> None:
        MapTransform.__init__(self, keys)
        self.foreground_share = float(foreground_share)
        self.num_classes = int(num_classes)
        self.label_key = label_key
        self.has_label_key = has_label_key
        self.uniform = RandSpatialCropd(keys, roi_size=patch_size, random_center=True, random_size=False)
        self.foreground = RandCropByLabelClassesd(
            keys, label_key=label_key, spatial_size=patch_size, ratios=[0] + [1] * (self.num_classes - 1),
            num_classes=self.num_classes, num_samples=1, indices_key=self._INDICES, warn=False,
        )  # fmt: skip
        self._draw = 1.0

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> LabelledCropd:
        super().set_random_state(seed, state)
        self.uniform.set_random_state(state=self.R)
        self.foreground.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self._draw = float(self.R.random_sample())

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not d.get(self.has_label_key, True) or self._draw >= self.foreground_share:
            return self.uniform(d)
        label = torch.as_tensor(d[self.label_key])[0].reshape(-1)
        indices = [np.zeros(0, dtype=np.int64)]
        indices += [torch.nonzero(label == c).reshape(-1).cpu().numpy() for c in range(1, self.num_classes)]
        if not any(len(i) for i in indices):  # a labelled case with no foreground: nothing to centre on
            return self.uniform(d)
        d[self._INDICES] = indices
        return self.foreground(d)[0]


def _numbers(value: Any, name: str, count: int) -> list[float]:
    """``value`` as ``count`` finite numbers, else a one-line ``ValueError`` naming ``name``."""
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers) or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a list of {count} finite numbers, got {value!r}.")
    return numbers


def check_preprocessing(
    orientation: str | None = "RAS",
    target_spacing: Sequence[float] | None = None,
    normalise: str | None = "minmax",
    intensity_range: Sequence[float] | None = None,
    intensity_stats: Sequence[float] | None = None,
    reader: Any = None,
) -> dict[str, Any]:
    """Check the preprocessing settings; return them cleaned (numbers as floats, ``normalise=None`` → ``"none"``).

    Raises:
        ValueError: one line naming the setting, its value and what is allowed.
    """
    if orientation is not None:
        codes = orientation.upper() if isinstance(orientation, str) else ""
        axes = sorted(i for c in codes for i, pair in enumerate(_AXIS_LETTERS) if c in pair)
        if len(codes) != 3 or axes != [0, 1, 2]:
            raise ValueError(
                f"orientation must be null (keep the voxel order) or 3 axis codes, one of L/R, P/A, I/S each "
                f"(e.g. 'RAS'), got {orientation!r}."
            )
        orientation = codes
    if target_spacing is not None:
        target_spacing = _numbers(target_spacing, "target_spacing", 3)
        if min(target_spacing) <= 0:
            raise ValueError(f"target_spacing must be 3 positive spacings in mm, got {target_spacing!r}.")
    normalise = "none" if normalise is None else normalise
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {list(NORMALISATIONS)}, got {normalise!r}.")
    if normalise == "ct":
        if intensity_range is None or intensity_stats is None:
            raise ValueError(
                f"normalise='ct' needs intensity_range [lo, hi] and intensity_stats [mean, std], got "
                f"intensity_range={intensity_range!r}, intensity_stats={intensity_stats!r}."
            )
        intensity_range = _numbers(intensity_range, "intensity_range", 2)
        intensity_stats = _numbers(intensity_stats, "intensity_stats", 2)
        if intensity_range[0] >= intensity_range[1]:
            raise ValueError(f"intensity_range must be [lo, hi] with lo < hi, got {intensity_range!r}.")
        if intensity_stats[1] <= 0:
            raise ValueError(f"intensity_stats must be [mean, std] with std > 0, got {intensity_stats!r}.")
    else:
        for name, value in (("intensity_range", intensity_range), ("intensity_stats", intensity_stats)):
            if value is not None:
                raise ValueError(f"{name} is only used by normalise='ct' and must be null with "
                                 f"normalise={normalise!r}, got {value!r}.")  # fmt: skip
    return {
        "orientation": orientation, "target_spacing": target_spacing, "normalise": normalise,
        "intensity_range": intensity_range, "intensity_stats": intensity_stats, "reader": reader,
    }  # fmt: skip


def _normalise(normalise: str, intensity_range: list[float] | None, intensity_stats: list[float] | None) -> list:
    if normalise == "minmax":  # per-volume (per channel) min–max to [0, 1]; a constant channel becomes 0
        return [ScaleIntensityd("image", minv=0.0, maxv=1.0, channel_wise=True)]
    if normalise == "zscore":  # nnU-Net's per-image z-score inside the nonzero mask, per channel
        return [NormalizeIntensityd("image", nonzero=True, channel_wise=True)]
    if normalise == "ct":  # clip to the data set's range, then its mean / std (all channels alike)
        (lo, hi), (mean, std) = intensity_range, intensity_stats
        return [
            ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True),  # clip only
            NormalizeIntensityd("image", subtrahend=mean, divisor=std),
        ]
    return []


def preprocessing_transforms(
    keys: Sequence[str] = ("image", "label"),
    num_classes: int = 2,
    label: str | None = "strict",
    orientation: str | None = "RAS",
    target_spacing: Sequence[float] | None = None,
    normalise: str | None = "minmax",
    intensity_range: Sequence[float] | None = None,
    intensity_stats: Sequence[float] | None = None,
    reader: Any = None,
    ignore_value: int = -1,
    trained_geometry: Mapping[str, Any] | None = None,
) -> list:
    """The preprocessing shared by training, evaluation and inference (a list of MONAI transforms).

    load → channel first → :class:`CheckFinited` (image) → :class:`EnsureLabeld` → ``Orientationd`` (unless
    ``orientation`` is null) → ``Spacingd`` to ``target_spacing`` (bilinear image, nearest label; unless null;
    with a ``trained_geometry`` and no ``target_spacing``, :class:`~crln_monai.data.geometry.ResampleOutsideTrainingd`
    instead: only cases outside the trained spacing are resampled) → normalisation of the image. All the spatial
    steps are invertible: ``Invertd`` maps predictions back to the input's grid.

    Args:
        keys: ``("image",)`` or ``("image", "label")``.
        num_classes: classes of the label maps.
        label: ``"strict"`` (a missing label raises), ``"optional"`` (a missing label is filled with
            ``ignore_value``); ignored without a ``"label"`` key.
        orientation, target_spacing, normalise, intensity_range, intensity_stats, reader: see
            :func:`check_preprocessing`; ``reader`` is ``LoadImaged``'s (``None`` picks by file ending).
        ignore_value: fill value of a missing label.
        trained_geometry: :func:`~crln_monai.data.geometry.trained_geometry` of the training cases (evaluation and
            inference); ``None`` resamples nothing beyond ``target_spacing``.
    """
    settings = check_preprocessing(orientation, target_spacing, normalise, intensity_range, intensity_stats, reader)
    keys = list(keys)
    with_label = "label" in keys
    steps: list = [
        LoadImaged(keys, reader=reader, image_only=True, allow_missing_keys=with_label),
        EnsureChannelFirstd(keys, allow_missing_keys=with_label),
        CheckFinited("image"),
    ]
    if with_label:
        strict = label == "strict"
        steps.append(
            EnsureLabeld("label", num_classes=num_classes, ignore_value=ignore_value, allow_missing_keys=not strict)
        )
    if settings["orientation"] is not None:
        # labels=None: axis codes in the tensor's own space (RAS for NIfTI, LPS-aware), MONAI's coming default
        steps.append(Orientationd(keys, axcodes=settings["orientation"], labels=None))
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    if settings["target_spacing"] is not None:
        steps.append(Spacingd(keys, pixdim=settings["target_spacing"], mode=modes, dtype=torch.float32))
    elif trained_geometry is not None:
        steps.append(ResampleOutsideTrainingd(keys, trained_geometry, modes))
    steps += _normalise(settings["normalise"], settings["intensity_range"], settings["intensity_stats"])
    return steps


def _patch(patch_size: Sequence[int]) -> list[int]:
    try:
        patch = [int(p) for p in patch_size]
    except (TypeError, ValueError):
        patch = []
    if len(patch) != 3 or min(patch) < 1 or any(p != q for p, q in zip(patch, patch_size)):
        raise ValueError(f"patch_size must be 3 positive ints (H, W, D), got {patch_size!r}.")
    return patch


def semi_supervised_train_transforms(
    patch_size: Sequence[int],
    num_classes: int = 2,
    rotate_flip: bool = True,
    brightness: bool = True,
    foreground_share: float = 0.0,
    *,
    orientation: str | None = "RAS",
    target_spacing: Sequence[float] | None = None,
    normalise: str | None = "minmax",
    intensity_range: Sequence[float] | None = None,
    intensity_stats: Sequence[float] | None = None,
    reader: Any = None,
    ignore_value: int = -1,
) -> Compose:
    """Weak training pipeline, the same for labelled and unlabelled cases (docs/method.md#weak-view).

    :func:`preprocessing_transforms` (a missing label filled with ``ignore_value``) → [flip axis 0 → rot90^k,
    k uniform in {0..3}, in the first two axes] → [intensity × U(0.75, 1.25)] → symmetric pad up to the patch
    (image 0; label 0 if labelled, ``ignore_value`` if not) → crop to the patch (uniform, or a share of the
    labelled crops centred on foreground, :class:`LabelledCropd`) → label to ``long`` → plain tensors.
    LA/BraTS: defaults; Pancreas: ``rotate_flip=False, brightness=False``.

    Output per item: ``image`` ``(C, *patch_size)`` float32, ``label`` ``(1, *patch_size)`` int64 (``ignore_value``
    where the case has no label file), ``has_label`` bool, ``case`` str.

    Args:
        patch_size: crop size ``(H, W, D)``.
        num_classes: classes of the label maps (checked by :class:`EnsureLabeld`).
        rotate_flip: random rot90 + flip in the first two axes (UA-MT's ``RandomRotFlip`` distribution).
        brightness: multiply by U(0.75, 1.25); with ``normalise="minmax"`` the result is clipped to [0, 1]
            (UA-MT), with ``"zscore"``, ``"ct"`` or ``"none"`` it is not (their range is not [0, 1]; on
            zero-centred intensities the factor scales contrast rather than brightness).
        foreground_share: share in [0, 1] of labelled crops centred on a foreground voxel, the class drawn
            uniformly among the foreground classes present; 0 gives exactly the uniform crops of before.
        orientation, target_spacing, normalise, intensity_range, intensity_stats, reader: the preprocessing
            settings (:func:`check_preprocessing`).
        ignore_value: label value of cases without a label file.

    Returns:
        a ``monai.transforms.Compose``; a ``CacheDataset`` caches it up to the flip (NaN/Inf refused then).

    Raises:
        ValueError: a bad ``patch_size``, ``foreground_share`` or preprocessing setting (one line naming it).
    """
    patch = _patch(patch_size)
    share = foreground_share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ValueError(f"foreground_share must be a number in [0, 1], got {foreground_share!r}.")
    keys = ["image", "label"]
    steps = preprocessing_transforms(
        keys, num_classes, "optional", orientation, target_spacing, normalise, intensity_range, intensity_stats,
        reader, ignore_value,
    )  # fmt: skip
    if rotate_flip:
        steps += [Flipd(keys, spatial_axis=0), RandRotate90d(keys, prob=1.0, max_k=4, spatial_axes=(0, 1))]
    if brightness:
        steps.append(RandScaleIntensityd("image", factors=0.25, prob=1.0))  # × (1 + U(-0.25, 0.25))
        if normalise == "minmax":
            steps.append(ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    steps += [
        SpatialPadd("image", spatial_size=patch, method="symmetric", mode="constant"),
        PadLabeld("label", spatial_size=patch, ignore_value=ignore_value),
    ]
    if share > 0:
        steps.append(LabelledCropd(keys, patch, num_classes, share))
    else:  # the uniform crop as a plain MONAI transform: the same random stream as before foreground_share
        steps.append(RandSpatialCropd(keys, roi_size=patch, random_center=True, random_size=False))
    steps += [CastToTyped("label", dtype=torch.long), EnsureTyped(keys, track_meta=False)]
    return Compose(steps)


def evaluation_transforms(
    with_label: bool = True,
    num_classes: int = 2,
    *,
    orientation: str | None = "RAS",
    target_spacing: Sequence[float] | None = None,
    normalise: str | None = "minmax",
    intensity_range: Sequence[float] | None = None,
    intensity_stats: Sequence[float] | None = None,
    reader: Any = None,
    trained_geometry: Mapping[str, Any] | None = None,
) -> Compose:
    """Validation / test / inference pipeline: whole volumes, meta data kept.

    :func:`preprocessing_transforms` (a missing label raises) → label to ``long`` → ``EnsureTyped`` with
    ``track_meta=True``, so predictions can be inverted (``Invertd`` with this ``Compose`` undoes orientation
    and resampling) and saved with the input's affine.

    Output per item: ``image`` ``(C, H, W, D)`` float32 MetaTensor; with ``with_label``, ``label``
    ``(1, H, W, D)`` int64 MetaTensor and ``has_label``.

    Args:
        with_label: load and check the label (validation/evaluation) or not (inference).
        num_classes: classes of the label maps.
        orientation, target_spacing, normalise, intensity_range, intensity_stats, reader: the preprocessing
            settings (:func:`check_preprocessing`), the same as training's.
        trained_geometry: the training cases' geometry (:func:`~crln_monai.data.geometry.trained_geometry`): inputs
            outside its spacing range are resampled to it and back.

    Returns:
        a ``monai.transforms.Compose``.
    """
    keys = ["image", "label"] if with_label else ["image"]
    steps = preprocessing_transforms(
        keys, num_classes, "strict", orientation, target_spacing, normalise, intensity_range, intensity_stats, reader,
        trained_geometry=trained_geometry,
    )  # fmt: skip
    if with_label:
        steps.append(CastToTyped("label", dtype=torch.long))
    steps.append(EnsureTyped(keys, track_meta=True))
    return Compose(steps)
