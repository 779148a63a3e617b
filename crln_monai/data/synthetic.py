"""Deterministic LA-like synthetic volumes written as a NIfTI data set (for tests, demos and smoke runs).

Each case holds one smooth, irregular foreground object — a "metaball" union of a main ellipsoid and 2–4
smaller lobes near the volume centre, thresholded so that it covers 6–12 % of the volume. That matches the real
LA2018 labels: over the 80 UA-MT train cases the left atrium covers on average 9.0 % of the (GT-cropped) volume
(std 2.8 %, range 3.6–19.1 %). The image imitates a z-scored LGE-MRI: a brighter object with a soft edge, darker
background structures, a bright distractor outside the object, a low-frequency texture, a smooth multiplicative
bias field and Gaussian noise — learnable, but not by a global threshold.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..io import atomic_write

__all__ = ["make_synthetic_dataset", "synthetic_case"]

_FORMAT_VERSION = 1
_LAYOUTS = ("decathlon", "nnunet")


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], coarse: Sequence[int]) -> np.ndarray:
    """Zero-mean, unit-std low-frequency field: a coarse Gaussian grid blended to ``shape`` by Gaussian kernels.

    Separable (one small matrix product per axis), hence much faster than ``scipy.ndimage.zoom``.
    """
    field = rng.standard_normal(tuple(coarse)).astype(np.float32)
    for axis in reversed(range(3)):  # the last product (axis 0) is the full-size one, and comes out contiguous
        size, n = shape[axis], coarse[axis]
        x = (np.arange(size) + 0.5) / size * n - 0.5  # output voxel in coarse-grid units
        weights = np.exp(-0.5 * ((x[:, None] - np.arange(n)[None, :]) / 0.6) ** 2)
        weights = (weights / weights.sum(1, keepdims=True)).astype(np.float32)
        field = np.moveaxis(np.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    field -= field.mean()
    return field / (field.std() + 1e-6)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid_distance(
    coords: Sequence[np.ndarray], centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray
) -> np.ndarray:
    """Squared Mahalanobis distance ``(x - c)^T R diag(1/r^2) R^T (x - c)`` on an open grid (float32)."""
    form = ((rotation / radii**2) @ rotation.T).tolist()  # python floats keep the arithmetic in float32
    d = [c - float(m) for c, m in zip(coords, centre)]
    q = form[0][0] * d[0] ** 2 + form[1][1] * d[1] ** 2 + form[2][2] * d[2] ** 2
    q += 2 * form[0][1] * (d[0] * d[1]) + 2 * form[0][2] * (d[0] * d[2]) + 2 * form[1][2] * (d[1] * d[2])
    return q


def synthetic_case(
    rng: np.random.Generator,
    shape: Sequence[int],
    num_channels: int = 1,
    num_classes: int = 2,
    object_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One LA-like case.

    Args:
        rng: the random generator (the case is a function of its state).
        shape: spatial shape ``(H, W, D)``.
        num_channels: image channels; channels > 0 reuse the anatomy with other contrasts and their own noise.
        num_classes: label classes; classes >= 2 are nested cores of the object (inner level sets).
        object_scale: size of the object relative to the LA-like default (its radii; its share of the volume
            scales with the cube): 0.5 gives structures that fill about 1 % of the field of view, their centre
            drawn within ±23 % of the volume's size around its middle (±8 % at the default 1).

    Returns:
        ``image`` float32 ``(C, H, W, D)`` (each channel z-scored) and ``label`` uint8 ``(H, W, D)``.
    """
    shape = tuple(int(s) for s in shape)
    size = np.array(shape, dtype=np.float64)
    coords = np.ogrid[: shape[0], : shape[1], : shape[2]]
    coords = [c.astype(np.float32) for c in coords]

    # the object: metaballs around a jittered centre, thresholded at a drawn foreground share
    jitter = 0.08 + 0.3 * (1.0 - min(object_scale, 1.0))  # a smaller object may sit anywhere in a wider box
    centre = size / 2 + rng.uniform(-jitter, jitter, 3) * size
    radii = size * np.array([0.17, 0.17, 0.2]) * rng.uniform(0.8, 1.2, 3) * object_scale
    field = np.exp(-0.5 * _ellipsoid_distance(coords, centre, radii, _random_rotation(rng)))
    for _ in range(int(rng.integers(2, 5))):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        lobe_centre = centre + direction * radii * rng.uniform(0.7, 1.1)
        lobe_radii = radii * rng.uniform(0.35, 0.6, 3)
        lobe = _ellipsoid_distance(coords, lobe_centre, lobe_radii, _random_rotation(rng))
        field += rng.uniform(0.7, 1.0) * np.exp(-0.5 * lobe)
    field *= 1 + 0.12 * _smooth_noise(rng, shape, (6, 6, 5))
    share = rng.uniform(0.06, 0.12) * object_scale**3
    levels = np.quantile(field, [1 - share * 0.4 ** (k - 1) for k in range(1, num_classes)])
    label = np.zeros(shape, dtype=np.uint8)
    for level in levels:
        label += field > level
    soft = 0.5 + 0.5 * np.tanh((field - levels[0]) / (0.15 * levels[0]))  # soft object edge (partial volume)
    cores = label.astype(np.float32) - (label > 0)  # 0 outside the inner classes

    # background anatomy: dark structures and one bright distractor, all outside the object
    dark = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(2, 4))):
        c = rng.uniform(0.1, 0.9, 3) * size
        r = size * rng.uniform(0.08, 0.2, 3)
        dark = np.maximum(dark, np.exp(-0.5 * _ellipsoid_distance(coords, c, r, _random_rotation(rng)) ** 2))
    c = centre + rng.choice([-1, 1], 3) * radii * rng.uniform(1.2, 1.6, 3)
    bright = np.exp(-0.5 * _ellipsoid_distance(coords, c, radii * rng.uniform(0.3, 0.5, 3), _random_rotation(rng)) ** 2)
    outside = 1 - soft
    texture = _smooth_noise(rng, shape, (10, 10, 8))
    bias = np.exp(0.15 * _smooth_noise(rng, shape, (3, 3, 3)))

    channels = []
    for channel in range(num_channels):
        w = np.ones(4) if channel == 0 else rng.uniform(0.5, 1.5, 4)
        raw = 1.0 + 0.5 * w[0] * soft + 0.2 * cores - 0.5 * w[1] * dark * outside + 0.5 * w[2] * bright * outside
        raw = raw + 0.12 * w[3] * texture
        raw = raw * bias + 0.2 * rng.standard_normal(shape, dtype=np.float32)
        channels.append(((raw - raw.mean()) / (raw.std() + 1e-6)).astype(np.float32))
    return np.stack(channels), label


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``.nii.gz`` with gzip mtime 0, so equal arrays give identical bytes."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def _check_arguments(num_cases, num_test, shape, spacing, num_channels, num_classes, layout) -> None:
    if not isinstance(num_cases, int) or not isinstance(num_test, int) or num_test < 0 or num_cases - num_test < 2:
        raise ValueError(
            f"need ints num_cases - num_test >= 2 train cases and num_test >= 0, got {num_cases}, {num_test}."
        )
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 ints >= 8, got {shape!r}.")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing!r}.")
    if num_channels < 1 or num_classes < 2:
        raise ValueError(f"need num_channels >= 1 and num_classes >= 2, got {num_channels}, {num_classes}.")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}.")


