"""NIH Pancreas-CT (TCIA DICOM series + NIfTI labels) → NIfTI Decathlon folder, CoraNet/MC-Net+ style.

Per case (``<source>/PANCREAS_NNNN/**/*.dcm`` → ``imageNNNN``), in this order:

1. read the DICOM series (:func:`~crln_monai.data.convert.dicom.read_dicom_series`: HU, RAS affine, checks);
2. read the label NIfTI, reorient it to the image's voxel axes, and require the same grid (shape, spacing,
   direction and origin within 0.1 mm); label > 0 → 1;
3. clip HU to ``hu_window`` (default [-125, 275]);
4. resample to ``spacing`` mm isotropic (default 1 mm): linear for the image, nearest for the label, on the grid
   of :func:`~crln_monai.data.convert.resample.resampled_shape` (first voxel centre kept);
5. crop to the label's bounding box on the resampled grid plus ``margin`` voxels (default 25, i.e. 25 mm) on
   every side of all three axes, clamped to the volume;
6. z-score the cropped image (mean/std over the crop).

The crop uses the ground truth, for test cases too (an oracle crop, as in CoraNet/MC-Net+/CRLN); scores on such
crops are not comparable with full-volume inference. The z-score is our choice for "normalise": CRLN min-max
normalises each volume online, which cancels any affine intensity normalisation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from .dicom import read_dicom_series
from .nifti_io import image_nifti, label_nifti
from .output import check_settings, dataset_json, normalise_num_labelled, write_converted
from .resample import resample_to_spacing, voxel_spacing
from .splits import PANCREAS_CT_TEST, resolve_case_list

__all__ = ["prepare_pancreas_ct"]

_CASE_FOLDER = re.compile(r"^PANCREAS_(\d{4})$")
_GEOMETRY_ATOL_MM = 0.1


def _find_cases(source_dir: Path) -> dict[str, tuple[int, Path]]:
    """``{imageNNNN: (NNNN, folder)}`` for the ``PANCREAS_NNNN`` folders of ``source_dir``, ascending."""
    if not source_dir.is_dir():
        raise FileNotFoundError(f"source_dir {source_dir} does not exist.")
    found = {}
    for folder in sorted(source_dir.iterdir()):
        match = _CASE_FOLDER.match(folder.name)
        if match and folder.is_dir():
            found[f"image{match.group(1)}"] = (int(match.group(1)), folder)
    if not found:
        raise FileNotFoundError(f"{source_dir} holds no PANCREAS_NNNN case folders.")
    return dict(sorted(found.items()))


def _label_on_image_grid(path: Path, image_shape: tuple[int, ...], image_affine: np.ndarray, case: str) -> np.ndarray:
    """The label volume reoriented to the image's voxel axes; its grid must equal the image's."""
    img = nib.load(str(path))
    label = np.asanyarray(img.dataobj)
    if label.ndim == 4 and label.shape[3] == 1:
        label = label[..., 0]
    if label.ndim != 3:
        raise ValueError(f"case {case!r}: label {path} must be 3-D, got shape {label.shape}.")
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine), nib.orientations.io_orientation(image_affine)
    )
    label = nib.orientations.apply_orientation(label, transform)
    affine = img.affine @ nib.orientations.inv_ornt_aff(transform, img.shape[:3])
    if label.shape != tuple(image_shape) or not np.allclose(affine, image_affine, atol=_GEOMETRY_ATOL_MM):
        raise ValueError(
            f"case {case!r}: the geometry of label {path} differs from the DICOM image: label shape {label.shape}, "
            f"spacing {np.round(voxel_spacing(affine), 4).tolist()}, origin {np.round(affine[:3, 3], 3).tolist()} vs "
            f"image shape {tuple(image_shape)}, spacing {np.round(voxel_spacing(image_affine), 4).tolist()}, origin "
            f"{np.round(image_affine[:3, 3], 3).tolist()} (after reorienting the label to the image's axes)."
        )
    return (np.rint(label) > 0).astype(np.uint8)


def _crop_box(label: np.ndarray, margin: int, case: str) -> tuple[slice, ...]:
    if not label.any():
        raise ValueError(f"case {case!r}: the label is empty; cannot crop around the pancreas.")
    box = []
    for axis in range(3):
        indices = np.flatnonzero(label.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(indices[0]) - margin, 0), min(int(indices[-1]) + 1 + margin, label.shape[axis])))
    return tuple(box)


def prepare_pancreas_ct(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    test_list: str | os.PathLike | Sequence[str] | None = None,
    num_labelled: int | Sequence[int] = (6, 12),
    label_pattern: str = "labels/label{num:04d}.nii.gz",
    hu_window: Sequence[float] = (-125.0, 275.0),
    spacing: float = 1.0,
    margin: int = 25,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert NIH Pancreas-CT (DICOM series + NIfTI labels) to a NIfTI Decathlon folder.

    Steps per case (see the module docstring): DICOM → HU; label reoriented and checked against the image grid;
    HU clipped to ``hu_window``; resampled to ``spacing`` mm isotropic (linear image, nearest label); cropped to
    the pancreas bounding box + ``margin`` voxels per side on all three axes (clamped; an ORACLE crop that uses
    the ground truth of every case, test cases included); z-scored over the crop. Case ``PANCREAS_NNNN`` becomes
    ``imageNNNN``; the test split is ``test_list``, train = the other cases in ascending order.

    Args:
        source_dir: folder of ``PANCREAS_NNNN`` case folders (DICOM files ``**/*.dcm``).
        out_dir: output folder (``imagesTr``, ``labelsTr``, ``dataset.json``).
        test_list: list file or ids ``imageNNNN``; default: the published 20-case test list.
        num_labelled: labelled-set sizes of the protocols in ``dataset.json`` (first N train cases).
        label_pattern: label path relative to ``source_dir`` (or absolute); fields ``{num}`` (int NNNN),
            ``{case}`` (``PANCREAS_NNNN``), ``{name}`` (``imageNNNN``). TCIA: ``labels/label{num:04d}.nii.gz``.
        hu_window: HU clipping range.
        spacing: output voxel size in mm (isotropic).
        margin: crop margin in output voxels on each side.
        overwrite: rewrite cases whose files already exist.
        progress: show a progress bar.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: no case folders, a case without DICOM files or without its label file.
        ValueError: ``test_list`` naming a case that is not in ``source_dir``; DICOM problems (missing slices,
            inconsistent spacing/orientation/size, several series); a label whose geometry differs from its
            image; an empty label; bad arguments.
        ImportError: pydicom is not installed.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    low, high = (float(v) for v in hu_window)
    if not low < high:
        raise ValueError(f"hu_window must be (low, high) with low < high, got {hu_window!r}.")
    if not spacing > 0 or not (isinstance(margin, int) and margin >= 0):
        raise ValueError(f"spacing must be > 0 and margin an int >= 0, got spacing={spacing!r}, margin={margin!r}.")
    cases = _find_cases(source_dir)
    test = resolve_case_list(test_list, PANCREAS_CT_TEST, "test_list")
    unknown = [c for c in test if c not in cases]
    if unknown:
        folders = [f"PANCREAS_{c[len('image'):]}" for c in unknown[:10]]
        raise ValueError(f"test_list names case(s) not found in {source_dir}: {unknown[:10]} (folders {folders}).")
    train = [c for c in cases if c not in set(test)]
    num_labelled = normalise_num_labelled(num_labelled, len(train))

    def label_path(case: str) -> Path:
        num, folder = cases[case]
        return source_dir / label_pattern.format(num=num, case=folder.name, name=case)

    for case in [*train, *test]:
        if not label_path(case).is_file():
            raise FileNotFoundError(f"case {case!r} ({cases[case][1].name}): label file {label_path(case)} is missing.")
    settings = {"hu_window": [low, high], "spacing": float(spacing), "margin": margin}
    check_settings(out_dir, "prepare_pancreas_ct", settings, overwrite)
    target = (float(spacing),) * 3

    def convert_one(case: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
        hu, affine = read_dicom_series(cases[case][1], case)
        label = _label_on_image_grid(label_path(case), hu.shape, affine, case)
        np.clip(hu, low, high, out=hu)
        label_1mm, _ = resample_to_spacing(label, affine, target, order=0)
        box = _crop_box(label_1mm, margin, case)
        image, out_affine = resample_to_spacing(hu, affine, target, order=1, box=box)
        std = float(image.std())
        image = (image - image.mean()) / (std if std > 0 else 1.0)
        return image_nifti(image.astype(np.float32), out_affine), label_nifti(label_1mm[box], out_affine)

    meta = dataset_json(
        name="Pancreas-CT",
        description=(
            f"NIH Pancreas-CT: HU clipped to [{low:g}, {high:g}], resampled to {spacing:g} mm isotropic, cropped to "
            f"the pancreas bounding box + {margin} voxels per side (oracle crop, ground truth of every case), "
            "z-scored over the crop."
        ),
        reference=(
            "Roth et al., DeepOrgan, MICCAI 2015; NIH Pancreas-CT, The Cancer Imaging Archive. Split and "
            "preprocessing of CoraNet (Shi et al., TMI 2021) / MC-Net+ (Wu et al., MedIA 2022)."
        ),
        modality={"0": "CT"},
        labels={"0": "background", "1": "pancreas"},
        train_ids=train,
        test_ids=test,
        num_labelled=num_labelled,
        extra={"spacing_mm": list(target)},
    )
    return write_converted(
        "prepare_pancreas_ct", out_dir, settings, [*train, *test], convert_one, meta, overwrite, progress
    )
