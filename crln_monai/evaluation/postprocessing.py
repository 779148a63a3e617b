"""Turning the network's class probabilities into label maps, and writing them in each input's geometry.

Inference and evaluation share this one definition, so a case segmented by ``evaluate.json`` and by an exported
bundle's ``inference.json`` is written identically: the probabilities are mapped back through the inverse of the
preprocessing (orientation, spacing; MONAI's ``Invertd``), then ``argmax``-ed and saved as uint8 NIfTI with the
input's affine and shape.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from monai.transforms import AsDiscreted, Compose, CopyItemsd, Invertd, SaveImaged

__all__ = ["INPUT_SPACE_KEY", "segmentation_postprocessing"]

INPUT_SPACE_KEY = "pred_input_space"
"""Key of the saved (input-geometry) segmentation when evaluation keeps ``pred`` in the model's space."""


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
        print_log: let ``SaveImaged`` log each file.

    Returns:
        a ``Compose``: [copy] → ``Invertd`` → ``argmax`` → ``SaveImaged`` (the saving steps only with ``output_dir``).
    """
    saved = INPUT_SPACE_KEY if keep_model_space else "pred"
    steps: list = []
    if output_dir is not None and keep_model_space:
        steps.append(CopyItemsd(keys="pred", names=saved))
    if output_dir is not None:
        steps.append(Invertd(keys=saved, transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True))
    steps.append(AsDiscreted(keys=sorted({"pred", saved}) if output_dir is not None else "pred", argmax=True))
    if output_dir is not None:
        steps.append(
            SaveImaged(
                keys=saved, output_dir=str(output_dir), output_postfix="seg", output_dtype=np.uint8,
                separate_folder=False, resample=False, print_log=print_log,
            )  # fmt: skip
        )
    return Compose(steps)
