"""One reader of a data set folder: its json, read once into a :class:`DataSet`, and each image file's header.

:func:`read_dataset` reads the data set json once and lists the cases (no image is read). The datalist
(:func:`~crln_monai.data.semi_supervised_datalist`), the export's name (:func:`~crln_monai.data.export_name`), the
plan (:func:`crln_monai.plan.plan_dataset`) and the exporter's model card (:class:`crln_monai.workflow.BundleExporter`)
take the json's facts from this record. :func:`read_volume` reads one image file's shape and affine and
:func:`read_case_header` one case's geometry in RAS order; the pre-flight check (:mod:`crln_monai.data.checks`) and
the plan read headers through them.

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

Axis order: a :class:`CaseHeader`'s shape and spacing are in RAS axis order (the array after MONAI's
``Orientationd(axcodes="RAS")``), not the file's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

__all__ = [
    "LAYOUTS",
    "Case",
    "CaseHeader",
    "DataSet",
    "Volume",
    "case_id_from_filename",
    "image_channels",
    "is_nifti",
    "read_case_header",
    "read_dataset",
    "read_json",
    "read_volume",
    "same_grid",
    "split_channel_suffix",
]

LAYOUTS = ("auto", "decathlon", "nnunet")
"""The ``layout`` values :func:`read_dataset` takes."""

_DEFAULT_JSON = "dataset.json"
_KNOWN_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".h5", ".hdf5", ".npy", ".npz", ".gz")
_NIFTI_ENDINGS = (".nii.gz", ".nii")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


# ------------------------------------------------------------------------------------------------- case ids


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


# --------------------------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Case:
    """One case of a data set: id, image file(s) and the label file if there is one (absolute paths)."""

    case: str
    image: str | tuple[str, ...]
    label: str | None

    def as_item(self) -> dict[str, Any]:
        """The datalist item ``{"image": path | [paths], "label": path (only if any), "case": id}``."""
        item: dict[str, Any] = {"image": list(self.image) if isinstance(self.image, tuple) else self.image}
        if self.label is not None:
            item["label"] = self.label
        item["case"] = self.case
        return item


@dataclass(frozen=True)
class DataSet:
    """A data set folder as its json (and, in the nnU-Net layout, its file names) describes it; no image is read.

    Attributes:
        root: the folder (absolute).
        path: the json file, ``None`` when there is none (the nnU-Net layout does not need one).
        name: the json's ``name``, else the folder's name (symbolic links resolved).
        raw: the whole json object (``{}`` without a file).
        layout: ``"decathlon"`` or ``"nnunet"``; ``None`` when only the json was read (``cases=False``).
        train: the train list in order: Decathlon ``train_ids`` (plus top-level ``unlabelled`` entries not named
            there), else the ``training`` entries minus the held-out ids, then the ``unlabelled`` entries; nnU-Net
            ``imagesTr`` sorted by id.
        validation: the ``val_ids`` cases (a published validation split), else empty.
        test: ``test_ids``, else the top-level ``test`` list (Decathlon); ``imagesTs`` (nnU-Net).
    """

    root: Path
    path: Path | None
    name: str
    raw: Mapping[str, Any] = field(repr=False)
    layout: str | None = None
    train: tuple[Case, ...] = ()
    validation: tuple[Case, ...] = ()
    test: tuple[Case, ...] = ()

    @property
    def class_names(self) -> list[str] | None:
        """Names by label index from the json's ``labels`` (``{"0": name, ...}`` or ``{name: 0, ...}``); ``None``
        without ``labels``. Parsed when asked (the plan asks, the datalist does not: a ``labels`` with nnU-Net's region
        lists does not stop a training run that names its classes itself).

        Raises:
            ValueError: ``labels`` is malformed, has gaps in its indices or names fewer than 2 classes.
        """
        labels = self.raw.get("labels")
        if labels is None:
            return None
        names = _indexed_names(labels, "labels", str(self.path))
        if len(names) < 2:
            raise ValueError(
                f"{self.path} 'labels' names {len(names)} class; expected background and at least one more."
            )
        return names

    @property
    def modalities(self) -> list[str] | None:
        """Names by channel from the json's ``channel_names`` (nnU-Net) or ``modality`` (Decathlon); ``None`` without
        either.

        Raises:
            ValueError: the key is malformed or has gaps in its indices.
        """
        key = "channel_names" if "channel_names" in self.raw else "modality"
        return _indexed_names(self.raw[key], key, str(self.path)) if key in self.raw else None


def read_json(path: str | os.PathLike) -> Any:
    """The decoded content of a json file.

    Raises:
        ValueError: the file is not valid JSON (the message names it).
    """
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); expected a dataset description object.") from e


def _indexed_names(value: Any, key: str, where: str) -> list[str]:
    """``{"0": "a", "1": "b"}`` or ``{"a": 0, "b": 1}`` (or a list) → ``["a", "b"]``; indices must be 0..K-1."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{where} '{key}' must map indices to names, got {value!r:.200}.")
    if all(isinstance(k, str) and k.strip().isdigit() and isinstance(v, str) for k, v in value.items()):
        by_index = {int(k): v for k, v in value.items()}
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
        by_index = {v: k for k, v in value.items()}
    else:
        raise ValueError(
            f"{where} '{key}' must be {{\"0\": name, ...}} or {{name: 0, ...}} with single integer values "
            f"(region lists are not supported), got {value!r:.200}."
        )
    if sorted(by_index) != list(range(len(by_index))):
        indices = sorted(by_index)
        raise ValueError(f"{where} '{key}' indices are {indices}; expected 0..{len(indices) - 1} without gaps.")
    return [by_index[i] for i in range(len(by_index))]


