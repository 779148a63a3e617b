"""Turning the network's class probabilities into label maps, and writing them in each input's geometry.

Inference and evaluation share this one definition, so a case segmented by ``evaluate.json`` and by an exported
bundle's ``inference.json`` is written identically: the probabilities are mapped back through the inverse of the
preprocessing (orientation, spacing; MONAI's ``Invertd``), then ``argmax``-ed and saved (:class:`SaveLabelMapd`) as
an unsigned-integer NIfTI with the input's affine and spatial shape.

Why not MONAI's ``SaveImaged`` alone: it squeezes every trailing singleton axis (a 32×32×1 input came back as a 2-D
32×32 map, a 1×1×1 input failed after the work), names the file after the first input file only (``a.nii`` and
``a.nii.gz`` both became ``a_seg.nii.gz``; an nnU-Net case ``x_0000``, ``x_0001`` became ``x_0000_seg``), writes in
place, and its writer, even with ``resample=False``, runs a resampler that fails on axis permutations such as a
``(z, x, y)`` file order (those inputs failed after the work). :class:`SaveLabelMapd` keeps MONAI's NIfTI writer
(qform = sform = the meta data's affine, as it is) but drops only the channel axis, names the file after the item's
case id (:func:`crln_monai.data.segmentation_path`), marks it as ours (header ``descrip``
:data:`crln_monai.data.SEGMENTATION_DESCRIPTION`, NIfTI intent ``label``) and writes it to a temporary file moved
into place, so a killed run leaves no half-written label map.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import NibabelWriter
from monai.transforms import AsDiscreted, Compose, CopyItemsd, Invertd, MapTransform

from ..data.datalist import case_id_from_filename
from ..data.inputs import SEGMENTATION_DESCRIPTION, segmentation_path
from ..io import atomic_path

__all__ = ["INPUT_SPACE_KEY", "SaveLabelMapd", "segmentation_postprocessing", "write_label_map"]

INPUT_SPACE_KEY = "pred_input_space"
"""Key of the saved (input-geometry) segmentation when evaluation keeps ``pred`` in the model's space."""


class _LabelMapWriter(NibabelWriter):
    """MONAI's NIfTI writer for one-channel label maps: only the channel axis is dropped (singleton spatial axes stay),
    and the header says what the file is."""

    def set_data_array(
        self, data_array: Any, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs: Any
    ) -> None:
        super().set_data_array(data_array, channel_dim=channel_dim, squeeze_end_dims=False, **kwargs)
        if self.data_obj.shape[-1] != 1:
            raise ValueError(f"a label map has one channel, got shape {tuple(self.data_obj.shape)} (channel last).")
        self.data_obj = self.data_obj[..., 0]

    @classmethod
    def create_backend_obj(cls, data_array: Any, affine: Any = None, dtype: Any = None, **kwargs: Any):
        image = super().create_backend_obj(data_array, affine=affine, dtype=dtype, **kwargs)
        image.header["descrip"] = SEGMENTATION_DESCRIPTION.encode()
        image.header.set_intent("label")
        return image


def _label_dtype(values: np.ndarray) -> type:
    """uint8 while the classes fit (every bundle today), else the smallest unsigned type that holds them."""
    top = int(values.max()) if values.size else 0
    return np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32


def write_label_map(label_map: Any, path: str | os.PathLike, meta: Mapping | None = None) -> Path:
    """Write a ``(1, *spatial)`` label map (a MetaTensor in the input's geometry, or an array with ``meta``) to
    ``path`` as NIfTI: the spatial shape as it is, the meta data's affine, marked as ours; atomically.

    Returns:
        ``path``.
    """
    path = Path(path)
    meta = dict(getattr(label_map, "meta", {}) or {}) if meta is None else dict(meta)
    values = np.asarray(label_map.detach().cpu() if hasattr(label_map, "detach") else label_map)
    if values.size and values.min() < 0:
        raise ValueError(f"label map for {path} holds negative values ({values.min()}); expected class indices.")
    writer = _LabelMapWriter(output_dtype=_label_dtype(values))
    writer.set_data_array(values, channel_dim=0)
    # the meta data's affine as it is: MONAI's set_metadata(resample=False) still runs a resampler, which fails on
    # axis permutations such as a (z, x, y) file order ("Affine ... is not invertible")
    affine = meta.get("affine")
    writer.affine = None if affine is None else np.asarray(affine.cpu() if hasattr(affine, "cpu") else affine, float)
    with atomic_path(path, suffix=".nii.gz") as temporary:  # the writer takes the format from the ending
        writer.write(temporary)
    return path


class SaveLabelMapd(MapTransform):
    """Save each ``keys`` entry (a ``(1, *spatial)`` label map in the input's geometry) as
    ``<output_dir>/<case>_seg.nii.gz``, ``<case>`` being the item's ``case_key`` (datalists and
    :func:`crln_monai.data.inference_inputs` give every item one), else the input file's name without its ending.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        output_dir: str | os.PathLike,
        case_key: str = "case",
        image_key: str = "image",
        print_log: bool = False,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.case_key, self.image_key, self.print_log = case_key, image_key, print_log

    def _case(self, data: Mapping, key: Hashable) -> str:
        case = data.get(self.case_key)
        if isinstance(case, str) and case:
            return case
        source = getattr(data[key], "meta", {}).get("filename_or_obj")
        if not source:
            raise ValueError(f"cannot name the label map of {key!r}: no {self.case_key!r} in the item, no file name.")
        return case_id_from_filename(source[0] if isinstance(source, (list, tuple)) else source)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = write_label_map(d[key], segmentation_path(self.output_dir, self._case(d, key)))
            if self.print_log:  # as MONAI's SaveImage(print_log=True): one line per file, whatever the logging set-up
                print(f"wrote {path}", flush=True)
        return d


def segmentation_postprocessing(
    preprocessing: Any,
    output_dir: str | os.PathLike | None = None,
    keep_model_space: bool = False,
    print_log: bool = False,
) -> Compose:
    """Post-processing of a ``SupervisedEvaluator`` whose output ``pred`` is ``(C, *spatial)`` probabilities.

    Args:
        preprocessing: the ``Compose`` that made ``image`` (its inverse maps ``pred`` back to the input's geometry).
        output_dir: folder of the ``<case>_seg.nii.gz`` files; ``None`` writes nothing.
        keep_model_space: also keep ``pred`` as a label map ``(1, *spatial)`` in the model's space (evaluation
            scores it against the preprocessed label); the saved map is then a copy under :data:`INPUT_SPACE_KEY`.
        print_log: print each file written.

    Returns:
        a ``Compose``: [copy] → ``Invertd`` → ``argmax`` → :class:`SaveLabelMapd` (the saving steps only with
        ``output_dir``).
    """
    saved = INPUT_SPACE_KEY if keep_model_space else "pred"
    steps: list = []
    if output_dir is not None and keep_model_space:
        steps.append(CopyItemsd(keys="pred", names=saved))
    if output_dir is not None:
        steps.append(Invertd(keys=saved, transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True))
    steps.append(AsDiscreted(keys=sorted({"pred", saved}) if output_dir is not None else "pred", argmax=True))
    if output_dir is not None:
        steps.append(SaveLabelMapd(keys=saved, output_dir=output_dir, print_log=print_log))
    return Compose(steps)
