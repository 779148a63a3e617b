"""MONAI dictionary-transform pipelines of the semi-supervised loader (METHOD.md §1.6, weak view).

Bundles name these factories by ``_target_``, e.g.
``{"_target_": "crln_monai.data.transforms.semi_supervised_train_transforms", "patch_size": [112, 112, 80]}``.

Rot/flip: UA-MT's ``RandomRotFlip`` draws ``k ∈ {0,1,2,3}`` and an axis ``a ∈ {0,1}`` and returns
``flip_a(rot90^k(x))``. Because ``flip_1 = flip_0 ∘ rot90^2`` in the plane of the first two axes, that is
``flip_0(rot90^(k + 2a)(x))`` — the four reflections of the square's symmetry group, each with probability 1/4.
MONAI's ``RandRotate90(prob=1, max_k=3)`` draws ``k ∈ {1,2,3}`` only (``randint(max_k) + 1``), so we use
``max_k=4`` (``k=4`` is the identity rotation): ``k mod 4`` is uniform. We flip axis 0 *before* rotating
(``rot^k ∘ flip_0 = flip_0 ∘ rot^-k``: the same four reflections, uniformly) so the deterministic flip — and the
min–max that commutes with any voxel permutation — sit in the part of the pipeline a ``CacheDataset`` caches.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

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
    RandRotate90d,
    RandScaleIntensityd,
    RandSpatialCropd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    SpatialPadd,
)

__all__ = ["EnsureLabeld", "evaluation_transforms", "semi_supervised_train_transforms"]

_NORMALISATIONS = ("minmax", "none")


def _source_name(data: Any, fallback: str) -> str:
    """The file a loaded tensor came from (``meta["filename_or_obj"]``), else ``fallback``."""
    meta = getattr(data, "meta", None) or {}
    name = meta.get("filename_or_obj")
    return str(name) if name else fallback


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
        if not isinstance(num_classes, int) or num_classes < 2:
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
            bad = unique[(unique < 0) | (unique >= self.num_classes) | (unique != unique.round())]
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


def _load(keys: list[str], reader: Any) -> list:
    """Load (a list of channel files is stacked as channels by the reader) and move channels first."""
    return [
        LoadImaged(keys, reader=reader, image_only=True, allow_missing_keys=True),
        EnsureChannelFirstd(keys, allow_missing_keys=True),
    ]


def _normalise(normalise: str | None) -> list:
    if normalise in (None, "none"):
        return []
    if normalise == "minmax":
        # per-volume (per channel) min–max to [0, 1]; a constant channel becomes 0
        return [ScaleIntensityd("image", minv=0.0, maxv=1.0, channel_wise=True)]
    raise ValueError(f"normalise must be one of {_NORMALISATIONS}, got {normalise!r}.")


def semi_supervised_train_transforms(
    patch_size: Sequence[int],
    num_classes: int = 2,
    rotate_flip: bool = True,
    brightness: bool = True,
    normalise: str | None = "minmax",
    reader: Any = None,
    ignore_value: int = -1,
) -> Compose:
    """Weak training pipeline, the same for labelled and unlabelled cases (METHOD.md §1.6).

    load → channel first → :class:`EnsureLabeld` → min–max to [0, 1] → [flip axis 0 → rot90^k, k uniform in
    {0..3}, in the first two axes] → [intensity × U(0.75, 1.25), clipped to [0, 1]] → symmetric zero pad up to the
    patch → random crop to the patch → label to ``long`` → plain tensors. LA/BraTS: defaults; Pancreas:
    ``rotate_flip=False, brightness=False``.

    Output per item: ``image`` ``(C, *patch_size)`` float32, ``label`` ``(1, *patch_size)`` int64 (``ignore_value``
    where the case has no label file), ``has_label`` bool, ``case`` str.

    Args:
        patch_size: crop size ``(H, W, D)``.
        num_classes: classes of the label maps (checked by :class:`EnsureLabeld`).
        rotate_flip: random rot90 + flip in the first two axes (UA-MT's ``RandomRotFlip`` distribution).
        brightness: multiply by U(0.75, 1.25) and clip to [0, 1].
        normalise: ``"minmax"`` (per channel, to [0, 1]) or ``"none"``.
        reader: ``LoadImaged`` reader (name, class or dotted path); ``None`` picks by file ending.
        ignore_value: label value of cases without a label file.

    Returns:
        a ``monai.transforms.Compose``.

    Raises:
        ValueError: a ``patch_size`` that is not 3 positive ints, or an unknown ``normalise``.
    """
    patch = [int(p) for p in patch_size]
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_size must be 3 positive ints (H, W, D), got {patch_size!r}.")
    keys = ["image", "label"]
    steps = _load(keys, reader)
    steps.append(EnsureLabeld("label", num_classes=num_classes, ignore_value=ignore_value))
    steps += _normalise(normalise)
    if rotate_flip:
        steps += [Flipd(keys, spatial_axis=0), RandRotate90d(keys, prob=1.0, max_k=4, spatial_axes=(0, 1))]
    if brightness:
        steps += [
            RandScaleIntensityd("image", factors=0.25, prob=1.0),  # × (1 + U(-0.25, 0.25))
            ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),  # clip only
        ]
    steps += [
        SpatialPadd(keys, spatial_size=patch, method="symmetric", mode="constant"),
        RandSpatialCropd(keys, roi_size=patch, random_center=True, random_size=False),
        CastToTyped("label", dtype=torch.long),
        EnsureTyped(keys, track_meta=False),
    ]
    return Compose(steps)


def evaluation_transforms(
    with_label: bool = True,
    num_classes: int = 2,
    normalise: str | None = "minmax",
    reader: Any = None,
) -> Compose:
    """Validation / test / inference pipeline: whole volumes, meta data kept.

    load → channel first → :class:`EnsureLabeld` (strict: a missing label raises) → min–max → ``EnsureTyped``
    with ``track_meta=True``, so predictions can be inverted and saved with the input's affine.

    Output per item: ``image`` ``(C, H, W, D)`` float32 MetaTensor; with ``with_label``, ``label``
    ``(1, H, W, D)`` int64 MetaTensor and ``has_label``.

    Args:
        with_label: load and check the label (validation/evaluation) or not (inference).
        num_classes: classes of the label maps.
        normalise: ``"minmax"`` or ``"none"``.
        reader: ``LoadImaged`` reader.

    Returns:
        a ``monai.transforms.Compose``.
    """
    keys = ["image", "label"] if with_label else ["image"]
    steps = _load(keys, reader)
    if with_label:
        steps += [EnsureLabeld("label", num_classes=num_classes, allow_missing_keys=False)]
    steps += _normalise(normalise)
    if with_label:
        steps.append(CastToTyped("label", dtype=torch.long))
    steps.append(EnsureTyped(keys, track_meta=True))
    return Compose(steps)
