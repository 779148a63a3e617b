"""Left atrium (2018 Atrial Segmentation Challenge) → NIfTI Decathlon folder, from UA-MT h5 files or NRRD originals.

Two sources:

* :func:`prepare_la_from_h5` — UA-MT's ``<case>/mri_norm2.h5`` (keys ``image`` float32 z-scored, ``label`` uint8,
  both ``(X, Y, Z)``, already cropped around the ground truth by UA-MT). The output reproduces the shared
  ``la2018`` folder: same layout, values within float32 rounding, affine ``diag(0.625, 0.625, 0.625, 1)``.
* :func:`prepare_la_from_nrrd` — the challenge's ``<case>/lgemri.nrrd`` (8-bit MRI) and ``<case>/laendo.nrrd``
  (LA cavity = 255), z-scored over the whole volume; full volume by default, UA-MT's oracle crop on request.

Images take at most 256 values (8-bit source, then z-scored), so they are stored as uint8 codes with
``scl_slope``/``scl_inter`` (float32 where a volume does not fit that grid).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .nifti_io import image_nifti, label_nifti
from .output import (
    CONVERT_EXTRA_HINT,
    check_settings,
    dataset_json,
    normalise_num_labelled,
    write_converted,
)
from .splits import LA_TEST, LA_TRAIN, read_case_list, resolve_case_list

__all__ = ["UA_MT_CROP_HELP", "prepare_la", "prepare_la_from_h5", "prepare_la_from_nrrd"]

CaseList = str | os.PathLike | Sequence[str] | None

UA_MT_CROP_HELP = (
    "ua_mt_crop=True crops EVERY volume around its own ground-truth label - unlabelled and test volumes "
    "included (an oracle crop: the atrium is always near the centre and most of the thorax is removed). "
    "Results on such data are NOT comparable to full-volume inference."
)

_H5_NAME = "mri_norm2.h5"
_NRRD_IMAGE, _NRRD_LABEL = "lgemri.nrrd", "laendo.nrrd"
_LA_SPACING = (0.625, 0.625, 0.625)
_UA_MT_MIN_EXTENT = 112
_UA_MT_MARGIN = (10, 20)  # numpy integers(low, high): 10..19 voxels, as UA-MT's randint(10, 20)

_REFERENCE = (
    "Xiong et al., A Global Benchmark of Algorithms for Segmenting the Left Atrium from Late Gadolinium-Enhanced "
    "Cardiac Magnetic Resonance Imaging, Medical Image Analysis 67, 101832, 2021 (2018 Atrial Segmentation "
    "Challenge). UA-MT preprocessing: Yu et al., MICCAI 2019."
)


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as e:
        raise ImportError(f"reading UA-MT h5 files needs h5py: {CONVERT_EXTRA_HINT}") from e
    return h5py


def _import_nrrd() -> Any:
    try:
        import nrrd
    except ImportError as e:
        raise ImportError(f"reading NRRD files needs pynrrd: {CONVERT_EXTRA_HINT}") from e
    return nrrd


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    """``spacing`` as 3 floats; refused unless 3 finite positive voxel sizes (a negative one would flip an axis)."""
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be 3 positive voxel sizes in mm [x, y, z], got {spacing!r}.")
    return values


def _require_source_dir(source_dir: Path) -> None:
    if not source_dir.exists():
        raise FileNotFoundError(f"source_dir {source_dir} does not exist; expected the folder of LA case folders.")
    if not source_dir.is_dir():
        raise NotADirectoryError(f"source_dir {source_dir} is not a folder; expected the folder of LA case folders.")


def _find_list(value: CaseList, source_dir: Path, file_name: str, default: Sequence[str], argument: str) -> list[str]:
    """A given list, else ``<source>/<file_name>`` or ``<source>/../<file_name>``, else the built-in UA-MT list."""
    if value is not None:
        return resolve_case_list(value, default, argument)
    for folder in (source_dir, source_dir.parent):
        if (folder / file_name).is_file():
            return read_case_list(folder / file_name)
    return list(default)


def _split(
    source_dir: Path, train_list: CaseList, test_list: CaseList, required: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Train and test ids; every case must have the ``required`` files in ``<source>/<case>/``.

    Raises:
        ValueError: a case in both lists, or an empty train list.
        FileNotFoundError: ``source_dir``, a listed case folder or a file is missing.
    """
    _require_source_dir(source_dir)
    train = _find_list(train_list, source_dir, "train.list", LA_TRAIN, "train_list")
    test = _find_list(test_list, source_dir, "test.list", LA_TEST, "test_list")
    both = sorted(set(train) & set(test))
    if both:
        raise ValueError(f"case id(s) in both the train and the test list: {both[:10]}.")
    if not train:
        raise ValueError("the train list is empty.")
    for case in [*train, *test]:
        for name in required:
            path = source_dir / case / name
            if not path.is_file():
                what = "train" if case in train else "test"
                raise FileNotFoundError(f"case {case!r} (in the {what} list) has no {path}.")
    return train, test


