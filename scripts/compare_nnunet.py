#!/usr/bin/env python
"""Against nnU-Net: the same data, the same labelled cases, the same machine, the same clock.

The first question of a user with 8 labelled and 70 unlabelled volumes: why not nnU-Net v2 on the 8 labels? For
one data folder (Decathlon json or nnU-Net layout), read with :func:`crln_monai.data.semi_supervised_datalist` and the
plan's split rule (``crln_monai.plan.rules.choose_split``) so that the cases are exactly the ones ``crln-plan`` and
``bundles/custom`` use, this script

1. converts the folder to nnU-Net's raw layout (:func:`convert_to_nnunet`): the LABELLED cases only go to
   ``imagesTr``/``labelsTr`` (``<case>_0000.nii.gz``, one file per channel; labels as integers), the test cases to
   ``imagesTs`` (never trained on), and an nnU-Net v2 ``dataset.json``. nnU-Net is supervised: the unlabelled pool
   is not used. Our validation cases are left out: CRLN does not train on them either (they pick its ``model.pt``;
   the comparison scores its final ``model_last.pt``), so both methods learn from the same labelled voxels;
2. runs nnU-Net's own commands as subprocesses, with ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``
   under ``--work_dir``: ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``, ``nnUNetv2_train`` (fold
   ``all``: every labelled case trains; nnU-Net's default five folds would each train on four fifths of them) and
   ``nnUNetv2_predict`` on ``imagesTs``; each through ``scripts/nnunet_launch.py`` (the installed entry point, with
   torchvision made importable beside a CPU-only torch);
3. fits nnU-Net's training into the budget (``--time``): by default with ``nnUNetTrainerTimeBudget``
   (``scripts/nnunet_trainers/``, found by nnU-Net through ``nnUNet_extTrainer``: nnU-Net's trainer, its schedule cut
   to the clock, see that module); any other trainer (``--trainer nnUNetTrainer_5epochs``, nnU-Net's own variants)
   runs under a timeout of the budget and predicts from the newest checkpoint it left (``checkpoint_final.pth``,
   else ``checkpoint_latest.pth``, else ``checkpoint_best.pth``; ``nnUNetv2_predict -chk`` takes any of them);
4. scores nnU-Net's predictions against our test labels with OUR metrics and report
   (:func:`crln_monai.evaluation.case_record`, :func:`~crln_monai.evaluation.write_class_report`: per-class Dice,
   HD95 and ASD, the case bootstrap), in each test image's own geometry;
5. with ``--ours``: plans our run for the same wall time on this machine (``crln_monai.plan.plan_dataset(...,
   time_budget=...)``, its probe included) and trains CRLN through ``bundles/custom`` on the same labelled cases
   plus the unlabelled pool, after nnU-Net, never at the same time; its saved predictions are scored by the same
   function (the bundle's own report, in the model's space, is kept beside it). CRLN's iterations come from the
   plan's probe and it has no deadline: its training seconds are reported beside the plan's estimate;
6. writes ``--out`` (JSON) and the same name with ``.md``: commands, machine, split, wall times, nnU-Net's epochs
   and iterations done, per-class Dice and HD95 (mean ± bootstrap std).

A second run in the same ``--work_dir`` replaces what the first left for the data set (nnU-Net's preprocessed data,
results and predictions, the CRLN run). ``--threads`` (or ``OMP_NUM_THREADS``) gives both the same CPU threads.

``--plans_only``: no training. Each folder is converted (labelled cases), nnU-Net plans it
(``nnUNetv2_extract_fingerprint`` + ``nnUNetv2_plan_experiment``, seconds) and so does ``crln_monai.plan``
(``iterations`` given, no probe; both of its configurations; the same 8 GiB GPU target as nnU-Net's default), and a
table per data set puts the two side by side (:func:`plans_table`), in OUR axis order: nnU-Net reverses the file's
voxel axes and then moves the coarsest axis first (its plans' ``transpose_forward``); the table undoes both.

``example:NAME`` instead of a folder generates a synthetic set under ``--work_dir/data/NAME``: ``anisotropic`` (4
classes, 160×160×12 voxels of 1.25×1.25×8 mm), ``ct`` (Hounsfield-range intensities, 0.8×0.8×5 mm, modality CT),
``smoke`` (tiny, for an end-to-end check in minutes).

Needs the ``compare`` extra (``pip install -e ".[compare]"``; on a CPU-only torch, keep it:
``pip install -e ".[compare]" -c <(echo torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])'))``).

Examples::

    python scripts/compare_nnunet.py ../shared/data/la2018 --num_labelled 8 --time 30m --ours \\
        --work_dir work/nnunet_la8 --out work/nnunet_la8/results.json
    python scripts/compare_nnunet.py ../shared/data/la2018 example:anisotropic example:ct --num_labelled 8 6 6 \\
        --plans_only --work_dir work/nnunet_plans --out work/nnunet_plans/plans.json
    OMP_NUM_THREADS=1 python scripts/compare_nnunet.py example:smoke --num_labelled 3 --time 2m --ours \\
        --num_workers 0 --work_dir work/nnunet_smoke --out work/nnunet_smoke/results.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import command_line, machine_info, write_json  # noqa: E402

from crln_monai.data import make_synthetic_dataset, semi_supervised_datalist  # noqa: E402
from crln_monai.evaluation import case_record, write_class_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "custom" / "configs"
TRAINERS = Path(__file__).resolve().parent / "nnunet_trainers"
LAUNCHER = Path(__file__).resolve().parent / "nnunet_launch.py"
TIME_BUDGET_TRAINER = "nnUNetTrainerTimeBudget"
NNUNET_VERSION = "2.8.1"
NNUNET_COMMANDS = (
    "nnUNetv2_plan_and_preprocess", "nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment", "nnUNetv2_train",
    "nnUNetv2_predict",
)  # fmt: skip
NNUNET_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
#: nnU-Net's checkpoints, newest first: final (training ended), latest (every 50 epochs, removed at the end), best
#: (after an epoch whose smoothed pseudo-Dice improved).
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
PLANS = "nnUNetPlans"
#: nnU-Net's default GPU memory target of its 3-D plans, also given to our plan in --plans_only.
NNUNET_GPU_GIB = 8.0
EXAMPLES = ("anisotropic", "ct", "smoke")
#: nnU-Net's image readers that reverse the file's voxel axes (SimpleITK's order), and the one that first reorients
#: to RAS.
REVERSING_READERS = ("SimpleITKIO", "NibabelIO")
REORIENTING_READERS = ("NibabelIOWithReorient",)
WORLD_AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
ENDINGS = (".nii.gz", ".nii")


class CompareError(ValueError):
    """A bad input, reported in one line before any work."""


# ------------------------------------------------------------------------------------------------- examples


def make_ct_like_dataset(
    out_dir: str | os.PathLike,
    num_cases: int = 30,
    num_test: int = 6,
    shape: Sequence[int] = (160, 160, 32),
    spacing: Sequence[float] = (0.8, 0.8, 5.0),
    num_classes: int = 3,
    seed: int = 0,
) -> Path:
    """A CT-like synthetic set: :func:`make_synthetic_dataset`'s z-scored images mapped to Hounsfield units
    (``image × 200 + 40``, clipped to [-1024, 3000], int16), one thick axis, ``modality`` ``{"0": "CT"}``.

    The z-scored source set is kept under ``out_dir/zscored``; the train cases after the first quarter have no label
    file (truly unlabelled). A second call with the same arguments writes nothing.
    """
    out = Path(out_dir)
    params = {
        "num_cases": num_cases, "num_test": num_test, "shape": [int(s) for s in shape],
        "spacing": [float(s) for s in spacing], "num_classes": num_classes, "seed": seed,
    }  # fmt: skip
    json_path = out / "dataset.json"
    if json_path.is_file():
        meta = json.loads(json_path.read_text())
        if meta.get("ct_like") == params and all((out / f).is_file() for f in meta.get("_files", [])):
            return out
    source = make_synthetic_dataset(
        out / "zscored", num_cases=num_cases, num_test=num_test, shape=shape, spacing=spacing, seed=seed,
        num_classes=num_classes, with_unlabelled_labels=False,
    )  # fmt: skip
    meta = json.loads((source / "dataset.json").read_text())
    files = []
    for entry in meta["training"]:
        for key in ("image", "label"):
            if key not in entry:
                continue
            relative = entry[key][2:] if entry[key].startswith("./") else entry[key]
            image = nib.load(str(source / relative))
            array = np.asanyarray(image.dataobj)
            if key == "image":
                array = np.clip(np.round(array * 200.0 + 40.0), -1024, 3000).astype(np.int16)
            _write_nifti(array, image, out / relative)
            files.append(relative)
    meta.update(
        name="synthetic-CT", description="CT-like synthetic volumes (scripts/compare_nnunet.py): Hounsfield units",
        modality={"0": "CT"}, ct_like=params, _files=files,
    )  # fmt: skip
    meta.pop("synthetic", None)
    json_path.write_text(json.dumps(meta, indent=2))
    return out


def make_example(name: str, out_dir: Path) -> Path:
    """Generate the named example set (:data:`EXAMPLES`) under ``out_dir``."""
    if name == "anisotropic":
        return make_synthetic_dataset(
            out_dir, num_cases=40, num_test=10, shape=(160, 160, 12), spacing=(1.25, 1.25, 8.0), num_classes=4,
            with_unlabelled_labels=False, object_scale=0.7,
        )  # fmt: skip
    if name == "ct":
        return make_ct_like_dataset(out_dir)
    if name == "smoke":
        return make_synthetic_dataset(
            out_dir, num_cases=14, num_test=3, shape=(48, 48, 32), spacing=(1.0, 1.0, 1.0),
            with_unlabelled_labels=False,
        )  # fmt: skip
    raise CompareError(f"unknown example {name!r}; expected one of {', '.join(EXAMPLES)}.")


# ---------------------------------------------------------------------------------------------------- split


def our_split(dataset_dir: Path, datalist_file: str, num_labelled: int | None) -> dict[str, Any]:
    """The labelled / unlabelled / validation / test cases ``crln-plan`` gives this folder with ``num_labelled``.

    The plan's split rule (:func:`crln_monai.plan.rules.choose_split`) on the same counts the plan reads, then
    :func:`semi_supervised_datalist` with its result: the cases are the bundle's.

    Returns:
        the four lists and ``num_labelled`` / ``num_validation`` as the plan writes them.
    """
    from crln_monai.plan.rules import choose_split

    try:
        full = semi_supervised_datalist(
            dataset_dir, num_labelled=1, datalist_file=datalist_file, require_unlabelled=False
        )
    except (ValueError, TypeError) as e:
        raise CompareError(str(e)) from e
    train = full["labelled"] + full["unlabelled"]
    with_label = sum("label" in item for item in train)
    chosen, num_validation, _ = choose_split(with_label, num_labelled, len(train), len(full["validation"]))
    if chosen is None and with_label >= len(train):
        raise CompareError(
            f"{dataset_dir}: all {len(train)} train cases have label files; pass --num_labelled N to keep the others "
            "as the unlabelled pool."
        )
    try:
        split = semi_supervised_datalist(
            dataset_dir, num_labelled=chosen, num_validation=num_validation, datalist_file=datalist_file
        )
    except (ValueError, TypeError) as e:
        raise CompareError(str(e)) from e
    return {**split, "num_labelled": len(split["labelled"]), "num_validation": num_validation}


# ----------------------------------------------------------------------------------------------- conversion


def nnunet_dataset_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name``: nnU-Net's folder name, the name reduced to letters, digits and ``_``/``-``."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise CompareError(f"the nnU-Net dataset id must be an int in 1..999, got {dataset_id!r}.")
    safe = re.sub(r"[^A-Za-z0-9_-]+", "", name.replace(" ", "_")) or "data"
    return f"Dataset{dataset_id:03d}_{safe}"


def _files(item: Mapping[str, Any]) -> list[str]:
    image = item["image"]
    return list(image) if isinstance(image, (list, tuple)) else [image]


def _write_nifti(array: np.ndarray, like: nib.Nifti1Image, path: Path) -> None:
    """``array`` with the geometry of ``like`` (its qform and sform with their codes), a fresh header otherwise."""
    image = nib.Nifti1Image(np.ascontiguousarray(array), like.affine)
    header = like.header
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        qcode = scode = 1
    image.set_qform(like.get_qform() if int(header["qform_code"]) else like.affine, code=qcode)
    image.set_sform(like.get_sform() if int(header["sform_code"]) else like.affine, code=scode)
    image.header.set_xyzt_units(*header.get_xyzt_units())
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def split_channels(files: Sequence[str]) -> list[tuple[str, int | None]]:
    """``(file, channel index within it or None)`` per channel: a 4-D file gives one entry per volume of its last
    axis, a 3-D file one entry."""
    channels: list[tuple[str, int | None]] = []
    for path in files:
        shape = nib.load(path).shape
        if len(shape) == 4 and shape[3] > 1:
            channels += [(path, c) for c in range(shape[3])]
        else:
            channels.append((path, None))
    return channels


def _write_channel(source: str, channel: int | None, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if channel is None and len(nib.load(source).shape) == 3:  # the file as it is, gzipped when it is a .nii
        if source.endswith(".nii.gz"):
            shutil.copyfile(source, target)
        elif source.endswith(".nii"):
            target.write_bytes(gzip.compress(Path(source).read_bytes(), compresslevel=1))
        else:
            raise CompareError(f"{source}: nnU-Net's layout here takes NIfTI (.nii.gz / .nii) files only.")
        return
    image = nib.load(source)
    if channel is not None:
        volume = image.dataobj[..., channel]
    else:
        volume = np.asanyarray(image.dataobj).reshape(image.shape[:3])
    _write_nifti(np.asarray(volume, dtype=np.float32), image, target)


def _write_label(source: str, target: Path, num_classes: int) -> None:
    image = nib.load(source)
    values = np.asanyarray(image.dataobj)
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    rounded = np.rint(values)
    if not np.array_equal(rounded, values):
        raise CompareError(f"{source}: label values are not integers; expected 0..{num_classes - 1}.")
    if rounded.min() < 0 or rounded.max() >= num_classes:
        raise CompareError(
            f"{source}: label values {int(rounded.min())}..{int(rounded.max())}; expected 0..{num_classes - 1}."
        )
    _write_nifti(rounded.astype(np.uint8 if num_classes <= 256 else np.int16), image, target)


def convert_to_nnunet(
    split: Mapping[str, Sequence[Mapping[str, Any]]],
    raw_root: str | os.PathLike,
    dataset_id: int,
    name: str,
    class_names: Sequence[str],
    channel_names: Sequence[str] | None = None,
    include_test: bool = True,
    description: str = "",
) -> Path:
    """Write nnU-Net v2's raw layout for our split: labelled cases to ``imagesTr``/``labelsTr``, test cases to
    ``imagesTs``.

    ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ... hold the channels (a 4-D image file is split along its last
    axis; a 3-D NIfTI is copied as it is, so nnU-Net reads exactly our voxels); ``labelsTr/<case>.nii.gz`` the label
    as unsigned integers with the label file's geometry. Unlabelled and validation cases are not written. The
    ``dataset.json`` holds ``channel_names``, ``labels`` (name → value), ``numTraining`` and ``file_ending``;
    ``crln_split.json`` beside it lists the case ids of every role.

    Args:
        split: :func:`our_split`'s lists (``labelled``, ``unlabelled``, ``validation``, ``test``).
        raw_root: the ``nnUNet_raw`` folder.
        dataset_id: nnU-Net's dataset id (1..999).
        name: the data set's name (made file-safe).
        class_names: background first, one per label value.
        channel_names: one per channel (``CT`` selects nnU-Net's CT normalisation); default ``channel_<i>``.
        include_test: also write the test cases to ``imagesTs``.
        description: free text for the json.

    Returns:
        the ``DatasetXXX_Name`` folder (replaced when it existed).

    Raises:
        CompareError: no labelled case, a test case among the labelled ones, channel counts that differ between
            cases or from ``channel_names``, label values that are not integers in ``0..len(class_names) - 1``.
    """
    labelled, test = list(split["labelled"]), list(split["test"]) if include_test else []
    if not labelled:
        raise CompareError("no labelled case to convert: nnU-Net needs at least one.")
    if len(class_names) < 2:
        raise CompareError(f"class_names must name background and at least one class, got {list(class_names)}.")
    clash = sorted({i["case"] for i in labelled} & {i["case"] for i in split["test"]})
    if clash:
        raise CompareError(f"case(s) both labelled and test: {clash[:10]}.")
    if any("label" not in item for item in labelled):
        raise CompareError("a labelled case has no label file.")
    channels = {item["case"]: split_channels(_files(item)) for item in labelled + test}
    counts = {len(c) for c in channels.values()}
    expected = len(channel_names) if channel_names else next(iter(counts))
    wrong = [case for case, c in channels.items() if len(c) != expected]
    if wrong:
        raise CompareError(
            f"case {wrong[0]!r} has {len(channels[wrong[0]])} channel(s); expected {expected}"
            + (f" (channel_names {list(channel_names)})" if channel_names else " (as the first case)")
        )
    names = list(channel_names) if channel_names else [f"channel_{c}" for c in range(expected)]

    folder = Path(raw_root) / nnunet_dataset_name(dataset_id, name)
    if folder.exists():
        shutil.rmtree(folder)
    for role, items in (("Tr", labelled), ("Ts", test)):
        for item in items:
            for c, (source, index) in enumerate(channels[item["case"]]):
                _write_channel(source, index, folder / f"images{role}" / f"{item['case']}_{c:04d}.nii.gz")
            if role == "Tr":
                _write_label(item["label"], folder / "labelsTr" / f"{item['case']}.nii.gz", len(class_names))
    dataset = {
        "name": name,
        "description": description or "converted by scripts/compare_nnunet.py: the labelled cases of our split",
        "channel_names": {str(c): n for c, n in enumerate(names)},
        "labels": {str(n): v for v, n in enumerate(class_names)},
        "numTraining": len(labelled),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    roles = {role: [i["case"] for i in split[role]] for role in ("labelled", "unlabelled", "validation", "test")}
    (folder / "crln_split.json").write_text(json.dumps(roles, indent=2))
    return folder


# --------------------------------------------------------------------------------------------- axis order


def file_world_axes(affine: np.ndarray) -> list[int]:
    """For each voxel axis of a file, the world axis (0 = R/L, 1 = A/P, 2 = S/I) it runs along."""
    return [int(a) for a in nib.io_orientation(np.asarray(affine, dtype=float))[:, 0]]


def nnunet_axes_in_our_order(
    transpose_forward: Sequence[int], file_axes: Sequence[int], reader: str, orientation: str = "RAS"
) -> list[int]:
    """For each of our axes, the axis of nnU-Net's plans that holds it.

    nnU-Net reads a NIfTI with its voxel axes reversed (SimpleITK's order; ``NibabelIO`` reverses too, and
    ``NibabelIOWithReorient`` reorients to RAS first), then its plans permute them by ``transpose_forward`` (plans
    axis ``t`` = read axis ``transpose_forward[t]``: the coarsest first). Our axes are ``orientation``'s letters
    (``crln-plan``'s ``orientation``: ``RAS``, or the coarsest axis last, e.g. ``ASR``).

    Args:
        transpose_forward: the plans' ``transpose_forward``.
        file_axes: :func:`file_world_axes` of the data set's images.
        reader: the plans' ``image_reader_writer``.
        orientation: our axis codes.
    """
    if sorted(transpose_forward) != [0, 1, 2]:
        raise CompareError(f"transpose_forward must be a permutation of 0, 1, 2, got {list(transpose_forward)}.")
    if reader in REORIENTING_READERS:
        file_axes = [0, 1, 2]
    elif reader not in REVERSING_READERS:
        known = REVERSING_READERS + REORIENTING_READERS
        raise CompareError(f"unknown nnU-Net reader {reader!r}; expected one of {known}.")
    if sorted(file_axes) != [0, 1, 2] or len(orientation) != 3 or any(c not in WORLD_AXIS for c in orientation):
        raise CompareError(f"cannot map axes: file axes {list(file_axes)}, orientation {orientation!r}.")
    order = []
    for code in orientation:
        file_axis = list(file_axes).index(WORLD_AXIS[code])
        read_axis = 2 - file_axis
        order.append(list(transpose_forward).index(read_axis))
    return order


def _in_order(values: Sequence[Any], order: Sequence[int]) -> list[Any]:
    return [values[t] for t in order]


def _planar_in_order(values: Sequence[Any], order: Sequence[int], fill: Any) -> list[Any]:
    """A 2-D configuration's per-axis values (plans axes 1 and 2; axis 0 is the slicing axis) in our order."""
    full = list(values) if len(values) == 3 else [fill, *values]
    return [full[t] for t in order]


def _fmt(values: Any) -> str:
    if values is None:
        return "—"
    if isinstance(values, float):
        return f"{values:g}"
    if isinstance(values, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in values) + "]"
    return str(values)


def _pools(levels: Sequence[Sequence[int]]) -> str:
    """``x3 y3 z1 · [2,2,1] [2,2,2] ...``: 2× poolings per axis (ours: x, y, z of our order), then per level."""
    axes = range(len(levels[0])) if levels else range(0)
    per_axis = [sum(int(round(math.log2(level[a]))) for level in levels) for a in axes]
    steps = " ".join("[" + ",".join(str(s) for s in level) + "]" for level in levels)
    return " ".join(f"{axis}{n}" for axis, n in zip("xyz", per_axis)) + (f" · {steps}" if steps else "")


def _nnunet_config_rows(config: Mapping[str, Any], order: Sequence[int], planar: bool) -> dict[str, str]:
    """One nnU-Net configuration's rows (values in our axis order)."""
    arch = config.get("architecture", {}).get("arch_kwargs", {})
    strides = arch.get("strides") or config.get("pool_op_kernel_sizes") or []
    kernels = arch.get("kernel_sizes") or config.get("conv_kernel_sizes") or []
    def place(values: Sequence[Any], fill: Any) -> list[Any]:
        return _planar_in_order(values, order, fill) if planar else _in_order(values, order)

    levels = [place(s, 1) for s in strides[1:]]  # the first stage does not pool
    widths = arch.get("features_per_stage")
    median = config.get("median_image_size_in_voxels", [])
    data_kwargs = config.get("resampling_fn_data_kwargs", {})
    return {
        "spacing": _fmt(place(config["spacing"], None)),
        "median_shape": _fmt([None if v is None else int(round(v)) for v in place(median, None)]),
        "patch": _fmt(place(config["patch_size"], 1)),
        "pooling": _pools(levels),
        "stages": f"{arch.get('n_stages', len(strides))} stages, widths {widths[0]}–{widths[-1]}" if widths
        else "—",
        "kernels": " ".join("[" + ",".join(str(k) for k in place(kernel, 1)) + "]" for kernel in kernels),
        "batch": str(config["batch_size"]),
        "normalisation": ", ".join(
            f"{scheme}{' (mask)' if mask else ''}"
            for scheme, mask in zip(config.get("normalization_schemes", []), config.get("use_mask_for_norm", []))
        ),
        "resampling": f"data order {data_kwargs.get('order', '?')} (thick axis {data_kwargs.get('order_z', '?')}), "
        f"labels order {config.get('resampling_fn_seg_kwargs', {}).get('order', '?')}",
    }


def _our_rows(overrides: Mapping[str, Any] | None, median_spacing: Sequence[float] | None) -> dict[str, str]:
    """One of our configurations' rows (the plan's values are already in our axis order)."""
    if overrides is None:
        return dict.fromkeys(ROW_LABELS, "does not fit")
    planar = overrides["backbone"] == "unet2d"
    strides = overrides.get("strides") or ([[2, 2, 1]] * 4 if planar else [[2, 2, 2]] * 4)
    target = overrides.get("target_spacing")
    if target is not None:
        spacing = _fmt(target)
    else:
        spacing = "native" + (f" (median {_fmt(median_spacing)})" if median_spacing else "")
    normalise = overrides["normalise"]
    if normalise == "ct":
        normalise += f": clip {_fmt(overrides['intensity_range'])}, mean/std {_fmt(overrides['intensity_stats'])}"
    return {
        "spacing": spacing,
        "median_shape": _fmt(overrides.get("_median_shape")),
        "patch": _fmt(overrides["patch_size"]),
        "pooling": _pools(strides),
        "stages": "5 levels, widths 16–256" + (" (2-D U-Net)" if planar else " (VNet)"),
        "kernels": "[3,3] everywhere (2-D)" if planar else "[3,3,3] everywhere",
        "batch": f"{overrides['labelled_batch_size']} labelled + {overrides['unlabelled_batch_size']} unlabelled",
        "normalisation": normalise,
        "resampling": "bilinear images, nearest labels (MONAI Spacingd)" if target is not None else "none",
    }


ROW_LABELS = {
    "spacing": "target spacing (mm)",
    "median_shape": "median shape (voxels)",
    "patch": "patch (voxels)",
    "pooling": "2× poolings per axis · per level",
    "stages": "network",
    "kernels": "conv kernels per stage",
    "batch": "batch",
    "normalisation": "normalisation",
    "resampling": "resampling",
}


def plans_table(
    nnunet_plans: Mapping[str, Any],
    ours: Mapping[str, Mapping[str, Any] | None],
    file_axes: Sequence[int],
    chosen: str,
    fingerprint: Mapping[str, Any] | None = None,
    median_spacing: Sequence[float] | None = None,
) -> dict[str, Any]:
    """nnU-Net's plans and ours side by side, every per-axis value in our axis order.

    Args:
        nnunet_plans: nnU-Net's ``nnUNetPlans.json`` (``transpose_forward``, ``image_reader_writer``,
            ``configurations``; ``3d_fullres`` and ``2d`` are shown when present).
        ours: ``{"3d": overrides or None, "2d": overrides or None}`` from ``crln_monai.plan`` (None: did not fit);
            each may carry ``_median_shape`` (our axis order).
        file_axes: :func:`file_world_axes` of the images.
        chosen: the configuration our plan chooses without ``--configuration`` (``"2d"`` or ``"3d"``).
        fingerprint: nnU-Net's ``dataset_fingerprint.json`` (for its CT statistics), optional.
        median_spacing: the median spacing in our order (shown where our plan does not resample).

    Returns:
        ``{"axes", "orientation", "columns", "rows": [[label, value per column], ...], "configurations"}``.
    """
    orientation = next((o.get("orientation") for o in ours.values() if o), None) or "RAS"
    reader = nnunet_plans.get("image_reader_writer", "SimpleITKIO")
    order = nnunet_axes_in_our_order(nnunet_plans["transpose_forward"], file_axes, reader, orientation)
    configurations = nnunet_plans["configurations"]
    columns, cells = [], []
    for name in ("3d_fullres", "2d"):
        if name in configurations and "patch_size" in configurations[name]:
            columns.append(f"nnU-Net {name}")
            cells.append(_nnunet_config_rows(configurations[name], order, planar=name == "2d"))
    for name in ("3d", "2d"):
        if name in ours:
            columns.append(f"ours {name}" + (" (chosen)" if name == chosen else ""))
            cells.append(_our_rows(ours[name], median_spacing))
    rows = [[label] + [c[key] for c in cells] for key, label in ROW_LABELS.items()]
    if fingerprint is not None:
        properties = fingerprint.get("foreground_intensity_properties_per_channel", {})
        ct = [
            f"ch{c}: clip [{p['percentile_00_5']:g}, {p['percentile_99_5']:g}], mean/std [{p['mean']:g}, {p['std']:g}]"
            for c, p in sorted(properties.items())
        ]
        for index, column in enumerate(columns):
            if column.startswith("nnU-Net") and "CTNormalization" in cells[index]["normalisation"]:
                rows[[r[0] for r in rows].index(ROW_LABELS["normalisation"])][index + 1] += "; " + "; ".join(ct)
    nnunet_configs = [c for c, v in configurations.items() if "patch_size" in v or "inherits_from" in v]
    rows.append(["configurations", *(
        ", ".join(nnunet_configs) + " (trains each, keeps the best by cross-validation)" if c.startswith("nnU-Net")
        else ("chosen by the rules" if "chosen" in c else "available with --configuration")
        for c in columns
    )])  # fmt: skip
    return {
        "orientation": orientation,
        "axes": f"Axes x, y, z below are ours, {orientation} (crln-plan's orientation); they are nnU-Net's plans axes "
        f"{', '.join(str(t) for t in order)} (its reader {nnunet_plans.get('image_reader_writer')} reverses the file's "
        f"voxel axes, then transpose_forward {list(nnunet_plans['transpose_forward'])} puts the coarsest first).",
        "columns": columns,
        "rows": rows,
        "configurations": nnunet_configs,
    }


def table_markdown(title: str, table: Mapping[str, Any]) -> str:
    lines = [f"### {title}", "", table["axes"], "", "| | " + " | ".join(table["columns"]) + " |",
             "|---|" + "---|" * len(table["columns"])]  # fmt: skip
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- scoring


def _case_key(item: Mapping[str, Any]) -> str:
    return str(item["case"])


def score_predictions(
    test: Sequence[Mapping[str, Any]],
    prediction: Callable[[str], Path],
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    title: str,
    method: str,
    checkpoint: str,
) -> dict[str, Any]:
    """Score label maps against our test labels in each label file's own geometry (spacing from its header), with
    :func:`case_record` per case and foreground class and :func:`write_class_report` (the bundle's report files).

    Raises:
        CompareError: a prediction is missing, or its shape or affine is not the label's.
    """
    names = list(class_names[1:])
    per_class: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for item in test:
        case = _case_key(item)
        path = prediction(case)
        if not path.is_file():
            raise CompareError(f"no prediction for test case {case!r}: {path} is missing.")
        label_image, predicted_image = nib.load(item["label"]), nib.load(str(path))
        label = np.rint(np.asanyarray(label_image.dataobj)).astype(np.int64).reshape(label_image.shape[:3])
        predicted = np.rint(np.asanyarray(predicted_image.dataobj)).astype(np.int64).reshape(predicted_image.shape[:3])
        if predicted.shape != label.shape:
            raise CompareError(f"{path}: shape {predicted.shape}, the label of {case!r} has {label.shape}.")
        if not np.allclose(predicted_image.affine, label_image.affine, atol=1e-2):
            raise CompareError(f"{path}: its affine is not the label's of {case!r}; not the same voxel grid.")
        spacing = [float(s) for s in label_image.header.get_zooms()[:3]]
        for value, name in enumerate(names, start=1):
            per_class[name].append(case_record(case, predicted == value, label == value, spacing))
    return write_class_report(per_class, out_dir, title=title, checkpoint=checkpoint, method=method)


def class_rows(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{class: {dice, dice_std, hd95_mm, hd95_mm_std, empty_predictions}}`` and ``mean``, from a report summary."""

    def row(metrics: Mapping[str, Any], empty: int) -> dict[str, Any]:
        return {
            "dice": metrics["dice"]["mean"], "dice_std": metrics["dice"]["std"],
            "hd95_mm": metrics["hd95_mm"]["mean"], "hd95_mm_std": metrics["hd95_mm"]["std"],
            "empty_predictions": empty,
        }  # fmt: skip

    rows = {name: row(c["metrics"], c["num_empty_predictions"]) for name, c in summary["classes"].items()}
    rows["mean"] = row(summary["metrics"], summary["num_empty_predictions"])
    return rows


# ------------------------------------------------------------------------------------------ subprocesses


def run_step(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run ``command`` in its own process group, output to ``log_path``; on ``timeout`` the group is stopped
    (SIGTERM, then SIGKILL after 30 s). Returns ``{"command", "seconds", "returncode", "timed_out", "log"}``."""
    print("run: " + " ".join(shlex.quote(str(a)) for a in command), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timed_out = False
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(a) for a in command], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env=None if env is None else dict(env), start_new_session=True,
        )  # fmt: skip
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            returncode = process.wait()
    return {
        "command": " ".join(shlex.quote(str(a)) for a in command), "seconds": time.perf_counter() - start,
        "returncode": returncode, "timed_out": timed_out, "log": str(log_path),
    }  # fmt: skip


def _checked(step: dict[str, Any], what: str) -> dict[str, Any]:
    if step["returncode"] != 0 and not step["timed_out"]:
        tail = "".join(Path(step["log"]).read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{what} failed (exit {step['returncode']}); log {step['log']}:\n{tail}")
    return step


def nnunet_command(name: str) -> list[str]:
    """One of nnU-Net's console commands, run through ``scripts/nnunet_launch.py`` in this Python (the installed
    entry point, with torchvision made importable beside a CPU-only torch; see that module)."""
    from importlib.metadata import entry_points

    if not any(e.name == name for e in entry_points(group="console_scripts")):
        raise CompareError(
            f"{name} not found: install nnU-Net with pip install -e \".[compare]\" (nnunetv2=={NNUNET_VERSION})."
        )
    return [sys.executable, str(LAUNCHER), name]


def nnunet_environment(
    work: Path, threads: int | None, num_workers: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment with nnU-Net's three folders under ``work``, its external trainers, its worker
    counts (at least 1: nnU-Net's planner sets torch's threads from them; training gets ``num_workers`` itself, 0 =
    augmentation in the training process) and (``threads``) the CPU threads."""
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
        nnUNet_results=str(work / "nnUNet_results"), nnUNet_extTrainer=str(TRAINERS),
        nnUNet_n_proc_DA=str(max(1, num_workers)), nnUNet_def_n_proc=str(max(1, num_workers)),
    )  # fmt: skip
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CRLN_NNUNET_THREADS=str(threads))
    env.update(extra or {})
    return env


def newest_checkpoint(fold_dir: Path) -> str | None:
    """The first of :data:`CHECKPOINTS` present in ``fold_dir``."""
    return next((name for name in CHECKPOINTS if (fold_dir / name).is_file()), None)


def training_progress(fold_dir: Path) -> dict[str, Any]:
    """Epochs and iterations done: the time-budget trainer's ``time_budget.json``, else nnU-Net's training log
    (``Epoch time`` lines) × the iterations per epoch of its ``debug.json``."""
    record = fold_dir / "time_budget.json"
    if record.is_file():
        data = json.loads(record.read_text())
        return {
            "epochs_done": data.get("epochs_done"), "iterations_done": data.get("iterations_done"),
            "stop_reason": data.get("stop_reason"), "schedule": data.get("schedule"),
            "torch_threads": data.get("torch_threads"),
        }  # fmt: skip
    logs = sorted(fold_dir.glob("training_log_*.txt"))
    epochs = sum(line.count("Epoch time:") for log in logs for line in log.read_text(errors="replace").splitlines())
    per_epoch = None
    if (fold_dir / "debug.json").is_file():
        per_epoch = json.loads((fold_dir / "debug.json").read_text()).get("num_iterations_per_epoch")
    per_epoch = int(per_epoch) if per_epoch is not None else None
    return {"epochs_done": epochs, "iterations_done": None if per_epoch is None else epochs * per_epoch}


# ------------------------------------------------------------------------------------------------ the runs


def _data_description(data: Path, split: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "folder": str(data), "num_labelled": len(split["labelled"]), "num_unlabelled": len(split["unlabelled"]),
        "num_validation": len(split["validation"]), "num_test": len(split["test"]),
        "labelled": [i["case"] for i in split["labelled"]], "validation": [i["case"] for i in split["validation"]],
        "test": [i["case"] for i in split["test"]],
    }  # fmt: skip


def _dataset_meta(data: Path, datalist_file: str, split: Mapping[str, Any]) -> tuple[str, list[str], list[str] | None]:
    """Name, class names (background first) and channel names of a folder, as the plan reads them."""
    from crln_monai.data.dataset import read_dataset

    try:
        meta = read_dataset(data, datalist_file, cases=False)
        class_names, modalities = meta.class_names, meta.modalities
    except ValueError as e:
        raise CompareError(str(e)) from e
    if class_names is None:
        top = max(int(np.asanyarray(nib.load(i["label"]).dataobj).max()) for i in split["labelled"])
        class_names = ["background"] + [f"class_{c}" for c in range(1, max(top, 1) + 1)]
    return meta.name, list(class_names), modalities


def run_nnunet(
    args: argparse.Namespace, data: Path, split: dict[str, Any], work: Path, budget: float
) -> dict[str, Any]:
    """Convert, plan and preprocess, train for the budget, predict the test cases, score them."""
    name, class_names, modalities = _dataset_meta(data, args.datalist_file, split)
    env = nnunet_environment(work, args.threads, args.num_workers)
    started = time.perf_counter()
    folder = convert_to_nnunet(split, work / "nnUNet_raw", args.dataset_id, name, class_names, modalities)
    _forget_earlier_runs(work, folder.name)
    seconds = {"convert": time.perf_counter() - started}
    steps = []
    configurations = sorted({args.configuration, *args.also_preprocess})
    preprocess = run_step(
        [*nnunet_command("nnUNetv2_plan_and_preprocess"), "-d", str(args.dataset_id), "-c", *configurations,
         "-np", *[str(max(1, args.num_workers))] * len(configurations), "-npfp", str(max(1, args.num_workers)),
         "--verify_dataset_integrity", "--clean"],
        work / "logs" / "nnunet_plan_and_preprocess.log", env,
    )  # fmt: skip
    steps.append(_checked(preprocess, "nnUNetv2_plan_and_preprocess"))
    seconds["plan_and_preprocess"] = preprocess["seconds"]
    plans = json.loads((work / "nnUNet_preprocessed" / folder.name / f"{PLANS}.json").read_text())

    trainer = TIME_BUDGET_TRAINER if args.trainer == "budget" else args.trainer
    launch = time.time()
    train_env = dict(env, CRLN_NNUNET_DEADLINE=str(launch + budget), nnUNet_n_proc_DA=str(args.num_workers))
    timeout = budget + max(120.0, 0.1 * budget) if trainer == TIME_BUDGET_TRAINER else budget
    train = run_step(
        [*nnunet_command("nnUNetv2_train"), str(args.dataset_id), args.configuration, args.fold, "-tr", trainer,
         "-p", PLANS, "-device", args.device],
        work / "logs" / "nnunet_train.log", train_env, timeout=timeout,
    )  # fmt: skip
    steps.append(_checked(train, "nnUNetv2_train"))
    seconds["train"] = train["seconds"]
    fold_dir = work / "nnUNet_results" / folder.name / f"{trainer}__{PLANS}__{args.configuration}" / f"fold_{args.fold}"
    checkpoint = newest_checkpoint(fold_dir)
    result: dict[str, Any] = {
        "nnunetv2": _nnunet_version(), "dataset": folder.name, "configuration": args.configuration, "trainer": trainer,
        "fold": args.fold, "plans": _plan_summary(plans, args.configuration), "training": training_progress(fold_dir),
        "checkpoint": checkpoint, "training_timed_out": train["timed_out"], "commands": [s["command"] for s in steps],
        "seconds": seconds,
    }  # fmt: skip
    if checkpoint is None:
        result["error"] = (
            f"no checkpoint in {fold_dir} after {train['seconds']:.0f} s: no epoch ended within the budget"
        )
        return result

    predictions = work / "nnunet_predictions"
    predict = run_step(
        [*nnunet_command("nnUNetv2_predict"), "-i", str(folder / "imagesTs"), "-o", str(predictions), "-d",
         str(args.dataset_id), "-c", args.configuration, "-tr", trainer, "-p", PLANS, "-f", args.fold, "-chk",
         checkpoint, "-device", args.device, "-npp", "1", "-nps", "1", "--disable_progress_bar",
         *(["--disable_tta"] if args.no_tta else [])],
        work / "logs" / "nnunet_predict.log", env,
    )  # fmt: skip
    steps.append(_checked(predict, "nnUNetv2_predict"))
    seconds["predict"] = predict["seconds"]
    result["commands"] = [s["command"] for s in steps]
    started = time.perf_counter()
    summary = score_predictions(
        split["test"], lambda case: predictions / f"{case}.nii.gz", class_names, work / "reports" / "nnunet",
        title=f"nnU-Net {args.configuration} ({trainer}, fold {args.fold}), {len(split['labelled'])} labelled cases",
        method=f"nnU-Net v2 {args.configuration}, supervised", checkpoint=checkpoint,
    )  # fmt: skip
    seconds["score"] = time.perf_counter() - started
    result.update(classes=class_rows(summary), report=str(work / "reports" / "nnunet" / "summary.md"))
    return result


def _forget_earlier_runs(work: Path, dataset: str) -> None:
    """Remove what an earlier run in ``work`` left for this data set: nnU-Net lists the cases to train from its
    preprocessed folder and would predict from an old checkpoint, and the bundle refuses a used run folder."""
    for stale in (work / "nnUNet_preprocessed" / dataset, work / "nnUNet_results" / dataset, work / "runs" / "crln",
                  work / "nnunet_predictions"):  # fmt: skip
        if stale.exists():
            shutil.rmtree(stale)


def _nnunet_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("nnunetv2")
    except Exception:  # noqa: BLE001 - only reported
        return None


def _plan_summary(plans: Mapping[str, Any], configuration: str) -> dict[str, Any]:
    config = plans["configurations"][configuration]
    return {
        "transpose_forward": plans["transpose_forward"], "patch_size": config["patch_size"],
        "batch_size": config["batch_size"], "spacing": config["spacing"],
        "normalization_schemes": config.get("normalization_schemes"),
    }  # fmt: skip


def run_ours(args: argparse.Namespace, data: Path, split: dict[str, Any], work: Path, budget: float) -> dict[str, Any]:
    """Plan for the same wall time (the probe included), train CRLN through bundles/custom, score as nnU-Net."""
    import budget_protocol

    from crln_monai.plan import format_table, plan_dataset

    started = time.perf_counter()
    plan = plan_dataset(
        data, args.datalist_file, num_labelled=args.num_labelled[0], device=args.device, time_budget=budget,
        num_workers=args.num_workers, train_config=CONFIGS / "train.json",
    )  # fmt: skip
    plan_seconds = time.perf_counter() - started
    print(format_table(plan), flush=True)
    planned = (plan.overrides["num_labelled"], plan.overrides["num_validation"])
    if planned != (split["num_labelled"], split["num_validation"]):
        raise RuntimeError(
            f"the plan's split ({plan.overrides['num_labelled']} labelled, {plan.overrides['num_validation']} "
            f"validation) is not the one nnU-Net got ({split['num_labelled']}, {split['num_validation']})."
        )
    result = budget_protocol._crln_run("crln", plan, work, {"device": f"$torch.device('{args.device}')"})
    class_names = plan.overrides["class_names"]
    predictions = work / "runs" / "crln" / "eval" / "predictions"
    summary = score_predictions(
        split["test"], lambda case: predictions / f"{case}_seg.nii.gz", class_names, work / "reports" / "crln",
        title=f"CRLN ({plan.overrides['backbone']}), {len(split['labelled'])} labelled + {len(split['unlabelled'])} "
        "unlabelled cases", method="CRLN (bundles/custom)", checkpoint="model_last.pt",
    )  # fmt: skip
    result.update(
        plan_seconds=plan_seconds, plan_summary=plan.summary, bundle_classes=result.pop("classes"),
        classes=class_rows(summary), report=str(work / "reports" / "crln" / "summary.md"),
        bundle_report=result.pop("report"),
    )  # fmt: skip
    return result


def portable(value: Any) -> Any:
    """``value`` with this checkout's absolute paths made relative (``.`` = the repository) and this Python named
    ``python``, so that results can be shared."""
    if isinstance(value, str):
        return value.replace(sys.executable, "python").replace(str(REPO) + os.sep, "").replace(str(REPO.parent), "..")
    if isinstance(value, Mapping):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    return value


def results_markdown(payload: Mapping[str, Any]) -> str:
    failed = {k: v["error"] for k, v in payload["results"].items() if "classes" not in v and "error" in v}
    results = {k: v for k, v in payload["results"].items() if "classes" in v}
    lines = [
        f"# Against nnU-Net: {payload['data']['folder']}",
        "",
        f"- command: `{payload['command']}`",
        f"- machine: {payload['machine']['processor']}, {payload['machine']['cpu_count']} cores, torch "
        f"{payload['machine']['torch']}, device {payload['device']}, threads {payload['threads'] or 'default'}; "
        f"budget {payload['budget_seconds'] / 60:.1f} min of training per method, one after the other",
        f"- cases: {payload['data']['num_labelled']} labelled, {payload['data']['num_unlabelled']} unlabelled (CRLN "
        f"only), {payload['data']['num_validation']} validation (neither trains on them), "
        f"{payload['data']['num_test']} test; scored in each test image's geometry by crln_monai.evaluation "
        "(mean ± bootstrap std over cases)",
    ]
    lines += [f"- {method}: {error}" for method, error in failed.items()]
    if not results:
        return "\n".join(lines + ["", "No method produced predictions."]) + "\n"
    lines.append("")
    names = [n for n in next(iter(results.values()))["classes"] if n != "mean"]
    names += ["mean"] if len(names) > 1 else []  # the mean over the foreground classes, when there are several
    lines += [
        "| method | steps | train s | " + " | ".join(f"{n} Dice (%)" for n in names)
        + " | " + " | ".join(f"{n} HD95 (mm)" for n in names) + " | empty predictions |",
        "|---|---|---|" + "---|" * (2 * len(names) + 1),
    ]
    for method, r in results.items():
        if method == "nnunet":
            t = r["training"]
            steps = (
                f"{t.get('iterations_done')} iterations in {t.get('epochs_done')} epochs ({r['trainer']}, "
                f"{r['checkpoint']})"
            )
            label = f"nnU-Net {r['configuration']} (labelled only)"
            seconds = r["seconds"]["train"]
        else:
            steps = f"{r['iterations']} iterations ({r['backbone']} {r['patch_size']} × {r['batch']})"
            label = "CRLN (labelled + unlabelled)"
            seconds = r["train_seconds"]
        shown = [r["classes"][n] for n in names]
        dice = [f"{100 * c['dice']:.2f} ± {100 * c['dice_std']:.2f}" for c in shown]
        hd = ["—" if c["hd95_mm"] is None else f"{c['hd95_mm']:.2f} ± {c['hd95_mm_std']:.2f}" for c in shown]
        empty = ", ".join(f"{n} {c['empty_predictions']}" for n, c in r["classes"].items() if n != "mean")
        lines.append(f"| {label} | {steps} | {seconds:.0f} | " + " | ".join(dice + hd) + f" | {empty} |")
    return "\n".join(lines) + "\n"


def run_plans(args: argparse.Namespace, folders: Sequence[Path], work: Path) -> dict[str, Any]:
    """nnU-Net's plans and ours for each folder, side by side."""
    from crln_monai.plan import PlanError, plan_dataset

    payload: dict[str, Any] = {
        "script": "compare_nnunet", "mode": "plans_only", "command": command_line(__file__, args.argv),
        "machine": machine_info(None), "nnunetv2": _nnunet_version(), "memory_gib": args.memory_gib,
        "iterations": args.iterations, "datasets": [],
    }  # fmt: skip
    for index, (data, num_labelled) in enumerate(zip(folders, args.num_labelled)):
        dataset_id = args.dataset_id + index
        split = our_split(data, args.datalist_file, num_labelled)
        name, class_names, modalities = _dataset_meta(data, args.datalist_file, split)
        sub = work / f"plans_{dataset_id}"
        env = nnunet_environment(sub, args.threads, args.num_workers)
        folder = convert_to_nnunet(
            split, sub / "nnUNet_raw", dataset_id, name, class_names, modalities, include_test=False
        )
        _forget_earlier_runs(sub, folder.name)
        steps = [
            _checked(run_step(
                [*nnunet_command("nnUNetv2_extract_fingerprint"), "-d", str(dataset_id), "-np",
                 str(max(1, args.num_workers)), "--verify_dataset_integrity", "--clean"],
                sub / "logs" / "fingerprint.log", env,
            ), "nnUNetv2_extract_fingerprint"),
            _checked(run_step(
                [*nnunet_command("nnUNetv2_plan_experiment"), "-d", str(dataset_id), "-gpu_memory_target",
                 f"{args.memory_gib:g}"], sub / "logs" / "plan_experiment.log", env,
            ), "nnUNetv2_plan_experiment"),
        ]  # fmt: skip
        preprocessed = sub / "nnUNet_preprocessed" / folder.name
        nnunet_plans = json.loads((preprocessed / f"{PLANS}.json").read_text())
        fingerprint = json.loads((preprocessed / "dataset_fingerprint.json").read_text())
        ours: dict[str, dict[str, Any] | None] = {}
        started = time.perf_counter()
        chosen_plan = plan_dataset(
            data, args.datalist_file, num_labelled=num_labelled, iterations=args.iterations, device="cuda",
            memory_gib=args.memory_gib, num_workers=1,
        )  # fmt: skip
        chosen = "2d" if chosen_plan.overrides["backbone"] == "unet2d" else "3d"
        ours[chosen] = _with_median_shape(chosen_plan)
        other = "3d" if chosen == "2d" else "2d"
        try:
            ours[other] = _with_median_shape(plan_dataset(
                data, args.datalist_file, num_labelled=num_labelled, iterations=args.iterations, device="cuda",
                memory_gib=args.memory_gib, num_workers=1, configuration=other,
            ))  # fmt: skip
        except PlanError as e:
            print(f"ours {other}: {e}", flush=True)
            ours[other] = None
        our_seconds = time.perf_counter() - started
        axes = file_world_axes(nib.load(_files(split["labelled"][0])[0]).affine)
        median = _median_spacing(split, chosen_plan.overrides["orientation"])
        table = plans_table(nnunet_plans, ours, axes, chosen, fingerprint, median)
        title = f"{name}: {len(split['labelled'])} labelled cases ({data.name})"
        print(table_markdown(title, table), flush=True)
        payload["datasets"].append({
            "title": title, "folder": str(data), "split": _data_description(data, split), "table": table,
            "nnunet_commands": [s["command"] for s in steps], "nnunet_seconds": sum(s["seconds"] for s in steps),
            "our_seconds": our_seconds, "nnunet_plans": nnunet_plans, "our_plans": ours,
            "our_chosen_summary": chosen_plan.summary,
        })  # fmt: skip
        write_json(portable(payload), args.out)
    markdown = Path(args.markdown) if args.markdown else Path(args.out).with_suffix(".md")
    markdown.write_text(portable(
        f"# nnU-Net's plans and ours\n\n- command: `{payload['command']}`\n- machine: "
        f"{payload['machine']['processor']}, {payload['machine']['cpu_count']} cores; "
        f"nnunetv2 {payload['nnunetv2']}\n\n"
        + "\n".join(table_markdown(d["title"], d["table"]) for d in payload["datasets"])
    ))
    print(f"wrote {args.out} and {markdown}", flush=True)
    return payload


def _with_median_shape(plan: Any) -> dict[str, Any]:
    """The plan's overrides plus ``_median_shape`` (read from its printed reason for the patch)."""
    overrides = dict(plan.overrides)
    why = next((w for k, _, w in plan.rows if k == "patch_size"), "")
    match = re.search(r"median shape \[([\d, ]+)\]", why)
    overrides["_median_shape"] = [int(v) for v in match.group(1).split(",")] if match else None
    return overrides


def _median_spacing(split: Mapping[str, Any], orientation: str) -> list[float]:
    """Median voxel size of the train and validation cases, in ``orientation``'s axis order."""
    spacings = []
    for item in split["labelled"] + split["unlabelled"] + split["validation"]:
        image = nib.load(_files(item)[0])
        zooms = [float(z) for z in image.header.get_zooms()[:3]]
        axes = file_world_axes(image.affine)
        spacings.append([zooms[axes.index(WORLD_AXIS[c])] for c in orientation])
    return [round(float(v), 4) for v in np.median(np.array(spacings), axis=0)]


# --------------------------------------------------------------------------------------------- entry point


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="data folder(s), or example:anisotropic / example:ct / example:smoke")
    parser.add_argument("--num_labelled", type=int, nargs="+", required=True, help="labelled cases (one per folder)")
    parser.add_argument("--work_dir", required=True, help="nnU-Net's folders, runs, logs and reports")
    parser.add_argument("--out", required=True, help="results JSON (the Markdown goes beside it)")
    parser.add_argument("--datalist_file", default="dataset.json")
    parser.add_argument("--time", default=None, help="training wall time per method, e.g. 30m (not with --plans_only)")
    parser.add_argument("--plans_only", action="store_true", help="plans side by side, no training")
    parser.add_argument("--ours", action="store_true", help="also plan and train CRLN for the same time")
    parser.add_argument("--configuration", choices=NNUNET_CONFIGURATIONS, default="3d_fullres")
    parser.add_argument("--also_preprocess", nargs="*", choices=NNUNET_CONFIGURATIONS, default=[],
                        help="more nnU-Net configurations to preprocess (e.g. 2d)")  # fmt: skip
    parser.add_argument("--trainer", default="budget",
                        help=f"'budget' ({TIME_BUDGET_TRAINER}) or an nnU-Net trainer, e.g. "
                        "nnUNetTrainer_5epochs")  # fmt: skip
    parser.add_argument("--fold", default="all", help="nnU-Net fold: all (every labelled case trains) or 0..4")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when there is a GPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of both (default: $OMP_NUM_THREADS)")
    parser.add_argument("--num_workers", type=int, default=1, help="nnU-Net's augmentation processes (0: in-process)")
    parser.add_argument("--no_tta", action="store_true", help="nnUNetv2_predict --disable_tta (mirroring: default)")
    parser.add_argument("--dataset_id", type=int, default=901, help="nnU-Net dataset id (+1 for each more folder)")
    parser.add_argument("--iterations", type=int, default=40_000, help="--plans_only: our plan's budget (no probe)")
    parser.add_argument("--memory_gib", type=float, default=NNUNET_GPU_GIB, help="--plans_only: both tools' GPU target")
    parser.add_argument("--markdown", default=None, help="--plans_only: the tables' Markdown (default: beside --out)")
    return parser


def validate(args: argparse.Namespace) -> None:
    """Every argument, before any work (one-line :class:`CompareError`)."""
    if args.plans_only:
        if args.ours or args.time is not None:
            raise CompareError("--plans_only trains nothing: drop --ours and --time.")
    else:
        if args.time is None:
            raise CompareError("give the training time per method with --time (e.g. 30m), or use --plans_only.")
        if len(args.data) != 1:
            raise CompareError(f"a comparison takes one data folder, got {len(args.data)}; --plans_only takes several.")
    if len(args.num_labelled) not in (1, len(args.data)):
        raise CompareError(
            f"--num_labelled takes one value or one per folder ({len(args.data)}), got {args.num_labelled}."
        )
    if any(n < 1 for n in args.num_labelled):
        raise CompareError(f"--num_labelled must be >= 1, got {args.num_labelled}.")
    args.num_labelled = args.num_labelled * (len(args.data) if len(args.num_labelled) == 1 else 1)
    for item in args.data:
        if item.startswith("example:"):
            if item.split(":", 1)[1] not in EXAMPLES:
                raise CompareError(f"unknown example {item!r}; expected example:{', example:'.join(EXAMPLES)}.")
        elif not Path(item).is_dir():
            raise CompareError(f"data folder {item} does not exist.")
    if Path(args.work_dir).exists() and not Path(args.work_dir).is_dir():
        raise CompareError(f"--work_dir {args.work_dir} is a file; expected a folder.")
    if Path(args.out).is_dir() or not args.out.endswith(".json"):
        raise CompareError(f"--out must be a .json file path, got {args.out}.")
    if not 1 <= args.dataset_id <= 999 - len(args.data) + 1:
        raise CompareError(
            f"--dataset_id must leave ids in 1..999 for {len(args.data)} folder(s), got {args.dataset_id}."
        )
    if args.fold != "all" and args.fold not in {str(i) for i in range(5)}:
        raise CompareError(f"--fold must be all or 0..4, got {args.fold!r}.")
    if args.trainer != "budget" and not re.fullmatch(r"nnUNetTrainer\w*", args.trainer):
        raise CompareError(
            f"--trainer must be 'budget' or an nnU-Net trainer class name (nnUNetTrainer...), got {args.trainer!r}."
        )
    if args.threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        args.threads = int(os.environ["OMP_NUM_THREADS"])
    if args.threads is not None and args.threads < 1:
        raise CompareError(f"--threads must be >= 1, got {args.threads}.")
    if args.num_workers < 0:
        raise CompareError(f"--num_workers must be >= 0, got {args.num_workers}.")
    if args.iterations < 1 or args.memory_gib <= 0:
        raise CompareError(f"--iterations and --memory_gib must be positive, got {args.iterations}, {args.memory_gib}.")
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise CompareError("--device cuda, but this machine has no GPU.")
    if args.time is not None:
        from crln_monai.plan.planner import parse_duration

        try:
            args.budget = parse_duration(args.time)
        except ValueError as e:
            raise CompareError(str(e)) from e
        if args.ours and args.budget < 60:
            raise CompareError(f"--ours plans CRLN for the budget, which must be at least 1 minute, got {args.time}.")
    commands = ("nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment") if args.plans_only else (
        "nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict"
    )  # fmt: skip
    for name in commands:
        nnunet_command(name)


def _resolve_data(args: argparse.Namespace, work: Path) -> list[Path]:
    return [
        make_example(item.split(":", 1)[1], work / "data" / item.split(":", 1)[1]) if item.startswith("example:")
        else Path(item).resolve()
        for item in args.data
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        validate(args)
        work = Path(args.work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        folders = _resolve_data(args, work)
        if args.plans_only:
            return run_plans(args, folders, work)
        data = folders[0]
        split = our_split(data, args.datalist_file, args.num_labelled[0])
        if not split["test"] or any("label" not in item for item in split["test"]):
            raise CompareError(f"{data}: the comparison scores the test cases and needs every one labelled "
                               f"({len(split['test'])} test cases, test_ids / imagesTs + labelsTs).")  # fmt: skip
        if args.fold != "all" and len(split["labelled"]) < 5:
            raise CompareError(f"--fold {args.fold} needs at least 5 labelled cases for nnU-Net's five folds; use all.")
    except CompareError as e:
        parser.exit(2, f"compare_nnunet: {e}\n")
    if args.threads is not None:  # the CRLN subprocesses inherit it too
        os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    payload: dict[str, Any] = {
        "script": "compare_nnunet", "command": command_line(__file__, argv), "machine": machine_info(None),
        "device": args.device, "threads": args.threads, "num_workers": args.num_workers,
        "budget_seconds": args.budget, "data": _data_description(data, split), "results": {},
    }  # fmt: skip
    payload["results"]["nnunet"] = run_nnunet(args, data, split, work, args.budget)
    print("[nnunet] " + json.dumps(payload["results"]["nnunet"].get("classes")), flush=True)
    write_json(portable(payload), args.out)
    if args.ours:
        payload["results"]["crln"] = run_ours(args, data, split, work, args.budget)
        print("[crln] " + json.dumps(payload["results"]["crln"]["classes"]), flush=True)
        write_json(portable(payload), args.out)
    Path(args.out).with_suffix(".md").write_text(portable(results_markdown(payload)))
    print(results_markdown(payload), flush=True)
    return payload


if __name__ == "__main__":
    main()
