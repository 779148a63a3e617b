"""The output side shared by every converter: case files, the per-case loop, ``dataset.json`` and its protocol block.

Output layout (Decathlon, read by :func:`crln_monai.data.semi_supervised_datalist`)::

    out_dir/imagesTr/<case>.nii.gz
    out_dir/labelsTr/<case>.nii.gz
    out_dir/dataset.json          # training, train_ids, test_ids (+ val_ids), labels, modality, protocol, ...
    out_dir/.crln_prepare.json    # the converter and its settings (guards against mixing two settings)

All or nothing (:func:`write_converted`, :func:`staged_output`): a converter writes into a temporary folder inside
``out_dir`` (``.prepare-*.tmp``) that starts as hard links of the folder's earlier ``imagesTr``, ``labelsTr``,
``dataset.json`` and settings record; only when every case and the ``dataset.json`` are written are these entries
moved into place, one rename each, ``dataset.json`` last (:func:`crln_monai.io.staged_folder`). A corrupt source
case, a bad argument found late or an interrupt leaves ``out_dir`` as it was (a folder the run created is removed
again); a temporary folder left by a killed run is removed by the next one. Anything else in ``out_dir`` is never
touched.

A case whose two files exist and are intact is skipped unless ``overwrite`` (its hard link is kept); files are
written atomically, and a rerun changes nothing (same bytes, same modification times: the entries are not even
swapped when they hold the same files).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from ...io import atomic_write, staged_folder
from .nifti_io import is_complete_nifti_gz, nifti_gz_bytes, write_text_if_changed

__all__ = [
    "CONVERT_EXTRA_HINT",
    "case_paths",
    "check_settings",
    "convert_cases",
    "dataset_json",
    "normalise_num_labelled",
    "staged_output",
    "write_converted",
    "write_dataset_json",
]

CONVERT_EXTRA_HINT = "pip install crln-monai[convert]"
"""What to install for the optional readers (h5py, pynrrd, pydicom)."""

_SETTINGS_FILE = ".crln_prepare.json"
OUTPUT_ENTRIES = ("imagesTr", "labelsTr", _SETTINGS_FILE, "dataset.json")
"""The top-level entries of ``out_dir`` a converter writes (and replaces as a whole), ``dataset.json`` last."""


def case_paths(out_dir: str | os.PathLike, case: str) -> tuple[Path, Path]:
    """``(imagesTr/<case>.nii.gz, labelsTr/<case>.nii.gz)`` under ``out_dir``."""
    out_dir = Path(out_dir)
    return out_dir / "imagesTr" / f"{case}.nii.gz", out_dir / "labelsTr" / f"{case}.nii.gz"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


def _settings_record(converter: str, settings: Mapping[str, Any]) -> str:
    return _dumps({"converter": converter, "settings": dict(settings)})


def check_settings(out_dir: str | os.PathLike, converter: str, settings: Mapping[str, Any], overwrite: bool) -> None:
    """Refuse to mix the converter and its settings with an earlier run's in ``out_dir`` (before any work; the record
    itself is written with the data set by :func:`write_converted`).

    Raises:
        ValueError: ``out_dir`` was prepared by another converter or with other settings and ``overwrite`` is False.
    """
    path = Path(out_dir) / _SETTINGS_FILE
    record = json.loads(_settings_record(converter, settings))
    if path.is_file() and not overwrite:
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous != record:
            raise ValueError(
                f"{out_dir} was prepared with other settings ({path}: {previous}); now {record}. Skipping its "
                "existing cases would mix the two: pass overwrite=True or choose another out_dir."
            )


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _mirror(source: Path, target: Path) -> None:
    """``target`` as a tree of hard links to ``source``'s files (copies where links are not possible)."""
    if source.is_file() or source.is_symlink():
        _link_or_copy(source, target)
        return
    if not source.is_dir():
        return
    target.mkdir()
    for folder, subfolders, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        for name in subfolders:
            (target / relative / name).mkdir(exist_ok=True)
        for name in files:
            _link_or_copy(Path(folder) / name, target / relative / name)


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder inside ``out_dir`` holding hard links of its converter entries (:data:`OUTPUT_ENTRIES`), to
    write a data set into; its entries replace ``out_dir``'s when the block succeeds, else ``out_dir`` stays as it was
    (:func:`crln_monai.io.staged_folder`; see the module docstring).

    Raises:
        ValueError: ``out_dir`` is a file.
    """
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ValueError(f"out_dir {target} is a file; expected a folder (created when missing).")
    with staged_folder(target, "prepare", last=("dataset.json",)) as stage:
        for name in OUTPUT_ENTRIES:
            _mirror(target / name, stage / name)
        yield stage


def write_converted(
    name: str,
    out_dir: str | os.PathLike,
    settings: Mapping[str, Any],
    cases: Sequence[str],
    convert_one: Callable[[str], tuple[nib.Nifti1Image, nib.Nifti1Image]],
    meta: Mapping[str, Any],
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """A converter's whole output, all or nothing (:func:`staged_output`): the settings record, every case
    (:func:`convert_cases`) and ``dataset.json``.

    Args:
        name: the converter (its settings record and messages).
        out_dir: the data set folder.
        settings: the converter's settings (checked first with :func:`check_settings`).
        cases: case ids, in order.
        convert_one: ``case -> (image NIfTI, label NIfTI)`` (see :func:`convert_cases`).
        meta: the ``dataset.json`` content.
        overwrite: rewrite complete cases too.
        progress: show the progress bar.

    Returns:
        ``out_dir``.
    """
    with staged_output(out_dir) as stage:
        write_text_if_changed(_settings_record(name, settings), stage / _SETTINGS_FILE)
        convert_cases(name, cases, convert_one, stage, overwrite, progress, target=out_dir)
        write_dataset_json(stage, meta)
    return Path(out_dir)


def _require_finite(name: str, case: str, image: nib.Nifti1Image) -> None:
    """Refuse to write an image with NaN / Inf voxels (it would train on NaN and predict background at inference).

    Raises:
        ValueError: ``<converter>: case '<id>': the image holds N NaN and M Inf voxels of K ...``.
    """
    values = np.asarray(image.dataobj)
    slope, inter = image.header.get_slope_inter()
    scaling = [v for v in (slope, inter) if v is not None]
    if np.issubdtype(values.dtype, np.integer) and np.all(np.isfinite(scaling)):
        return
    finite = np.isfinite(values)
    if finite.all() and np.all(np.isfinite(scaling)):
        return
    nan = int(np.isnan(values).sum())
    raise ValueError(
        f"{name}: case {case!r}: the image holds {nan} NaN and {values.size - int(finite.sum()) - nan} Inf voxels "
        f"of {values.size} (scaling {scaling}); refusing to write it: expected finite intensities."
    )


def convert_cases(
    name: str,
    cases: Sequence[str],
    convert_one: Callable[[str], tuple[nib.Nifti1Image, nib.Nifti1Image]],
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    progress: bool = True,
    target: str | os.PathLike | None = None,
) -> tuple[int, int]:
    """Convert the cases one by one with a progress bar; skip complete ones; print a summary line.

    Each case's image and label are both computed before either is written, so a case that fails leaves no file
    of its own behind (and :func:`write_converted` drops the cases before it: ``out_dir`` is then its staging folder).

    Args:
        name: converter name for the progress bar and the summary.
        cases: case ids, in order.
        convert_one: ``case -> (image NIfTI, label NIfTI)``; raises ``ValueError``/``FileNotFoundError`` naming
            the case and file on bad input. An image with NaN or Inf voxels is refused here, naming the case,
            before anything of it is written.
        out_dir: output folder.
        overwrite: rewrite complete cases too.
        progress: show the tqdm bar.
        target: the folder named in the summary line (default ``out_dir``).

    Returns:
        ``(written, skipped)`` case counts.
    """
    written = skipped = 0
    start = time.perf_counter()
    for case in tqdm(cases, desc=name, unit="case", disable=not progress):
        image_path, label_path = case_paths(out_dir, case)
        if not overwrite and is_complete_nifti_gz(image_path) and is_complete_nifti_gz(label_path):
            skipped += 1
            continue
        try:
            image, label = convert_one(case)
        except (ValueError, FileNotFoundError, ImportError, MemoryError):
            raise
        except Exception as e:  # a reader's own error type: add the case
            raise ValueError(f"{name}: case {case!r} failed: {type(e).__name__}: {e}") from e
        _require_finite(name, case, image)
        image_bytes, label_bytes = nifti_gz_bytes(image), nifti_gz_bytes(label)
        atomic_write(image_path, image_bytes, fsync=True)
        atomic_write(label_path, label_bytes, fsync=True)
        written += 1
    seconds = time.perf_counter() - start
    per_case = f", {seconds / written:.2f} s per written case" if written else ""
    print(
        f"{name}: {written} case(s) written, {skipped} skipped (already complete) in {seconds:.1f} s{per_case}"
        f" -> {target if target is not None else out_dir}"
    )
    return written, skipped


def normalise_num_labelled(num_labelled: int | Sequence[int], num_train: int) -> tuple[int, ...]:
    """``num_labelled`` as a tuple of ints in ``1..num_train``.

    Raises:
        ValueError: a value outside ``1..num_train`` or not an int.
    """
    values = (num_labelled,) if isinstance(num_labelled, int) else tuple(num_labelled)
    for n in values:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= num_train:
            raise ValueError(
                f"num_labelled must hold ints in 1..{num_train} (the train list size), got {num_labelled!r}."
            )
    return values


def _protocol(train_ids: Sequence[str], num_labelled: Sequence[int]) -> dict[str, Any]:
    block: dict[str, Any] = {
        "rule": "labelled = the first N ids of train_ids; the other train_ids are the unlabelled pool",
    }
    for n in num_labelled:
        key = f"{100 * n / len(train_ids):g}%"
        if key in block:
            raise ValueError(f"num_labelled {list(num_labelled)} names the protocol {key} twice.")
        block[key] = {"num_labelled": n, "labelled_ids": list(train_ids[:n])}
    return block


def dataset_json(
    *,
    name: str,
    description: str,
    reference: str,
    modality: Mapping[str, str],
    labels: Mapping[str, str],
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    num_labelled: Sequence[int],
    val_ids: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Decathlon-style ``dataset.json`` as a dict.

    ``training`` lists every case (train, then val, then test ids) with relative ``./imagesTr``/``./labelsTr``
    paths; ``train_ids``/``val_ids``/``test_ids`` hold case ids; ``protocol`` names the labelled ids of each ``N``.
    """
    ordered = [*train_ids, *(val_ids or []), *test_ids]
    meta: dict[str, Any] = {
        "name": name,
        "description": description,
        "reference": reference,
        "tensorImageSize": "4D" if len(modality) > 1 else "3D",
        "modality": dict(modality),
        "labels": dict(labels),
        **(dict(extra) if extra else {}),
        "numTraining": len(ordered),
        "training": [
            {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"} for case in ordered
        ],
        "train_ids": list(train_ids),
    }
    if val_ids is not None:
        meta["val_ids"] = list(val_ids)
    meta["test_ids"] = list(test_ids)
    meta["protocol"] = _protocol(train_ids, num_labelled)
    return meta


def write_dataset_json(out_dir: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``out_dir/dataset.json`` (atomically, only when its content changes). Returns the path."""
    path = Path(out_dir) / "dataset.json"
    write_text_if_changed(_dumps(meta), path)
    return path
