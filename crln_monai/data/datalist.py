"""Semi-supervised datalists: labelled / unlabelled / validation / test from a NIfTI data set folder.

Two folder layouts are understood:

* **Decathlon** — a dataset json (``dataset.json`` unless ``datalist_file`` names another, e.g.
  ``dataset_unlabelled.json``) with a ``training`` list of ``{"image", "label"}`` entries (paths relative
  to the data set folder), optional ``train_ids`` / ``val_ids`` / ``test_ids`` (case ids, not paths; ``val_ids``
  is a published validation split such as BraTS 2019's, read as the validation list), optional top-level
  ``unlabelled`` and ``test`` lists of image-only cases (a path string or ``{"image": ...}``). A ``training``
  entry without ``"label"`` is an image-only (truly unlabelled) case.
* **nnU-Net** — ``imagesTr/<case>_0000<ending>`` (``_0001``... for more channels), ``labelsTr/<case><ending>``
  (optional per case: a case without a label file is unlabelled), ``imagesTs/`` (and optionally ``labelsTs/``)
  as the test set; ``dataset.json`` (optional) may give ``file_ending`` and ``channel_names``. The folder is
  scanned only when the json has the default name and is absent or has no ``training`` list (nnU-Net v2's).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write

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

_DEFAULT_DATALIST_FILE = "dataset.json"

_KNOWN_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".h5", ".hdf5", ".npy", ".npz", ".gz")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class _Case:
    """One case of a data set: id, image file(s) and the label file if there is one (absolute paths)."""

    case: str
    image: str | tuple[str, ...]
    label: str | None

    def as_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"image": list(self.image) if isinstance(self.image, tuple) else self.image}
        if self.label is not None:
            item["label"] = self.label
        item["case"] = self.case
        return item


def case_id_from_filename(path: str | os.PathLike, strip_channel: bool = False) -> str:
    """Case id of an image or label file: its name without the file ending.

    Args:
        path: file path, e.g. ``"./imagesTr/la_003.nii.gz"``.
        strip_channel: also drop an nnU-Net channel suffix ``_0000`` (``la_003_0000.nii.gz`` → ``la_003``).

    Returns:
        the case id (``"la_003"``).
    """
    name = Path(path).name
    for ending in _KNOWN_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            name = name[: -len(ending)]
            break
    if strip_channel:
        match = _CHANNEL_SUFFIX.match(name)
        if match:
            name = match.group("case")
    return name


def split_channel_suffix(path: str | os.PathLike) -> tuple[str, int | None]:
    """Case id and nnU-Net channel of an image file: ``la_003_0001.nii.gz`` → ``("la_003", 1)``; a name without a
    channel suffix ``_XXXX`` → ``(its id, None)`` (the id :func:`case_id_from_filename` gives, ``strip_channel``)."""
    name = case_id_from_filename(path)
    match = _CHANNEL_SUFFIX.match(name)
    return (match.group("case"), int(match.group("channel"))) if match else (name, None)


def _read_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); expected a dataset description object.") from e


def _absolute(dataset_dir: Path, relative: str) -> str:
    return os.path.normpath(os.path.join(dataset_dir, relative))


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path} is listed but missing on disk.")


# ------------------------------------------------------------------------------------------ Decathlon layout


def _parse_entry(entry: Any, where: str, dataset_dir: Path) -> _Case:
    """One Decathlon entry: ``"path"`` or ``{"image": path | [paths], "label": path (optional)}``."""
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, Mapping) or "image" not in entry:
        raise ValueError(
            f"{where}: expected an image path or an object with an 'image' key, got {entry!r}."
        )
    image = entry["image"]
    if isinstance(image, str):
        image_paths: str | tuple[str, ...] = _absolute(dataset_dir, image)
        first = image
    elif isinstance(image, Sequence) and image and all(isinstance(p, str) for p in image):
        image_paths = tuple(_absolute(dataset_dir, p) for p in image)
        first = image[0]
    else:
        raise ValueError(
            f"{where}: 'image' must be a path string or a non-empty list of them, got {image!r}."
        )
    label = entry.get("label")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"{where}: 'label' must be a path string, got {label!r}.")
    case = case_id_from_filename(first, strip_channel=isinstance(image_paths, tuple))
    return _Case(case, image_paths, None if label is None else _absolute(dataset_dir, label))


def _parse_list(meta: Mapping, key: str, dataset_dir: Path, source: str) -> list[_Case]:
    entries = meta.get(key, [])
    if not isinstance(entries, list):
        raise ValueError(f"{source} '{key}' must be a list of entries, got {type(entries).__name__}.")
    return [_parse_entry(e, f"{source} '{key}'[{i}]", dataset_dir) for i, e in enumerate(entries)]


def _parse_ids(meta: Mapping, key: str, source: str) -> list[str] | None:
    ids = meta.get(key)
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"{source} '{key}' must be a list of case id strings, got {ids!r:.200}.")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source} '{key}' lists a case id twice: {sorted({i for i in ids if ids.count(i) > 1})}.")
    return ids


def _select(ids: list[str], key: str, by_id: Mapping[str, _Case], source: str) -> list[_Case]:
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(
            f"{source} '{key}' names {len(missing)} case id(s) that are not in 'training', 'unlabelled' or "
            f"'test': {missing[:10]}."
        )
    return [by_id[i] for i in ids]


def _not_found(json_path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{json_path} not found; expected a dataset json with a 'training' list of {{'image', 'label'}} entries "
        "(datalist_file names it inside dataset_dir)."
    )


def _no_training(json_path: Path) -> ValueError:
    return ValueError(
        f"{json_path} has no 'training' list; expected a dataset json with 'training': "
        "[{'image': ..., 'label': ...}, ...] (a Decathlon dataset.json)."
    )


def _decathlon_cases(dataset_dir: Path, datalist_file: str) -> tuple[list[_Case], list[_Case], list[_Case]]:
    """Train, listed validation (``val_ids``) and test cases of a Decathlon-style folder, in list order."""
    json_path = dataset_dir / datalist_file
    if not json_path.is_file():
        raise _not_found(json_path)
    meta = _read_json(json_path)
    if not isinstance(meta, Mapping) or "training" not in meta:
        raise _no_training(json_path)
    source = json_path.name
    training = _parse_list(meta, "training", dataset_dir, source)
    extra_unlabelled = _parse_list(meta, "unlabelled", dataset_dir, source)
    extra_test = _parse_list(meta, "test", dataset_dir, source)
    by_id: dict[str, _Case] = {}
    for c in training + extra_unlabelled + extra_test:
        if c.case in by_id:
            raise ValueError(f"{json_path}: case id {c.case!r} appears twice (ids are file names without the ending).")
        by_id[c.case] = c
    ids = {key: _parse_ids(meta, key, source) for key in ("train_ids", "val_ids", "test_ids")}
    for first, second in (("train_ids", "val_ids"), ("train_ids", "test_ids"), ("val_ids", "test_ids")):
        both = sorted(set(ids[first] or ()) & set(ids[second] or ()))
        if both:
            raise ValueError(f"{json_path}: case id(s) in both '{first}' and '{second}': {both[:10]}.")
    train_ids, val_ids, test_ids = ids["train_ids"], ids["val_ids"], ids["test_ids"]
    test = _select(test_ids, "test_ids", by_id, source) if test_ids is not None else extra_test
    validation = _select(val_ids, "val_ids", by_id, source) if val_ids is not None else []
    without = [c.case for c in validation if c.label is None]
    if without:
        raise ValueError(f"{json_path}: 'val_ids' names case(s) without a label file: {without[:10]}.")
    held_out = {c.case for c in test + validation}
    if train_ids is not None:
        train = _select(train_ids, "train_ids", by_id, source)
        named = set(train_ids)
        train += [c for c in extra_unlabelled if c.case not in named]
    else:
        train = [c for c in training if c.case not in held_out] + extra_unlabelled
    return train, validation, test


# -------------------------------------------------------------------------------------------- nnU-Net layout


def _nnunet_images(folder: Path, ending: str, num_channels: int | None) -> dict[str, tuple[str, ...]]:
    """``{case: (channel 0 path, channel 1 path, ...)}`` of an nnU-Net images folder, sorted by case id."""
    channels: dict[str, dict[int, str]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if not path.name.endswith(ending):
            raise ValueError(
                f"{path} does not end with the file ending {ending!r} (nnU-Net layout, dataset.json 'file_ending')."
            )
        match = _CHANNEL_SUFFIX.match(path.name[: -len(ending)])
        if not match:
            raise ValueError(
                f"{path}: expected an nnU-Net image name <case>_XXXX{ending} (channel suffix _0000, _0001, ...)."
            )
        case, channel = match.group("case"), int(match.group("channel"))
        channels.setdefault(case, {})[channel] = os.path.normpath(os.path.abspath(path))
    images: dict[str, tuple[str, ...]] = {}
    for case in sorted(channels):
        found = channels[case]
        expected = num_channels if num_channels is not None else max(len(c) for c in channels.values())
        if sorted(found) != list(range(expected)):
            raise ValueError(
                f"{folder}: case {case!r} has channel files {sorted(found)}; expected channels 0..{expected - 1} "
                f"({case}_0000{ending} ...)."
            )
        images[case] = tuple(found[i] for i in range(expected))
    return images


def _nnunet_labels(folder: Path, ending: str, cases: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    if not folder.is_dir():
        return labels
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not path.name.endswith(ending):
            continue
        case = path.name[: -len(ending)]
        if case not in cases:
            raise ValueError(f"label file {path} has no matching image {case}_0000{ending}.")
        labels[case] = os.path.normpath(os.path.abspath(path))
    return labels


def _nnunet_cases(
    dataset_dir: Path, datalist_file: str = _DEFAULT_DATALIST_FILE
) -> tuple[list[_Case], list[_Case], list[_Case]]:
    """Train (``imagesTr``, sorted by case id), validation (none: the layout has no such list) and test
    (``imagesTs``) cases of an nnU-Net folder."""
    images_tr = dataset_dir / "imagesTr"
    if not images_tr.is_dir():
        raise FileNotFoundError(f"{images_tr} is missing; an nnU-Net-layout data set needs an imagesTr/ folder.")
    ending, num_channels = ".nii.gz", None
    json_path = dataset_dir / datalist_file
    if json_path.is_file():
        meta = _read_json(json_path)
        if isinstance(meta, Mapping):
            ending = meta.get("file_ending", ending)
            names = meta.get("channel_names", meta.get("modality"))
            num_channels = len(names) if isinstance(names, Mapping) and names else None
    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        folder = dataset_dir / images_dir
        images = _nnunet_images(folder, ending, num_channels) if folder.is_dir() else {}
        labels = _nnunet_labels(dataset_dir / labels_dir, ending, images)
        cases.append([_Case(c, p[0] if len(p) == 1 else p, labels.get(c)) for c, p in images.items()])
    if not cases[0]:
        raise ValueError(f"{images_tr} holds no images named <case>_0000{ending}.")
    return cases[0], [], cases[1]


def _nnunet_naming_problem(images_tr: Path, ending: str) -> str | None:
    """The first file of ``images_tr`` not named ``<case>_XXXX<ending>`` (nnU-Net), as a message; else ``None``."""
    for path in sorted(images_tr.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            stem = path.name[: -len(ending)] if path.name.endswith(ending) else case_id_from_filename(path)
            if not _CHANNEL_SUFFIX.match(stem):  # another ending alone is left to the scan's own message
                return f"{path.name} is not named <case>_0000{ending}"
    return None


def _detect_layout(dataset_dir: Path, datalist_file: str = _DEFAULT_DATALIST_FILE) -> str:
    """``"decathlon"`` or ``"nnunet"``. The folder scan (nnU-Net) is tried only with the default json name, when
    that json is absent or has no ``training`` list, and only when ``imagesTr/`` follows nnU-Net's naming."""
    json_path = dataset_dir / datalist_file
    images_tr = dataset_dir / "imagesTr"
    has_images_tr = images_tr.is_dir()
    if datalist_file != _DEFAULT_DATALIST_FILE:
        if not json_path.is_file():
            raise _not_found(json_path)
        meta = _read_json(json_path)
        if not isinstance(meta, Mapping) or "training" not in meta:
            raise _no_training(json_path)
        return "decathlon"
    if has_images_tr:
        meta = _read_json(json_path) if json_path.is_file() else None
        if not (isinstance(meta, Mapping) and "training" in meta):
            ending = meta.get("file_ending", ".nii.gz") if isinstance(meta, Mapping) else ".nii.gz"
            problem = _nnunet_naming_problem(images_tr, ending) if isinstance(ending, str) else None
            if problem is not None:  # neither a Decathlon json nor an nnU-Net folder: say what is missing first
                error = _not_found(json_path) if meta is None else _no_training(json_path)
                raise type(error)(f"{error} {images_tr} is not an nnU-Net folder either: {problem}.")
    if json_path.is_file():
        meta = _read_json(json_path)
        if isinstance(meta, Mapping) and "training" in meta:
            # nnU-Net v1 lists "./imagesTr/x.nii.gz" while the files on disk are x_0000.nii.gz
            first = meta["training"][0] if isinstance(meta["training"], list) and meta["training"] else None
            image = first.get("image") if isinstance(first, Mapping) else None
            if isinstance(image, str) and has_images_tr and not os.path.exists(_absolute(dataset_dir, image)):
                stem = case_id_from_filename(image)
                if any((dataset_dir / "imagesTr").glob(f"{stem}_0000.*")):
                    return "nnunet"
            return "decathlon"
        if has_images_tr:
            return "nnunet"
        raise ValueError(f"{_no_training(json_path)} {dataset_dir} has no imagesTr/ folder (nnU-Net layout) either.")
    if has_images_tr:
        return "nnunet"
    raise FileNotFoundError(
        f"{json_path} not found and there is no imagesTr/ folder: {dataset_dir} is not a data set folder."
    )


