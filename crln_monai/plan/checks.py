"""What training would refuse (or run out of memory on), refused by the plan first: one line each, exit status 2.

The plan is the first command a user runs on their folder; a data set or a plan that training refuses a minute later
(or trains on without complaint while it is wrong) should stop here instead. Three hooks, called by
:func:`crln_monai.plan.plan_dataset` and the command line:

* :func:`check_output_file` — ``--output`` is a file that can be written (not a folder, not below a file), before
  any work;
* :func:`check_plan_inputs` — every case's files as training, evaluation and inference check them
  (:func:`crln_monai.data.check_cases`, the one definition of those checks): readable and complete (a truncated or
  fake ``.gz`` is named), 3-D or 4-D, a finite non-degenerate affine, labels on their image's voxel grid (shape and
  affine), and NaN/Inf voxels in **every** image, the unlabelled and test cases included;
* :func:`check_plan` — the finished plan: the labelled cases hold some foreground, CT statistics that are not
  degenerate (constant images), memory for the declared classes, and every value through the bundles' own config
  check (:func:`crln_monai.workflow.check_config`), so a plan training would refuse is never written.

Class memory (:func:`class_memory_gib`): the patch rule's memory model is calibrated on 2 classes. Each further class
adds, per training sample, class maps over the patch (logits, probabilities, rectified and mixed copies, their
gradients) and CPS's queries × negatives samples. Measured on the development CPU (peak RSS of two-iteration runs
of ``bundles/la`` at 16³ and 32³ patches, 2 to 130 classes, with the default and with 8 × 16 CPS samples): about
64 bytes per voxel per sample per class and 244 bytes per query–negative pair per class.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DATALIST_KEYS, check_cases
from ..networks.backbone import size_divisor
from . import rules
from .survey import CaseHeader, LabelSummary, PlanError, _load_array

__all__ = [
    "CLASS_PAIR_BYTES",
    "CLASS_VOXEL_BYTES",
    "CPS_PAIRS",
    "check_output_file",
    "check_plan",
    "check_plan_inputs",
    "class_memory_gib",
]

CLASS_VOXEL_BYTES = 64
"""Training memory per voxel of the patch, per sample and per class beyond the calibration's 2 (measured)."""
CLASS_PAIR_BYTES = 244
"""Training memory per CPS query–negative pair and per class beyond 2 (measured)."""
CPS_PAIRS = 256 * 512
"""CPS pairs per class of a plan's run: ``num_queries`` × ``num_negatives`` of the bundles' ``train.json`` (the plan
does not change them)."""

_ISOTROPIC = [[2, 2, 2]] * rules.LEVELS


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse an ``--output`` that cannot be written as a file, before any work.

    Raises:
        PlanError: ``path`` is a folder, lies below a file, or its folder is not writable.
    """
    output = Path(path)
    if not str(path):
        raise PlanError("--output is empty; expected the override file to write, e.g. plan.json.")
    if output.is_dir():
        raise PlanError(f"--output {output} is a folder; expected the override file to write, e.g. {output}/plan.json.")
    folder = output.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise PlanError(f"--output {output}: {folder} is a file, not a folder; expected a path in a folder.")
    if not os.access(folder, os.W_OK | os.X_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise PlanError(f"--output {output} cannot be written here (permission denied in {folder}).")
    return output


def check_plan_inputs(datalist: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Every case of the data set (each list of a :func:`crln_monai.data.semi_supervised_datalist`) through
    :func:`crln_monai.data.check_cases`, image voxels read for NaN/Inf; before the plan reads any header itself.

    Channel counts and label values are left to the plan, which names the json's channels and classes.

    Raises:
        PlanError: the first bad file, in ``check_cases``'s words (one line naming the case and file).
    """
    items = [item for key in DATALIST_KEYS for item in datalist.get(key, ())]
    try:
        check_cases(items, in_channels=None, num_classes=None, check_finite=True)
    except (ValueError, FileNotFoundError) as e:
        raise PlanError(str(e)) from None


def class_memory_gib(num_classes: int, patch: Sequence[int], batch: int, pairs: int = CPS_PAIRS) -> float:
    """Training memory (GiB) the classes beyond 2 add to :func:`crln_monai.plan.rules.memory_gib` (see the module
    docstring for the calibration)."""
    extra = max(0, int(num_classes) - 2)
    per_class = CLASS_VOXEL_BYTES * math.prod(patch) * batch + CLASS_PAIR_BYTES * pairs
    return extra * per_class / 2**30


def _check_foreground(labelled: Sequence[CaseHeader], summaries: Mapping[str, LabelSummary], names: list[str]) -> None:
    if any(int(summaries[h.case].counts[1:].sum()) > 0 for h in labelled):
        return
    example = next((h.label for h in labelled if h.label), "")
    raise PlanError(
        f"none of the {len(labelled)} labelled cases' label files holds a foreground voxel (every voxel is 0, e.g. "
        f"{example}); expected labels 1..{len(names) - 1} ({', '.join(names[1:])}) beside background 0: a run would "
        "learn background only."
    )