def _is_current(out_dir: Path, params: dict[str, Any]) -> bool:
    """``out_dir`` holds a complete data set written with ``params``; raise if it holds someone else's."""
    json_path = out_dir / "dataset.json"
    if not json_path.is_file():
        return False
    try:
        meta = json.loads(json_path.read_text())
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or "synthetic" not in meta:
        raise ValueError(f"{json_path} was not written by make_synthetic_dataset; refusing to overwrite it.")
    return meta["synthetic"] == params and all((out_dir / f).is_file() for f in meta.get("_files", []))


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_cases: int = 24,
    num_test: int = 6,
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (0.625, 0.625, 0.625),
    seed: int = 0,
    num_channels: int = 1,
    num_classes: int = 2,
    with_unlabelled_labels: bool = True,
    layout: str = "decathlon",
    object_scale: float = 1.0,
) -> Path:
    """Write (or reuse) a deterministic LA-like NIfTI data set.

    Decathlon layout: ``imagesTr/<case>.nii.gz`` (float32, 3D; 4D ``(H, W, D, C)`` when ``num_channels > 1``),
    ``labelsTr/<case>.nii.gz`` (uint8), affine ``diag(*spacing, 1)``, and ``dataset.json`` with ``training``,
    ``train_ids`` (the first ``num_cases - num_test`` cases), ``test_ids`` (the last ``num_test``), ``labels``,
    ``modality``, ``numTraining``. nnU-Net layout (``layout="nnunet"``): ``imagesTr/<case>_000c.nii.gz`` per
    channel and ``labelsTr/`` for the train cases, ``imagesTs/`` + ``labelsTs/`` for the test cases, and an
    nnU-Net v2 ``dataset.json`` (``channel_names``, ``labels``, ``numTraining``, ``file_ending``).

    Case ``i`` is drawn from ``np.random.default_rng([seed, i])`` (so it does not depend on ``num_cases``), and
    files are gzipped with mtime 0: the same arguments give byte-identical files. The arguments are stored under
    ``dataset.json["synthetic"]``; a second call with the same arguments finds them and writes nothing.

    Args:
        out_dir: target folder (created).
        num_cases: train + test cases.
        num_test: test cases (the last ones).
        shape: spatial shape ``(H, W, D)``.
        spacing: voxel size in mm.
        seed: base seed.
        num_channels: image channels (e.g. 4 for a BraTS-like set).
        num_classes: label classes (classes >= 2 are nested cores of the object).
        with_unlabelled_labels: ``False`` omits the label files of the train cases after the first 25 % of the
            train list (rounded up), making them truly unlabelled.
        layout: ``"decathlon"`` or ``"nnunet"``.
        object_scale: object size relative to the default (see :func:`synthetic_case`).

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: bad arguments, or ``out_dir`` holds a ``dataset.json`` that is not a synthetic one.
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    _check_arguments(num_cases, num_test, shape, spacing, num_channels, num_classes, layout)
    out_dir = Path(out_dir)
    params = {
        "version": _FORMAT_VERSION, "num_cases": num_cases, "num_test": num_test, "shape": list(shape),
        "spacing": list(spacing), "seed": seed, "num_channels": num_channels, "num_classes": num_classes,
        "with_unlabelled_labels": with_unlabelled_labels, "layout": layout,
    }  # fmt: skip
    if not 0 < float(object_scale) <= 2:
        raise ValueError(f"object_scale must lie in (0, 2], got {object_scale!r}.")
    if object_scale != 1.0:  # stored only when set, so the sets written before it are still found
        params["object_scale"] = float(object_scale)
    if _is_current(out_dir, params):
        return out_dir
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):  # a previous synthetic set: start clean
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    (out_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out_dir / "labelsTr").mkdir(exist_ok=True)

    ids = [f"case_{i:03d}" for i in range(num_cases)]
    num_train = num_cases - num_test
    train_ids, test_ids = ids[:num_train], ids[num_train:]
    num_with_label = num_train if with_unlabelled_labels else math.ceil(0.25 * num_train)
    affine = np.diag([*spacing, 1.0])
    training, files = [], []
    for i, case in enumerate(ids):
        image, label = synthetic_case(np.random.default_rng([seed, i]), shape, num_channels, num_classes, object_scale)
        is_test, has_label = i >= num_train, i >= num_train or i < num_with_label
        if layout == "decathlon":
            image_files = [f"imagesTr/{case}.nii.gz"]
            arrays = [image[0] if num_channels == 1 else np.moveaxis(image, 0, -1)]
            label_file = f"labelsTr/{case}.nii.gz"
        else:
            folder = "Ts" if is_test else "Tr"
            (out_dir / f"images{folder}").mkdir(exist_ok=True)
            (out_dir / f"labels{folder}").mkdir(exist_ok=True)
            image_files = [f"images{folder}/{case}_{c:04d}.nii.gz" for c in range(num_channels)]
            arrays = list(image)
            label_file = f"labels{folder}/{case}.nii.gz"
        for name, array in zip(image_files, arrays):
            _write_nifti(np.ascontiguousarray(array), affine, out_dir / name)
        entry = {"image": f"./{image_files[0]}"}
        if has_label:
            _write_nifti(label, affine, out_dir / label_file)
            entry["label"] = f"./{label_file}"
        training.append(entry)
        files += image_files + ([label_file] if has_label else [])

    class_names = {"0": "background", "1": "foreground", **{str(k): f"core_{k - 1}" for k in range(2, num_classes)}}
    modality = {str(c): "MRI" if num_channels == 1 else f"MRI-{c}" for c in range(num_channels)}
    if layout == "decathlon":
        meta: dict[str, Any] = {
            "name": "synthetic-LA", "description": "LA-like synthetic volumes (crln_monai.data.synthetic)",
            "tensorImageSize": "3D" if num_channels == 1 else "4D", "modality": modality, "labels": class_names,
            "spacing_mm": list(spacing), "numTraining": num_cases, "numTest": 0, "training": training,
            "train_ids": train_ids, "test_ids": test_ids,
        }  # fmt: skip
    else:
        meta = {
            "name": "synthetic-LA", "channel_names": modality, "labels": {v: int(k) for k, v in class_names.items()},
            "numTraining": num_train, "file_ending": ".nii.gz", "train_ids": train_ids, "test_ids": test_ids,
        }  # fmt: skip
    meta["synthetic"] = params
    meta["_files"] = files
    atomic_write(out_dir / "dataset.json", json.dumps(meta, indent=2))  # last: an interrupted run is not complete
    return out_dir