# ---------------------------------------------------------------------------------------------- the protocol


def _check_ids(ids: Sequence[str], argument: str, train_by_id: Mapping[str, _Case], test_ids: set[str]) -> None:
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
    train: list[_Case],
    listed_validation: list[_Case],
    test: list[_Case],
    num_labelled: int | None,
    labelled: Sequence[str] | None,
    unlabelled: Sequence[str] | None,
    num_validation: int,
    require_unlabelled: bool = True,
) -> dict[str, list[_Case]]:
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
    dataset_dir: str | os.PathLike,
    num_labelled: int | None = None,
    labelled: Sequence[str] | None = None,
    unlabelled: Sequence[str] | None = None,
    num_validation: int = 0,
    layout: str = "auto",
    use_val_ids: bool = True,
    require_unlabelled: bool = True,
    datalist_file: str = _DEFAULT_DATALIST_FILE,
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
        dataset_dir: data set folder (Decathlon or nnU-Net layout).
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
        ValueError: invalid JSON, no ``training`` list, malformed entries, unknown/duplicated ids, fewer
            labelled cases than asked, no labels for validation, ``num_validation`` together with ``val_ids``, an
            empty unlabelled pool (with ``require_unlabelled``), bad arguments.
        TypeError: an id list given as a single string.
    """
    root = Path(os.path.abspath(dataset_dir))
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist.")
    if layout not in ("auto", "decathlon", "nnunet"):
        raise ValueError(f"layout must be 'auto', 'decathlon' or 'nnunet', got {layout!r}.")
    if not isinstance(datalist_file, str) or not datalist_file:
        raise TypeError(f"datalist_file must be a json file name (str), got {datalist_file!r}.")
    if layout == "auto":
        layout = _detect_layout(root, datalist_file)
    if layout == "decathlon":
        train, validation, test = _decathlon_cases(root, datalist_file)
    else:
        train, validation, test = _nnunet_cases(root, datalist_file)
    if not isinstance(use_val_ids, bool):
        raise TypeError(f"use_val_ids must be True or False, got {use_val_ids!r}.")
    split = _split(
        train, validation if use_val_ids else [], test, num_labelled, labelled, unlabelled, num_validation,
        require_unlabelled=require_unlabelled,
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
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of lists, got {type(data).__name__}.")
    for key, items in data.items():
        if not isinstance(items, list) or not all(isinstance(i, dict) and "image" in i for i in items):
            raise ValueError(f"{path}: '{key}' must be a list of objects with an 'image' key.")
    return data


def export_name(dataset_dir: str | os.PathLike, datalist_file: str = "dataset.json") -> str:
    """The export folder's name: the data set json's ``name`` made file-safe, else the data folder's name.

    ``"ACDC: cine-MRI / 2017"`` → ``"ACDC_cine-MRI_2017"``; a json that is missing, unreadable or without a usable
    ``name`` gives ``Path(dataset_dir).name`` (``"data"`` if even that is empty).
    """
    name = ""
    try:
        meta = json.loads((Path(dataset_dir) / datalist_file).read_text())
        name = str(meta.get("name", "")) if isinstance(meta, Mapping) else ""
    except (OSError, ValueError):
        pass
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    if not safe:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(dataset_dir).resolve().name).strip("._-")
    return safe or "data"