def _constant(header: CaseHeader) -> float | None:
    """The one value of a constant image (all channel files), else ``None``."""
    values = [np.asarray(_load_array(path, np.float32)) for path in header.images]
    low, high = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    return low if low == high else None


def _check_ct_statistics(overrides: Mapping[str, Any], labelled: Sequence[CaseHeader]) -> None:
    if overrides.get("normalise") != "ct":
        return
    (low, high), (_, std) = overrides["intensity_range"], overrides["intensity_stats"]
    if low < high and std > 0 and math.isfinite(low) and math.isfinite(high):
        return
    constant = [(h, _constant(h)) for h in labelled]
    named = [f"case {h.case!r} {h.images[0]} (all {value:g})" for h, value in constant if value is not None]
    cause = f"constant image(s): {'; '.join(named[:3])}" if named else "the labelled foregrounds hold one value"
    raise PlanError(
        f"normalise='ct' (the json's modality is CT) needs varying foreground intensities, but the {len(labelled)} "
        f"labelled cases give intensity_range [{low:g}, {high:g}] and std {std:g}: {cause}; expected CT images in "
        "Hounsfield units (or name another modality in the json)."
    )


def _check_class_memory(plan: Any, budget_gib: float) -> None:
    overrides = plan.overrides
    num_classes, patch = int(overrides["num_classes"]), list(overrides["patch_size"])
    batch = int(overrides["labelled_batch_size"]) + int(overrides["unlabelled_batch_size"])
    classes = class_memory_gib(num_classes, patch, batch)
    if classes == 0:
        return
    planar = patch[-1] == 1  # a 2-D (slice-wise) configuration: the patch rule's memory model is the 3-D VNet's
    strides = overrides.get("strides") or ([[2, 2, 1]] * rules.LEVELS if planar else _ISOTROPIC)
    network = 0.0 if planar else rules.memory_gib(patch, strides, batch)
    smallest = [int(d) for d in size_divisor(strides)]
    smallest_network = 0.0 if planar else rules.memory_gib(smallest, strides, batch)
    usable = rules.MEMORY_HEADROOM * budget_gib
    at_smallest = smallest_network + class_memory_gib(num_classes, smallest, batch)
    if at_smallest > usable:
        per_class = class_memory_gib(3, smallest, batch)
        most = 2 + max(0, math.floor((usable - smallest_network) / per_class))
        raise PlanError(
            f"num_classes={num_classes}: training needs ≈ {at_smallest:.1f} GiB even at the smallest patch "
            f"{smallest} (batch {batch}; the classes beyond 2 alone ≈ {at_smallest - smallest_network:.1f} GiB: "
            f"class maps and CPS samples per class), more than the {usable:.1f} GiB usable (80 % of "
            f"{budget_gib:g} GiB); expected at most about {most} classes for this memory: merge classes or give more "
            "memory (--memory_gib)."
        )
    if network + classes > usable:
        # memory ≈ (network per voxel + class maps per voxel) × voxels + CPS samples: the patch that fits
        fixed = class_memory_gib(num_classes, [0, 0, 0], batch)
        per_voxel = (network + classes - fixed) / math.prod(patch)
        voxels = max(math.prod(smallest), int((usable - fixed) / per_voxel))
        plan.warnings.append(
            f"{num_classes} classes add ≈ {classes:.1f} GiB to the patch's ≈ {network:.1f} GiB: "
            f"{network + classes:.1f} GiB > {usable:.1f} usable; expect running out of memory: plan again with "
            f"--max_patch_voxels {voxels} or more memory (--memory_gib)."
        )


def _check_bundle_values(overrides: Mapping[str, Any]) -> None:
    from ..workflow import check_config  # noqa: PLC0415 - the workflow layer, only once a plan exists

    try:
        check_config(overrides)
    except (ValueError, TypeError) as e:
        raise PlanError(f"training would refuse this plan: {e}") from None


def check_plan(
    plan: Any, labelled: Sequence[CaseHeader], summaries: Mapping[str, LabelSummary], budget_gib: float
) -> None:
    """Refuse a finished plan that training would refuse or cannot run; add memory warnings to ``plan.warnings``.

    Args:
        plan: the :class:`~crln_monai.plan.Plan` (``overrides``, ``warnings``).
        labelled: the labelled cases of the split (their headers).
        summaries: label statistics by case id (:func:`~crln_monai.plan.survey.read_label`).
        budget_gib: the memory the plan was made for.

    Raises:
        PlanError: no foreground in any labelled case; degenerate CT statistics (naming constant images); more
            classes than fit the memory at the smallest patch; a value the bundles' config check refuses.
    """
    _check_foreground(labelled, summaries, list(plan.overrides["class_names"]))
    _check_ct_statistics(plan.overrides, labelled)
    _check_class_memory(plan, budget_gib)
    _check_bundle_values(plan.overrides)
