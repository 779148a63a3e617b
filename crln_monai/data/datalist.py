"""Semi-supervised datalists: labelled / unlabelled / validation / test from a NIfTI data set folder.

The folder (Decathlon or nnU-Net layout) is read by :func:`crln_monai.data.dataset.read_dataset`, the one reader of a
data set; this module splits its train list by the protocol and writes the datalist.

The protocol follows UA-MT and the CRLN paper (docs/method.md#data-protocols): the labelled cases are the first ``N``
cases of the train list that have labels, the rest of the train list is the unlabelled pool. MONAI's
``load_decathlon_datalist`` reads one list of a json; it has no notion of case ids, id-based splits, image-only
cases or the nnU-Net layout, hence this module.

Every returned item is ``{"image": str | list[str], "label": str, "case": str}`` with absolute paths; ``"label"``
is absent when the case has no label file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write
from .dataset import (
    Case,
    DataSet,
    case_id_from_filename,
    read_dataset,
    read_json,
    split_channel_suffix,
)

__all__ = [
    "DATALIST_KEYS",
    "case_id_from_filename",
    "export_name",
    "load_datalist_json",
    "save_datalist_json",
    "semi_supervised_datalist",
    "split_channel_suffix",
    "without_labels",
]

DATALIST_KEYS: tuple[str, ...] = ("labelled", "unlabelled", "validation", "test")
"""The keys of the dict returned by :func:`semi_supervised_datalist`."""


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path} is listed but missing on disk.")


# ---------------------------------------------------------------------------------------------- the protocol


def _check_ids(ids: Sequence[str], argument: str, train_by_id: Mapping[str, Case], test_ids: set[str]) -> None:
    if isinstance(ids, str):
        raise TypeError(f"{argument} must be a list of case ids, got the string {ids!r}.")
    duplicated = sorted({i for i in ids if list(ids).count(i) > 1})
    if duplicated:
        raise ValueError(f"{argument} lists case id(s) twice: {duplicated}.")
    unknown = [i for i in ids if i not in train_by_id]
    if unknown:
        where = [f"{i!r} (a test case)" if i in test_ids else repr(i) for i in unknown[:10]]
        raise ValueError(
            f"{argument} names {len(unknown)} case id(s) that are not in the train list: {', '.join(where)}."
        )


def _split(
    train: list[Case],
    listed_validation: list[Case],
    test: list[Case],
    num_labelled: int | None,
    labelled: Sequence[str] | None,
    unlabelled: Sequence[str] | None,
    num_validation: int,
    require_unlabelled: bool = True,
) -> dict[str, list[Case]]:
    train_by_id = {c.case: c for c in train}
    test_ids = {c.case for c in test}
    with_label = [c for c in train if c.label is not None]

    if not isinstance(num_validation, int) or num_validation < 0:
        raise ValueError(f"num_validation must be an int >= 0, got {num_validation!r}.")
    if listed_validation and num_validation:
        raise ValueError(
            f"num_validation={num_validation}, but dataset.json already names {len(listed_validation)} validation "
            "cases in 'val_ids': use num_validation=0 to validate on them, or use_val_ids=False to carve instead."
        )
    if num_validation > len(with_label):
        raise ValueError(
            f"num_validation={num_validation}: validation cases need labels, but only {len(with_label)} of the "
            f"{len(train)} train cases have a label file."
        )
    validation = listed_validation or with_label[len(with_label) - num_validation :]
    validation_ids = {c.case for c in validation}
    remaining = [c for c in train if c.case not in validation_ids]

    if num_labelled is not None and (not isinstance(num_labelled, int) or num_labelled < 1):
        raise ValueError(f"num_labelled must be an int >= 1, got {num_labelled!r}.")
    if labelled is not None:
        _check_ids(labelled, "labelled", train_by_id, test_ids)
        if num_labelled is not None and num_labelled != len(labelled):
            raise ValueError(f"num_labelled={num_labelled} but the labelled id list has {len(labelled)} ids.")
        without = [i for i in labelled if train_by_id[i].label is None]
        if without:
            raise ValueError(f"labelled names case(s) without a label file: {without[:10]}.")
        in_validation = [i for i in labelled if i in validation_ids]
        if in_validation:
            raise ValueError(
                f"labelled names case(s) carved for validation (num_validation={num_validation}): {in_validation}."
            )
        labelled_cases = [train_by_id[i] for i in labelled]
    else:
        candidates = [c for c in remaining if c.label is not None]
        wanted = len(candidates) if num_labelled is None else num_labelled
        if wanted > len(candidates):
            raise ValueError(
                f"num_labelled={num_labelled} but only {len(candidates)} train cases have label files"
                f" (after carving {num_validation} for validation)."
            )
        labelled_cases = candidates[:wanted]
    if not labelled_cases:
        raise ValueError("no labelled cases: the train list has no case with a label file.")
    labelled_ids = {c.case for c in labelled_cases}

    if unlabelled is not None:
        _check_ids(unlabelled, "unlabelled", train_by_id, test_ids)
        clash = [i for i in unlabelled if i in labelled_ids or i in validation_ids]
        if clash:
            raise ValueError(f"unlabelled names case(s) that are labelled or carved for validation: {clash[:10]}.")
        unlabelled_cases = [train_by_id[i] for i in unlabelled]
    else:
        unlabelled_cases = [c for c in remaining if c.case not in labelled_ids]
    if not unlabelled_cases and require_unlabelled:
        raise ValueError(
            f"empty unlabelled pool: all {len(train)} train cases are labelled ({len(labelled_cases)}) or carved for "
            f"validation ({len(validation)}); lower num_labelled/num_validation, add image-only cases, or train "
            "supervised-only (use_unlabelled False)."
        )
    return {"labelled": labelled_cases, "unlabelled": unlabelled_cases, "validation": validation, "test": list(test)}


def semi_supervised_datalist(
    dataset_dir: str | os.PathLike | DataSet,
    num_labelled: int | None = None,
    labelled: Sequence[str] | None = None,
    unlabelled: Sequence[str] | None = None,
    num_validation: int = 0,
    layout: str = "auto",
    use_val_ids: bool = True,
    require_unlabelled: bool = True,
    datalist_file: str = "dataset.json",
) -> dict[str, list[dict]]:
    """Split a data set folder into the labelled, unlabelled, validation and test lists of a semi-supervised run.

    The train list is ``train_ids`` (plus top-level ``unlabelled`` entries not named there) if ``dataset.json``
    has it, else the ``training`` entries in file order minus ``test_ids``, followed by the top-level
    ``unlabelled`` entries (Decathlon); or the ``imagesTr`` cases sorted by id (nnU-Net). The test list is
    ``test_ids``, else the top-level ``test`` list, else empty (Decathlon); or the ``imagesTs`` cases (nnU-Net).

    Protocol, in this order:

    1. validation: the ``val_ids`` cases of ``dataset.json`` (a published validation split, BraTS 2019's 25 cases;
       kept out of the train list), else the last ``num_validation`` train cases **that have label files** (so a
       folder whose truly unlabelled cases sit at the end still works); never test cases;
    2. labelled: the explicit ``labelled`` ids, else the first ``num_labelled`` remaining train cases that have
       labels (the paper's "first N of the train list"), else — neither given — every remaining case with labels;
    3. unlabelled: the explicit ``unlabelled`` ids, else every remaining train case (with or without label file).

    Args:
        dataset_dir: data set folder (Decathlon or nnU-Net layout), or a :class:`~crln_monai.data.dataset.DataSet`
            already read (:func:`~crln_monai.data.dataset.read_dataset`; ``layout`` and ``datalist_file`` are then its
            own).
        num_labelled: number of labelled cases ``N``.
        labelled: explicit labelled case ids (ids are file names without the ending and channel suffix).
        unlabelled: explicit unlabelled case ids.
        num_validation: number of validation cases carved from the end of the train list (0 when ``dataset.json``
            has ``val_ids`` and ``use_val_ids``).
        layout: ``"decathlon"``, ``"nnunet"`` or ``"auto"`` (``dataset.json`` with ``training`` → Decathlon,
            else ``imagesTr/`` → nnU-Net).
        use_val_ids: read ``val_ids`` as the validation list; ``False`` leaves those cases out of every list.
        datalist_file: name of the dataset json inside ``dataset_dir`` (any name, e.g. ``dataset_unlabelled.json``;
            a relative path works too). The nnU-Net folder scan is a fallback of the default name only.
        require_unlabelled: refuse an empty unlabelled pool; ``False`` (a supervised-only run) accepts a data set
            whose every train case is labelled.

    Returns:
        ``{"labelled": [...], "unlabelled": [...], "validation": [...], "test": [...]}``; items are
        ``{"image": abs path | [abs paths, one per channel], "label": abs path (only if it exists), "case": id}``.

    Raises:
        FileNotFoundError: the folder, the dataset json (``<dir>/<datalist_file> not found``; Decathlon) /
            ``imagesTr`` (nnU-Net), or a listed image/label file is missing.
        ValueError: invalid JSON or not an object, no ``training`` list, malformed entries, unknown/duplicated ids,
            fewer labelled cases than asked, no labels for validation, ``num_validation`` together with ``val_ids``,
            an empty unlabelled pool (with ``require_unlabelled``), a :class:`DataSet` read without its cases, bad
            arguments (all of the data set's own errors are :func:`~crln_monai.data.dataset.read_dataset`'s).
        TypeError: an id list given as a single string; ``datalist_file`` not a string.
    """
    if isinstance(dataset_dir, DataSet):
        dataset = dataset_dir
        if dataset.layout is None:
            raise ValueError(f"the DataSet of {dataset.root} was read without its cases (cases=False).")
    else:
        dataset = read_dataset(dataset_dir, datalist_file, layout)
    if not isinstance(use_val_ids, bool):
        raise TypeError(f"use_val_ids must be True or False, got {use_val_ids!r}.")
    split = _split(
        list(dataset.train), list(dataset.validation) if use_val_ids else [], list(dataset.test), num_labelled,
        labelled, unlabelled, num_validation, require_unlabelled=require_unlabelled,
    )  # fmt: skip
    for cases in split.values():
        for c in cases:
            for path in c.image if isinstance(c.image, tuple) else (c.image,):
                _require_file(path, f"image of case {c.case!r}:")
            if c.label is not None:
                _require_file(c.label, f"label of case {c.case!r}:")
    return {key: [c.as_item() for c in split[key]] for key in DATALIST_KEYS}


def without_labels(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of datalist items without their ``"label"`` key.

    For an unlabelled pool whose cases do have label files (LA, Pancreas): the labels are then neither loaded nor
    available to the trainer, and :class:`~crln_monai.data.transforms.EnsureLabeld` fills them with the ignore value.
    """
    return [{k: v for k, v in item.items() if k != "label"} for item in items]


def save_datalist_json(datalist: Mapping[str, Sequence[Mapping]], path: str | os.PathLike) -> Path:
    """Write a datalist (as returned by :func:`semi_supervised_datalist`) to json.

    The file is readable by ``monai.data.load_decathlon_datalist(path, True, "labelled")`` (absolute paths).

    Returns:
        the written path.
    """
    return atomic_write(path, json.dumps({k: list(map(dict, v)) for k, v in datalist.items()}, indent=2))


def load_datalist_json(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Read a datalist json written by :func:`save_datalist_json`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not valid JSON, or not ``{key: [{"image": ...}, ...]}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist json {path} does not exist.")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of lists, got {type(data).__name__}.")
    for key, items in data.items():
        if not isinstance(items, list) or not all(isinstance(i, dict) and "image" in i for i in items):
            raise ValueError(f"{path}: '{key}' must be a list of objects with an 'image' key.")
    return data


def export_name(dataset_dir: str | os.PathLike, datalist_file: str = "dataset.json") -> str:
    """The export folder's name: the data set's name (:attr:`DataSet.name <crln_monai.data.dataset.DataSet>`: the
    json's ``name``, else the folder's) made file-safe.

    ``"ACDC: cine-MRI / 2017"`` → ``"ACDC_cine-MRI_2017"``; a json that is missing, unreadable or without a usable
    ``name`` gives ``Path(dataset_dir).name`` (``"data"`` if even that is empty).
    """
    try:
        name = read_dataset(dataset_dir, datalist_file, cases=False).name
    except (OSError, ValueError):
        name = ""
    return _file_safe(name) or _file_safe(Path(dataset_dir).resolve().name) or "data"


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