def read_dataset(
    dataset_dir: str | os.PathLike, datalist_file: str = _DEFAULT_JSON, layout: str = "auto", cases: bool = True
) -> DataSet:
    """Read a data set folder: its json once and, with ``cases``, its case list (no image is read).

    Args:
        dataset_dir: the data set folder (Decathlon or nnU-Net layout, see the module docstring).
        datalist_file: the json's name inside ``dataset_dir`` (any name, a relative path too). Absent is allowed
            for the default name in the nnU-Net layout; the nnU-Net folder scan is a fallback of the default name only.
        layout: ``"decathlon"``, ``"nnunet"`` or ``"auto"`` (a json with ``training`` → Decathlon, else
            ``imagesTr/`` → nnU-Net).
        cases: also list the cases; ``False`` reads the json alone (name, classes, channels, raw object), also a
            json that lists no case (what an export's name and model card need).

    Returns:
        the :class:`DataSet`.

    Raises:
        TypeError: ``datalist_file`` is not a non-empty string.
        FileNotFoundError: (``cases``) the folder, the json (Decathlon, or a json named by ``datalist_file``) or
            ``imagesTr/`` (nnU-Net) is missing.
        ValueError: the json is not valid JSON or not an object; an unknown ``layout``; (``cases``) no ``training``
            list, malformed entries, unknown or duplicated ids, nnU-Net file names off its naming, malformed
            ``channel_names`` (nnU-Net).
    """
    if not isinstance(datalist_file, str) or not datalist_file:
        raise TypeError(f"datalist_file must be a json file name (str), got {datalist_file!r}.")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto', 'decathlon' or 'nnunet', got {layout!r}.")
    root = Path(os.path.abspath(dataset_dir))
    if cases and not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist.")
    json_path = root / datalist_file
    raw = read_json(json_path) if json_path.is_file() else None
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"{json_path} holds a {type(raw).__name__}; expected a dataset description object.")
    name = raw.get("name") if raw is not None else None
    name = name if isinstance(name, str) and name else root.resolve().name
    dataset = DataSet(root, json_path if raw is not None else None, name, raw if raw is not None else {})
    if not cases:
        return dataset
    if layout == "auto":
        layout = _detect_layout(root, json_path, raw, datalist_file == _DEFAULT_JSON)
    if layout == "decathlon":
        train, validation, test = _decathlon_cases(root, json_path, raw)
    else:
        modalities = dataset.modalities
        train, validation, test = _nnunet_cases(root, raw or {}, len(modalities) if modalities else None)
    return dataclasses.replace(
        dataset, layout=layout, train=tuple(train), validation=tuple(validation), test=tuple(test)
    )


def _absolute(dataset_dir: Path, relative: str) -> str:
    return os.path.normpath(os.path.join(dataset_dir, relative))


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


# ------------------------------------------------------------------------------------------ Decathlon layout


def _parse_entry(entry: Any, where: str, dataset_dir: Path) -> Case:
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
    return Case(case, image_paths, None if label is None else _absolute(dataset_dir, label))


def _parse_list(meta: Mapping, key: str, dataset_dir: Path, source: str) -> list[Case]:
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


def _select(ids: list[str], key: str, by_id: Mapping[str, Case], source: str) -> list[Case]:
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(
            f"{source} '{key}' names {len(missing)} case id(s) that are not in 'training', 'unlabelled' or "
            f"'test': {missing[:10]}."
        )
    return [by_id[i] for i in ids]