def _read_h5_case(path: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    h5py = _import_h5py()
    with h5py.File(path, "r") as f:
        for key in ("image", "label"):
            if key not in f:
                raise ValueError(f"case {case!r}: {path} has no {key!r} dataset (keys: {sorted(f.keys())}).")
        image, label = np.asarray(f["image"][()]), np.asarray(f["label"][()])
    if image.ndim != 3 or image.shape != label.shape:
        raise ValueError(
            f"case {case!r}: {path} 'image' {image.shape} and 'label' {label.shape} must be 3-D of the same shape."
        )
    values = np.unique(label)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"case {case!r}: {path} 'label' must hold 0/1, got values {values[:10].tolist()}.")
    return image.astype(np.float32), label.astype(np.uint8)


def prepare_la_from_h5(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_list: CaseList = None,
    test_list: CaseList = None,
    spacing: Sequence[float] = _LA_SPACING,
    num_labelled: int | Sequence[int] = (8, 16),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert UA-MT's LA h5 files (``<source>/<case>/mri_norm2.h5``) to a NIfTI Decathlon folder.

    The h5 files carry no geometry: the affine is ``diag(*spacing, 1)`` (challenge spacing 0.625 mm isotropic),
    origin 0, axes as stored; qform/sform code 1, units mm. The h5 volumes are already cropped by UA-MT around
    their ground truth (oracle crop, see the LA README).

    Args:
        source_dir: folder of case folders (UA-MT ``data/2018LA_Seg_Training Set``).
        out_dir: output folder (``imagesTr``, ``labelsTr``, ``dataset.json``).
        train_list: list file or ids; default ``train.list`` in ``source_dir`` or its parent, else UA-MT's list.
        test_list: list file or ids; default ``test.list`` likewise.
        spacing: voxel size in mm.
        num_labelled: the labelled-set sizes of the protocols in ``dataset.json`` (first N of the train list).
        overwrite: rewrite cases whose files already exist.
        progress: show a progress bar.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: a listed case has no h5 file.
        ValueError: an h5 without ``image``/``label``, shapes that differ, labels other than 0/1, bad lists.
        ImportError: h5py is not installed.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    train, test = _split(source_dir, train_list, test_list, [_H5_NAME])
    num_labelled = normalise_num_labelled(num_labelled, len(train))
    spacing = _check_spacing(spacing) or _LA_SPACING
    affine = np.diag([*spacing, 1.0])
    settings = {"spacing": list(spacing)}
    check_settings(out_dir, "prepare_la_from_h5", settings, overwrite)

    def convert_one(case: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
        image, label = _read_h5_case(source_dir / case / _H5_NAME, case)
        return image_nifti(image, affine), label_nifti(label, affine)

    meta = dataset_json(
        name="LA2018",
        description=(
            "Left atrium, 2018 Atrial Segmentation Challenge, from UA-MT mri_norm2.h5 (z-scored, cropped in-plane "
            "around the ground truth: oracle crop). Images are uint8 codes with scl_slope/scl_inter."
        ),
        reference=_REFERENCE,
        modality={"0": "MRI"},
        labels={"0": "background", "1": "left_atrium"},
        train_ids=train,
        test_ids=test,
        num_labelled=num_labelled,
        extra={"spacing_mm": list(spacing)},
    )
    return write_converted(
        "prepare_la_from_h5", out_dir, settings, [*train, *test], convert_one, meta, overwrite, progress
    )


def _nrrd_affine(header: dict, path: Path) -> np.ndarray:
    """Voxel → RAS affine of a 3-D NRRD header (``space directions``/``space origin``, else ``spacings``)."""
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        directions = np.asarray(directions, dtype=np.float64)
        if directions.shape != (3, 3) or not np.all(np.isfinite(directions)):
            raise ValueError(f"{path}: expected 3 spatial 'space directions', got {header.get('space directions')}.")
        affine[:3, :3] = directions.T  # row i of the header = vector of voxel axis i
        affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
        space = str(header.get("space", "right-anterior-superior")).lower()
        flips = {
            "right-anterior-superior": (1, 1, 1),
            "ras": (1, 1, 1),
            "left-posterior-superior": (-1, -1, 1),
            "lps": (-1, -1, 1),
            "left-anterior-superior": (-1, 1, 1),
            "las": (-1, 1, 1),
        }
        if space not in flips:
            raise ValueError(f"{path}: NRRD space {space!r} is not supported (expected RAS, LPS or LAS).")
        affine[:3] = np.diag(flips[space]) @ affine[:3]
    elif header.get("spacings") is not None:
        spacings = np.asarray(header["spacings"], dtype=np.float64)
        if spacings.shape != (3,) or not np.all(np.isfinite(spacings)) or np.any(spacings <= 0):
            raise ValueError(f"{path}: expected 3 positive 'spacings', got {header['spacings']}.")
        affine[:3, :3] = np.diag(spacings)
    else:
        raise ValueError(f"{path}: the NRRD header gives no voxel spacing; pass spacing=(0.625, 0.625, 0.625).")
    return affine


def _read_nrrd(path: Path, case: str, spacing: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    nrrd = _import_nrrd()
    data, header = nrrd.read(str(path), index_order="F")
    if data.ndim != 3:
        raise ValueError(f"case {case!r}: {path} must be a 3-D volume, got shape {data.shape}.")
    affine = np.diag([*map(float, spacing), 1.0]) if spacing is not None else _nrrd_affine(header, path)
    return np.asarray(data), affine


def _ua_mt_crop_box(label: np.ndarray, rng: np.random.Generator) -> tuple[slice, slice]:
    """UA-MT's in-plane crop: label bounding box + random 10-19 voxel margin per side, widened towards 112 voxels.

    Per in-plane axis: ``p = max(112 - (max - min), 0) // 2``, ``start = max(min - m0 - p, 0)``,
    ``stop = min(max + m1 + p, size)`` (exclusive), with ``m0, m1`` drawn from 10..19.
    """
    box = []
    for axis in (0, 1):
        indices = np.flatnonzero(label.any(axis=tuple(a for a in range(3) if a != axis)))
        low, high = int(indices[0]), int(indices[-1])
        widen = max(_UA_MT_MIN_EXTENT - (high - low), 0) // 2
        margin_low, margin_high = rng.integers(*_UA_MT_MARGIN, size=2)
        start = max(low - int(margin_low) - widen, 0)
        box.append(slice(start, min(high + int(margin_high) + widen, label.shape[axis])))
    return box[0], box[1]


def prepare_la_from_nrrd(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    ua_mt_crop: bool = False,
    seed: int = 0,
    train_list: CaseList = None,
    test_list: CaseList = None,
    spacing: Sequence[float] | None = None,
    num_labelled: int | Sequence[int] = (8, 16),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert the 2018 LA challenge's NRRD files (``<case>/lgemri.nrrd``, ``<case>/laendo.nrrd``) to NIfTI.

    Image: z-scored over the whole volume, ``(raw - mean) / std``. Label: ``laendo == 255`` → 1, 0 → 0.
    Geometry from the NRRD header (LPS/LAS spaces converted to RAS). By default the FULL volume is kept: no
    label-based cropping.

    Args:
        source_dir: folder of case folders (challenge ``Training Set``).
        out_dir: output folder.
        ua_mt_crop: reproduce UA-MT's preprocessing: crop in-plane to the label's bounding box plus a random
            10-19 voxel margin per side (widened towards 112 voxels), all slices kept, after the z-score.
            WARNING: this crops EVERY volume around its own ground truth, unlabelled and test volumes included
            (an oracle crop); results on such data are NOT comparable to full-volume inference.
        seed: seed of the random margins (``ua_mt_crop`` only); each case draws from ``(seed, crc32(case))``,
            so a case's crop does not depend on which other cases are converted.
        train_list: list file or ids; default ``train.list`` in ``source_dir`` or its parent, else UA-MT's list.
        test_list: list file or ids; default ``test.list`` likewise, else UA-MT's list.
        spacing: voxel size in mm overriding the header (for files without spacing); default from the header.
        num_labelled: the labelled-set sizes of the protocols in ``dataset.json`` (first N of the train list).
        overwrite: rewrite cases whose files already exist.
        progress: show a progress bar.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: a listed case lacks ``lgemri.nrrd`` or ``laendo.nrrd``.
        ValueError: label values other than 0/255, label geometry that differs from the image, an empty label
            with ``ua_mt_crop``, a header without spacing, bad lists.
        ImportError: pynrrd is not installed.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    train, test = _split(source_dir, train_list, test_list, [_NRRD_IMAGE, _NRRD_LABEL])
    num_labelled = normalise_num_labelled(num_labelled, len(train))
    spacing = _check_spacing(spacing)
    settings = {"ua_mt_crop": bool(ua_mt_crop), "seed": int(seed) if ua_mt_crop else None,
                "spacing": None if spacing is None else [float(s) for s in spacing]}
    check_settings(out_dir, "prepare_la_from_nrrd", settings, overwrite)

    def convert_one(case: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
        image_path, label_path = source_dir / case / _NRRD_IMAGE, source_dir / case / _NRRD_LABEL
        raw, affine = _read_nrrd(image_path, case, spacing)
        label_raw, label_affine = _read_nrrd(label_path, case, spacing)
        if label_raw.shape != raw.shape or not np.allclose(label_affine, affine, atol=1e-3):
            raise ValueError(
                f"case {case!r}: label {label_path} (shape {label_raw.shape}) does not match the geometry of the "
                f"image {image_path} (shape {raw.shape}); affines\n{label_affine}\nvs\n{affine}."
            )
        values = np.unique(label_raw)
        if not set(values.tolist()) <= {0, 255}:
            raise ValueError(f"case {case!r}: {label_path} must hold 0/255, got values {values[:10].tolist()}.")
        label = (label_raw == 255).astype(np.uint8)
        raw = raw.astype(np.float64)
        std = raw.std()
        if std == 0:
            raise ValueError(f"case {case!r}: {image_path} is constant; cannot z-score it.")
        image = ((raw - raw.mean()) / std).astype(np.float32)
        if ua_mt_crop:
            if not label.any():
                raise ValueError(f"case {case!r}: {label_path} is empty; ua_mt_crop needs a label to crop around.")
            rng = np.random.default_rng([int(seed), zlib.crc32(case.encode())])
            crop_x, crop_y = _ua_mt_crop_box(label, rng)
            image, label = image[crop_x, crop_y], label[crop_x, crop_y]
            affine = affine.copy()
            affine[:3, 3] = affine[:3, :3] @ np.array([crop_x.start, crop_y.start, 0.0]) + affine[:3, 3]
        return image_nifti(image, affine), label_nifti(label, affine)

    crop_text = (
        "UA-MT oracle crop: every volume cropped in-plane around its ground truth (random 10-19 voxel margins); "
        "not comparable to full-volume inference" if ua_mt_crop else "full volumes, no label-based cropping"
    )
    meta = dataset_json(
        name="LA2018",
        description=f"Left atrium, 2018 Atrial Segmentation Challenge, from lgemri/laendo NRRD; z-scored; {crop_text}.",
        reference=_REFERENCE,
        modality={"0": "MRI"},
        labels={"0": "background", "1": "left_atrium"},
        train_ids=train,
        test_ids=test,
        num_labelled=num_labelled,
        extra={"ua_mt_crop": bool(ua_mt_crop)},
    )
    return write_converted(
        "prepare_la_from_nrrd", out_dir, settings, [*train, *test], convert_one, meta, overwrite, progress
    )


def prepare_la(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    source_format: str = "auto",
    ua_mt_crop: bool = False,
    seed: int = 0,
    train_list: CaseList = None,
    test_list: CaseList = None,
    spacing: Sequence[float] | None = None,
    num_labelled: int | Sequence[int] = (8, 16),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert the LA data set to a NIfTI Decathlon folder, from UA-MT h5 files or the challenge's NRRD files.

    Args:
        source_dir: folder of case folders holding ``mri_norm2.h5`` (UA-MT) or ``lgemri.nrrd`` + ``laendo.nrrd``.
        out_dir: output folder (``imagesTr``, ``labelsTr``, ``dataset.json``).
        source_format: ``"h5"``, ``"nrrd"`` or ``"auto"`` (whichever file the case folders hold).
        ua_mt_crop: NRRD only. Crops EVERY volume around its own ground-truth label - unlabelled and test
            volumes included (oracle crop, UA-MT preprocessing); results are NOT comparable to full-volume
            inference. Off by default (full volumes).
        seed: seed of the random UA-MT crop margins.
        train_list: list file or ids; default ``train.list`` in ``source_dir`` or its parent, else UA-MT's list.
        test_list: list file or ids; default ``test.list`` likewise.
        spacing: voxel size in mm (h5: default 0.625 isotropic; NRRD: default from the header).
        num_labelled: labelled-set sizes of the protocols written to ``dataset.json``.
        overwrite: rewrite cases whose files already exist.
        progress: show a progress bar.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: unknown/ambiguous ``source_format``, ``ua_mt_crop`` with h5 input (already cropped), and the
            errors of :func:`prepare_la_from_h5` / :func:`prepare_la_from_nrrd`.
    """
    source = Path(source_dir)
    _require_source_dir(source)
    if source_format == "auto":
        has_h5 = any(source.glob(f"*/{_H5_NAME}"))
        has_nrrd = any(source.glob(f"*/{_NRRD_IMAGE}"))
        if has_h5 == has_nrrd:
            found = "both" if has_h5 else "neither"
            raise ValueError(
                f"source_format='auto': {source} holds {found} <case>/{_H5_NAME} {'and' if has_h5 else 'nor'} "
                f"<case>/{_NRRD_IMAGE}; "
                "pass source_format='h5' or 'nrrd'."
            )
        source_format = "h5" if has_h5 else "nrrd"
    common = dict(train_list=train_list, test_list=test_list, num_labelled=num_labelled, overwrite=overwrite,
                  progress=progress)
    if source_format == "h5":
        if ua_mt_crop:
            raise ValueError("ua_mt_crop applies to NRRD input; UA-MT h5 files are already cropped.")
        return prepare_la_from_h5(source_dir, out_dir, spacing=_LA_SPACING if spacing is None else spacing, **common)
    if source_format == "nrrd":
        return prepare_la_from_nrrd(source_dir, out_dir, ua_mt_crop=ua_mt_crop, seed=seed, spacing=spacing, **common)
    raise ValueError(f"source_format must be 'auto', 'h5' or 'nrrd', got {source_format!r}.")
