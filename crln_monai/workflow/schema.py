"""The configuration schema of the CRLN bundles: one table, top-level key -> what its resolved value may be.

:data:`SCHEMA` declares every top-level key that a config of ``bundles/la`` (``train.json``, ``evaluate.json``,
``inference.json``, ``demo.json``, ``multi_gpu_train.json``, the protocol files) or of a bundle generated from it
defines, plus the few keys MONAI itself adds (``_meta_``, the experiment-tracking keys). A key is either

* **typed**: its resolved value must pass :attr:`KeySpec.accepts` (a type and a range or a set of choices); the
  choices come from the library's own constants (``RECTIFIER_MODES``, ``AGGREGATIONS``, ...), so the schema
  cannot drift from what the code accepts; or
* **structural**: wiring (networks, datasets, engines, run lists, dicts of references) that is not type-checked.

:data:`RELATIONS` are the checks that involve several keys (e.g. ``class_names`` has ``num_classes`` entries,
the sliding-window stride fits in the patch); they run only when every key they read has a checked value.
:func:`crln_monai.workflow.check_config` applies both.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

from crln_monai.data.strong_augment import CUTMIX_LAMBDAS
from crln_monai.data.transforms import NORMALISATIONS, check_preprocessing
from crln_monai.engines.optimizers import OPTIMIZERS
from crln_monai.evaluation.sliding_window import overlap_for_stride
from crln_monai.losses.cps import CPS_POSITIVES, CPS_PROTOTYPE_REDUCTIONS, CPS_XI_MODES
from crln_monai.losses.pseudo_label import PSEUDO_LABEL_WEIGHTINGS
from crln_monai.networks.backbone import check_spatial_size, normalise_strides, planar_settings, size_divisor
from crln_monai.networks.crln import BACKBONES, PROJECTION_INITS
from crln_monai.networks.dim import AGGREGATIONS
from crln_monai.networks.dim import LEVEL_MODES as DIM_LEVEL_MODES
from crln_monai.networks.dim import UPSAMPLE_INITS as DIM_UPSAMPLE_INITS
from crln_monai.networks.rectifier import RECTIFIER_MODES
from crln_monai.utils import AMP_DTYPES

__all__ = ["RELATIONS", "SCHEMA", "KeySpec", "Relation"]


@dataclass(frozen=True)
class KeySpec:
    """What one top-level key may hold.

    Attributes:
        allowed: the allowed values in words, as error messages show them (``"an int >= 1"``).
        accepts: ``accepts(value)`` is True for an allowed resolved value; ``None`` for a structural key.
        kind: ``"value"``, ``"bool"`` (a switch: checked with :func:`~crln_monai.workflow.check_flags`' message) or
            ``"structural"`` (never resolved by the check).
    """

    allowed: str
    accepts: Callable[[Any], bool] | None = None
    kind: str = "value"

    @property
    def structural(self) -> bool:
        return self.kind == "structural"


# --- building blocks ------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _number_words(x: float) -> str:
    return format(x, "g") if isinstance(x, float) else str(x)


def _bound_words(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_number_words(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_number_words(high)}")
    return " and ".join(parts)


def _in_bounds(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def structural(note: str = "wiring, not type-checked") -> KeySpec:
    """A key whose value is wiring (components, expressions over data, run lists): never resolved by the check."""
    return KeySpec(note, None, "structural")


def boolean() -> KeySpec:
    return KeySpec("True or False", lambda v: isinstance(v, bool), "bool")


def integer(low: int | None = None, high: int | None = None) -> KeySpec:
    words = _bound_words(low, high, False, False)
    return KeySpec(
        f"an int {words}".strip(), lambda v: _is_int(v) and _in_bounds(v, low, high, False, False)
    )  # fmt: skip


def real(
    low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> KeySpec:
    """A finite number (ints accepted) in the given range."""
    words = _bound_words(low, high, low_open, high_open)
    return KeySpec(
        f"a number {words}".strip(), lambda v: _is_real(v) and _in_bounds(v, low, high, low_open, high_open)
    )  # fmt: skip


def choice(options: Iterable[Any]) -> KeySpec:
    options = tuple(options)
    return KeySpec(f"one of {list(options)}", lambda v: isinstance(v, str) and v in options)


def text() -> KeySpec:
    return KeySpec("a non-empty string", lambda v: isinstance(v, str) and v != "")


def path() -> KeySpec:
    return KeySpec("a path (a non-empty string)", lambda v: isinstance(v, (str, os.PathLike)) and os.fspath(v) != "")


def ints(length: int, low: int) -> KeySpec:
    return KeySpec(
        f"a list of {length} ints >= {low}",
        lambda v: isinstance(v, (list, tuple)) and len(v) == length and all(_is_int(x) and x >= low for x in v),
    )


def strings() -> KeySpec:
    return KeySpec(
        "a list of non-empty strings",
        lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) and x != "" for x in v),
    )


def optional(spec: KeySpec) -> KeySpec:
    """``spec`` or ``None`` (JSON ``null``)."""
    assert spec.accepts is not None
    return KeySpec(f"null or {spec.allowed}", lambda v: v is None or spec.accepts(v), spec.kind)


def _passes(check: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Whether the library's own ``check`` accepts the arguments (it raises ``ValueError``/``TypeError`` if not)."""
    try:
        check(*args, **kwargs)
    except (ValueError, TypeError, RuntimeError):  # torch.device("gpu") raises RuntimeError
        return False
    return True


def _device(value: Any) -> bool:
    """A device name or ``torch.device`` that exists here: ``--device cuda:0`` on a machine without CUDA would
    otherwise fail only when the network is moved, with torch's "Torch not compiled with CUDA enabled"."""
    if not (isinstance(value, torch.device) or (isinstance(value, str) and _passes(torch.device, value))):
        return False
    device = torch.device(value)
    if device.type == "cuda":
        return (device.index or 0) < (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return True


def _resume(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    name = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    # python-fire passes --resume true as the string 'true': it would be taken for a checkpoint path
    return bool(name) and name.lower() not in ("true", "false", "none", "null")


def _strides(value: Any) -> bool:
    """null, or per-level factors as the backbones take them (the level count is checked against the backbone)."""
    if value is None:
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and _passes(normalise_strides, value, len(value), "")


def _ct_setting(**setting: Any) -> bool:
    """Whether ``check_preprocessing`` accepts one of the ``normalise='ct'`` settings (the other one valid)."""
    settings = {"intensity_range": [0, 1], "intensity_stats": [0, 1], **setting}
    return _passes(check_preprocessing, normalise="ct", **settings)


def _inputs(value: Any) -> bool:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value) != ""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_inputs(v) for v in value)


# --- the table ------------------------------------------------------------------------------------------------------

_TRACKING_KEYS = sorted({k for settings in DEFAULT_EXP_MGMT_SETTINGS.values() for k in settings["configs"]})
"""Top-level keys MONAI adds with ``--tracking`` (``monai.bundle.utils.DEFAULT_EXP_MGMT_SETTINGS``)."""

SCHEMA: dict[str, KeySpec] = {
    # --- keys MONAI or tools/sync_bundles.py put at the top level
    ConfigParser.meta_key: structural("the bundle's metadata.json (MONAI)"),
    "_generated_": structural("note written by tools/sync_bundles.py into generated bundles"),
    "_desc_": structural("one line saying what an override file (e.g. configs/ablation/*.json) is for"),
    **{k: structural("MONAI experiment tracking (--tracking)") for k in _TRACKING_KEYS},
    # --- folders and files
    "bundle_root": path(),
    "dataset_dir": path(),
    "datalist_file": text(),
    "ckpt_dir": path(),
    "output_dir": path(),
    "demo_dir": path(),
    "export_dir": path(),  # where a trained run is exported as a bundle
    "checkpoint": path(),  # evaluate.json: the checkpoint evaluated
    "ckpt_path": path(),  # inference.json: the checkpoint loaded
    "input": KeySpec("a path or a non-empty list of paths (NIfTI files or folders)", _inputs),  # inference.json
    "resume": KeySpec(
        "null, True, False, 'auto' or a checkpoint path (write True/False with a capital letter)", _resume
    ),
    "resume_checkpoint": path(),
    "overwrite": boolean(),  # a fresh training run may replace an earlier run in its folders
    "resume_other_data": boolean(),  # a resume may continue on other cases than resume.pt was trained on
    # --- run
    "device": KeySpec(
        "a torch.device or a device name such as 'cpu' or 'cuda:0' that exists here (a CUDA index below "
        "torch.cuda.device_count())", _device
    ),
    "seed": integer(0, 2**32 - 1),
    "deterministic": boolean(),
    "amp_dtype": KeySpec(
        f"null, a torch.dtype or one of {list(AMP_DTYPES)}",
        lambda v: v is None or isinstance(v, torch.dtype) or (isinstance(v, str) and v in AMP_DTYPES),
    ),
    "compile": boolean(),
    "num_workers": integer(0),
    "cache_rate": real(0.0, 1.0),
    # --- data and classes
    "in_channels": integer(1),
    "num_classes": integer(2),
    "class_names": optional(strings()),
    "num_labelled": optional(integer(1)),
    "labelled_ids": optional(strings()),
    "unlabelled_ids": optional(strings()),
    "num_validation": integer(0),
    "use_val_ids": boolean(),
    "use_unlabelled": boolean(),
    # --- preprocessing (crln_monai.data.transforms.check_preprocessing is the reference)
    "orientation": KeySpec(
        "null or 3 axis codes, one of L/R, P/A, I/S each (e.g. 'RAS')",
        lambda v: v is None or (isinstance(v, str) and _passes(check_preprocessing, orientation=v)),
    ),
    "target_spacing": KeySpec(
        "null or 3 positive spacings in mm [x, y, z]",
        lambda v: v is None or (isinstance(v, (list, tuple)) and _passes(check_preprocessing, target_spacing=v)),
    ),
    "normalise": KeySpec(
        f"null or one of {list(NORMALISATIONS)}", lambda v: v is None or (isinstance(v, str) and v in NORMALISATIONS)
    ),
    "intensity_range": optional(KeySpec("[lo, hi] with lo < hi", lambda v: _ct_setting(intensity_range=v))),
    "intensity_stats": optional(KeySpec("[mean, std] with std > 0", lambda v: _ct_setting(intensity_stats=v))),
    "foreground_share": real(0.0, 1.0),
    "synthetic_shape": ints(3, 1),  # demo.json
    "synthetic_unlabelled_labels": boolean(),  # demo.json
    # --- network
    "backbone": choice(BACKBONES),
    "strides": KeySpec("null or per-level down-sampling factors, each 1, 2 or [sH, sW, sD] of 1 and 2", _strides),
    "patch_size": ints(3, 1),
    "num_prototypes": integer(1),
    "use_dim": boolean(),
    "use_cps": boolean(),
    "rectifier": choice(RECTIFIER_MODES),
    "dim_aggregation": choice(AGGREGATIONS),
    "dim_levels": choice(DIM_LEVEL_MODES),
    "legacy_query_layout": boolean(),
    "prototype_residual": boolean(),
    "upsample_mixes_classes": boolean(),
    "dim_upsample_init": choice(DIM_UPSAMPLE_INITS),
    "projection_init": choice(PROJECTION_INITS),
    "prototype_reduce": choice(CPS_PROTOTYPE_REDUCTIONS),
    # --- sliding-window inference
    "sw_stride": ints(3, 1),
    "sw_batch_size": integer(1),
    "save_predictions": boolean(),  # evaluate.json
    # --- schedule and optimiser
    "labelled_batch_size": integer(1),
    "unlabelled_batch_size": integer(0),
    "max_epochs": integer(1),
    "epoch_length": integer(1),
    "val_interval": integer(1),
    "log_interval": integer(1),
    "optimizer_kind": choice(OPTIMIZERS),
    "lr": real(0.0, low_open=True),
    "momentum": real(0.0, 1.0, high_open=True),
    "weight_decay": real(0.0),
    "rectify_start": integer(0),
    "supervised_iterations": integer(0),
    # --- losses
    "lambda_u": real(0.0),
    "lambda_cp": real(0.0),
    "strong_threshold": real(0.0, 1.0),
    "weak_threshold": real(0.0, 1.0),
    "unsup_weighting": choice(PSEUDO_LABEL_WEIGHTINGS),
    "cps_positive": choice(CPS_POSITIVES),
    "xi": real(0.0),
    "xi_mode": choice(CPS_XI_MODES),
    "num_queries": integer(1),
    "num_negatives": integer(1),
    "temperature": real(0.0, low_open=True),
    # --- augmentation switches
    "rescale": boolean(),
    "cutmix": boolean(),
    "cutmix_lambda": choice(CUTMIX_LAMBDAS),
    "noise": boolean(),
    "brightness": boolean(),
    "rotate_flip": boolean(),
    "weak_rotate_flip": boolean(),
    "weak_brightness": boolean(),
    # --- structural: gathered settings, components, data lists, engines, run lists
    "imports": structural(),
    "network_settings": structural("the CRLN constructor arguments (references to typed keys)"),
    "preprocessing_settings": structural("the preprocessing arguments (references to typed keys)"),
    "settings": structural("the settings stored beside the weights in a checkpoint"),
    "trained_geometry": structural("orientation and spacing of the training cases (crln_monai.data.trained_geometry)"),
    "network_def": structural(),
    "network": structural(),
    "teacher": structural(),
    "inference_network": structural(),
    "optimizer": structural(),
    "rectifier_optimizer": structural(),
    "lr_scheduler": structural(),
    "rectifier_lr_scheduler": structural(),
    "teacher_ema": structural(),
    "tensorboard_writer": structural("the run's TensorBoard writer, shared by training and validation"),
    "datalist": structural("reads dataset.json"),
    "train": structural(),
    "validate": structural(),
    "test": structural(),
    "validator": structural("the validation evaluator, or None without a validation split (validation_evaluator)"),
    "predictions_dir": structural("where evaluation writes predictions, or None (save_predictions False)"),
    "resume_objects": structural("the objects resume.pt holds (crln_monai.workflow.resume_objects)"),
    "resume_from": structural("the checkpoint a run resumes from, or None (crln_monai.handlers.resume_source)"),
    "resume_saver": structural(),
    "resume_loader": structural(),
    "run_guard": structural("the run's ownership of its folders: lock, no fresh run over a finished one (RunGuard)"),
    "run_record": structural("the run's data set, saved in resume.pt and checked at a resume (RunRecord)"),
    "input_files": structural("lists the input folder"),
    "preprocessing": structural(),
    "dataset": structural(),
    "dataloader": structural(),
    "inferer": structural(),
    "postprocessing": structural(),
    "handlers": structural(),
    "evaluator": structural(),
    "rank": structural("the DDP rank (needs the process group)"),
    "world_size": structural("the DDP world size (needs the process group)"),
    "rank_seed": structural(),
    "ddp_network": structural(),
    "initialize": structural(),
    "training_checks": structural("the inputs of a training run, checked before any work (run lists reference it)"),
    "training": structural(),
    "evaluating": structural(),
    "inference": structural(),
    "finalize": structural(),
}
"""Every top-level key of the CRLN bundles -> :class:`KeySpec`. A key added to a bundle config needs an entry."""


# --- checks across keys ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """A check over several keys: ``check(values)`` returns ``None`` or a one-line problem; run only when every
    key of ``keys`` has a checked value."""

    keys: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], str | None]


def _semi_supervised_batch(v: Mapping[str, Any]) -> str | None:
    if v["use_unlabelled"] and v["unlabelled_batch_size"] < 1:
        return (
            "use_unlabelled=True needs unlabelled_batch_size >= 1, got 0 "
            "(for a supervised-only run set use_unlabelled False)"
        )
    return None


def _burn_in(v: Mapping[str, Any]) -> str | None:
    total = v["max_epochs"] * v["epoch_length"]
    if v["use_unlabelled"] and v["supervised_iterations"] >= total:
        return (
            f"supervised_iterations={v['supervised_iterations']} leaves none of the run's {total} iterations for the "
            "unlabelled losses (for a supervised-only run set use_unlabelled False)"
        )
    return None


def _class_names(v: Mapping[str, Any]) -> str | None:
    names = v["class_names"]
    if names is not None and len(names) != v["num_classes"]:
        return f"class_names must have num_classes={v['num_classes']} entries, got {len(names)}: {list(names)!r}"
    if names is not None and len(set(names)) != len(names):  # the reports name their rows and figures by class
        return f"class_names must be distinct names, got {list(names)!r}"
    return None


def _library_check(check: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], str | None]:
    """A relation made from a library function that raises a one-line ``ValueError``."""

    def relation(v: Mapping[str, Any]) -> str | None:
        try:
            check(v)
        except ValueError as e:
            return str(e).rstrip(".")
        return None

    return relation


def _strides_fit(v: Mapping[str, Any]) -> None:
    backbone = BACKBONES[v["backbone"]]
    owner = f"backbone {v['backbone']!r}"
    if getattr(backbone, "spatial_dims", 3) == 2:  # one slice: [h, w, 1] and no pooling of the slice axis
        patch, strides = planar_settings(v["patch_size"], v["strides"], backbone.num_levels, owner)
    else:
        patch, strides = v["patch_size"], normalise_strides(v["strides"], backbone.num_levels, owner)
    check_spatial_size(patch, size_divisor(strides), owner, "patch_size")


def _stride_in_patch(v: Mapping[str, Any]) -> None:
    try:
        overlap_for_stride(v["patch_size"], v["sw_stride"])
    except ValueError:
        stride, patch = list(v["sw_stride"]), list(v["patch_size"])
        raise ValueError(f"sw_stride {stride} must be in [1, patch] on every axis of patch_size {patch}") from None


RELATIONS: tuple[Relation, ...] = (
    Relation(("use_unlabelled", "unlabelled_batch_size"), _semi_supervised_batch),
    Relation(("use_unlabelled", "supervised_iterations", "max_epochs", "epoch_length"), _burn_in),
    Relation(("class_names", "num_classes"), _class_names),
    Relation(
        ("orientation", "target_spacing", "normalise", "intensity_range", "intensity_stats"),
        _library_check(lambda v: check_preprocessing(**v)),
    ),
    Relation(("backbone", "strides", "patch_size"), _library_check(_strides_fit)),
    Relation(("patch_size", "sw_stride"), _library_check(_stride_in_patch)),
)
"""Checks across keys, in the order they run."""