def _decathlon_cases(
    dataset_dir: Path, json_path: Path, meta: Mapping[str, Any] | None
) -> tuple[list[Case], list[Case], list[Case]]:
    """Train, listed validation (``val_ids``) and test cases of a Decathlon-style folder, in list order."""
    if meta is None:
        raise _not_found(json_path)
    if "training" not in meta:
        raise _no_training(json_path)
    source = json_path.name
    training = _parse_list(meta, "training", dataset_dir, source)
    extra_unlabelled = _parse_list(meta, "unlabelled", dataset_dir, source)
    extra_test = _parse_list(meta, "test", dataset_dir, source)
    by_id: dict[str, Case] = {}
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
    dataset_dir: Path, meta: Mapping[str, Any], num_channels: int | None
) -> tuple[list[Case], list[Case], list[Case]]:
    """Train (``imagesTr``, sorted by case id), validation (none: the layout has no such list) and test
    (``imagesTs``) cases of an nnU-Net folder; ``num_channels`` from the json's channel names, else the most any
    case has."""
    images_tr = dataset_dir / "imagesTr"
    if not images_tr.is_dir():
        raise FileNotFoundError(f"{images_tr} is missing; an nnU-Net-layout data set needs an imagesTr/ folder.")
    ending = meta.get("file_ending", ".nii.gz")
    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        folder = dataset_dir / images_dir
        images = _nnunet_images(folder, ending, num_channels) if folder.is_dir() else {}
        labels = _nnunet_labels(dataset_dir / labels_dir, ending, images)
        cases.append([Case(c, p[0] if len(p) == 1 else p, labels.get(c)) for c, p in images.items()])
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


def _detect_layout(dataset_dir: Path, json_path: Path, meta: Mapping[str, Any] | None, default_name: bool) -> str:
    """``"decathlon"`` or ``"nnunet"`` (``meta``: the json object, ``None`` without a file). The folder scan
    (nnU-Net) is tried only with the default json name, when that json is absent or has no ``training`` list, and
    only when ``imagesTr/`` follows nnU-Net's naming."""
    images_tr = dataset_dir / "imagesTr"
    has_images_tr = images_tr.is_dir()
    has_training = meta is not None and "training" in meta
    if not default_name:
        if meta is None:
            raise _not_found(json_path)
        if not has_training:
            raise _no_training(json_path)
        return "decathlon"
    if has_images_tr and not has_training:
        ending = meta.get("file_ending", ".nii.gz") if meta is not None else ".nii.gz"
        problem = _nnunet_naming_problem(images_tr, ending) if isinstance(ending, str) else None
        if problem is not None:  # neither a Decathlon json nor an nnU-Net folder: say what is missing first
            error = _not_found(json_path) if meta is None else _no_training(json_path)
            raise type(error)(f"{error} {images_tr} is not an nnU-Net folder either: {problem}.")
    if meta is not None:
        if has_training:
            # nnU-Net v1 lists "./imagesTr/x.nii.gz" while the files on disk are x_0000.nii.gz
            first = meta["training"][0] if isinstance(meta["training"], list) and meta["training"] else None
            image = first.get("image") if isinstance(first, Mapping) else None
            if isinstance(image, str) and has_images_tr and not os.path.exists(_absolute(dataset_dir, image)):
                stem = case_id_from_filename(image)
                if any(images_tr.glob(f"{stem}_0000.*")):
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


# ---------------------------------------------------------------------------------------------------- headers


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return os.fspath(path).endswith(_NIFTI_ENDINGS)


@dataclass(frozen=True)
class Volume:
    """One image file as read for its geometry.

    Attributes:
        path: the file.
        shape: the file's array shape, spatial axes first: ``(H, W, D)`` or ``(H, W, D, C)`` (NIfTI keeps channels
            last).
        affine: ``(4, 4)`` float64 voxel-to-world matrix (mm).
        image: the nibabel image of a NIfTI file (header read, voxels not yet), else ``None``.
        data: the voxels of a file of another format (read whole), else ``None``.
    """

    path: str
    shape: tuple[int, ...]
    affine: np.ndarray
    image: Any = None
    data: np.ndarray | None = None


def read_volume(path: str) -> Volume:
    """Shape and affine of one image file: a NIfTI file's header alone (nibabel, no voxels), any other format whole
    through MONAI's ``LoadImage`` (those formats have no cheap header reader here).

    Raises:
        the reader's own errors (nibabel's ``ImageFileError``, ``OSError``, ``EOFError``, ...; whatever ``LoadImage``
        raises): :mod:`crln_monai.data.checks` turns them into one line naming the file.
    """
    if is_nifti(path):
        image = nib.load(path)
        return Volume(path, tuple(int(s) for s in image.shape), np.asarray(image.affine, dtype=np.float64), image=image)
    from monai.transforms import LoadImage  # only for the rarer formats

    data = LoadImage(image_only=True)(path)
    affine = np.asarray(data.affine, dtype=np.float64)
    return Volume(path, tuple(int(s) for s in data.shape), affine, data=np.asarray(data))


def image_channels(volume: Volume, what: str = "image") -> int:
    """Channels one image file holds: 1 for ``(H, W, D)``, ``C`` for ``(H, W, D, C)``.

    Raises:
        ValueError: the file is not 3-D or 4-D (``what``, e.g. ``"image (case 'x')"``, starts the message).
    """
    shape = volume.shape
    if len(shape) < 3:
        raise ValueError(
            f"{what} {volume.path} is {len(shape)}-D (shape {shape}); expected a 3-D volume (H, W, D), or 4-D "
            "(H, W, D, C) with the channels on the 4th axis."
        )
    if len(shape) > 4:
        raise ValueError(
            f"{what} {volume.path} is {len(shape)}-D (shape {shape}); expected a 3-D volume, or 4-D (H, W, D, C) "
            "with the channels on the 4th axis."
        )
    return 1 if len(shape) == 3 else shape[3]


def same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> bool:
    """Whether two files share one voxel grid: the same spatial shape and affines equal within ``atol`` mm."""
    return a.shape[:3] == b.shape[:3] and bool(np.allclose(a.affine, b.affine, rtol=0.0, atol=atol))


@dataclass(frozen=True)
class CaseHeader:
    """One case as its header describes it (no voxel data read).

    Attributes:
        case: case id.
        role: ``"labelled"``, ``"unlabelled"``, ``"validation"``, ``"test"`` or ``"train"``: the list it came from.
        images: the image file(s), one per channel file.
        label: the label file or ``None``.
        shape: spatial size in RAS axis order.
        spacing: voxel size in mm in RAS axis order (column norms of the affine, as MONAI's ``Spacingd`` reads it).
        channels: number of image channels (files × 4th dimension).
        ras_axes: for each RAS axis, the file axis it comes from.
    """

    case: str
    role: str
    images: tuple[str, ...]
    label: str | None
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    channels: int
    ras_axes: tuple[int, int, int]


def _ras_axes(affine: np.ndarray) -> tuple[int, int, int]:
    """For each RAS axis, the file axis that ``Orientationd("RAS")`` moves there (nearest axis for oblique affines)."""
    ornt = nib.orientations.io_orientation(affine)
    axes = [0, 0, 0]
    for file_axis, (ras_axis, _) in enumerate(ornt[:3]):
        axes[int(ras_axis)] = file_axis
    return axes[0], axes[1], axes[2]


def read_case_header(item: Mapping[str, Any], role: str) -> CaseHeader:
    """Header of one datalist item (``{"image": path | [paths], "label"?: path, "case": id}``), through
    :func:`read_volume` (the files' geometry), :func:`image_channels` and :func:`same_grid`, as the pre-flight check
    reads them.

    Raises:
        ValueError: an image is not 3-D or 4-D, or the channel files of the case lie on different grids.
    """
    case = str(item["case"])
    images = tuple(item["image"]) if isinstance(item["image"], (list, tuple)) else (item["image"],)
    what = f"image (case {case!r})"
    volumes = [read_volume(path) for path in images]
    channels = sum(image_channels(volume, what) for volume in volumes)
    first = volumes[0]
    for volume in volumes[1:]:
        if not same_grid(volume, first):
            raise ValueError(
                f"{what}: channel file {volume.path} has shape {volume.shape[:3]} on another grid than {first.path} "
                f"{first.shape[:3]}; expected every channel file of a case on the same grid."
            )
    axes = _ras_axes(first.affine)
    spacing = np.sqrt((first.affine[:3, :3] ** 2).sum(axis=0))
    return CaseHeader(
        case=case,
        role=role,
        images=images,
        label=item.get("label"),
        shape=tuple(int(first.shape[a]) for a in axes),  # type: ignore[arg-type]
        spacing=tuple(float(spacing[a]) for a in axes),  # type: ignore[arg-type]
        channels=channels,
        ras_axes=axes,
    )
