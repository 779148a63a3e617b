"""BraTS 2019 (per-case NIfTI folders) → NIfTI Decathlon folder, SSL4MIS-style preprocessing.

Input: ``<source>/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (``.nii`` also accepted), the case folders either
directly in ``source_dir`` or one level down (the challenge's ``HGG/`` and ``LGG/``).

Per case (paper setting, ``multimodal=False``): FLAIR only; crop to the bounding box of the non-zero FLAIR voxels
(inclusive: SSL4MIS's slicing drops the last row of the box, we keep it); clip intensities above the 99.9th
percentile of the cropped volume (all voxels of the box, as SSL4MIS); z-score with the mean/std of the voxels
> 0, applied to the whole box (background becomes ``-mean/std``, as SSL4MIS); label = whole tumour (all BraTS
labels > 0 → 1).

``multimodal=True``: FLAIR, T1, T1ce, T2 stacked channel-last in one 4-D NIfTI ``(X, Y, Z, 4)`` (MONAI's
``LoadImaged`` + ``EnsureChannelFirstd`` read it as 4 channels); box = non-zero voxels of any modality; clip and
z-score per channel; label map of nested regions: 0 background, 1 oedema (BraTS 2), 2 necrotic / non-enhancing
core (BraTS 1), 3 enhancing tumour (BraTS 4); whole tumour = label >= 1, tumour core = label >= 2, enhancing = 3.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from .nifti_io import image_nifti, label_nifti
from .output import check_settings, dataset_json, normalise_num_labelled, write_converted
from .splits import BRATS19_TEST, BRATS19_TRAIN, BRATS19_VAL, read_case_list

__all__ = ["BRATS_MODALITIES", "BRATS_NESTED_LABELS", "prepare_brats19"]

BRATS_MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
"""Channel order of the multimodal output."""

BRATS_NESTED_LABELS: dict[int, int] = {0: 0, 2: 1, 1: 2, 4: 3}
"""BraTS label → multimodal output label (ordinal: whole tumour >= 1, tumour core >= 2, enhancing = 3)."""

_CLIP_PERCENTILE = 99.9


def _find_case_folders(source_dir: Path, cases: Sequence[str]) -> dict[str, Path]:
    """The folder of every case, in ``source_dir`` or one level below it."""
    if not source_dir.is_dir():
        raise FileNotFoundError(f"source_dir {source_dir} does not exist.")
    wanted, folders = set(cases), {}
    for parent in [source_dir, *sorted(p for p in source_dir.iterdir() if p.is_dir())]:
        for folder in sorted(parent.iterdir()):
            if folder.name in wanted and folder.is_dir():
                folders.setdefault(folder.name, folder)
    missing = [c for c in cases if c not in folders]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} listed case folder(s) not found in {source_dir} (or one level down): {missing[:10]}."
        )
    return folders


def _modality_file(folder: Path, case: str, modality: str) -> Path:
    for ending in (".nii.gz", ".nii"):
        path = folder / f"{case}_{modality}{ending}"
        if path.is_file():
            return path
    expected = folder / f"{case}_{modality}.nii.gz"
    raise FileNotFoundError(f"case {case!r}: modality {modality!r} is missing ({expected}).")


def _load(path: Path, case: str, what: str, reference: nib.Nifti1Image | None) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"case {case!r}: {what} {path} must be 3-D, got shape {data.shape}.")
    if reference is not None and (
        data.shape != reference.shape or not np.allclose(img.affine, reference.affine, atol=1e-3)
    ):
        raise ValueError(
            f"case {case!r}: the geometry of {what} {path} (shape {data.shape}) differs from the FLAIR image "
            f"(shape {reference.shape}); affines\n{img.affine}\nvs\n{reference.affine}."
        )
    return data, img


def _normalise(volume: np.ndarray, case: str, modality: str) -> np.ndarray:
    """Clip above the 99.9th percentile, then z-score with the statistics of the voxels > 0."""
    volume = volume.astype(np.float64)
    volume = np.minimum(volume, np.percentile(volume, _CLIP_PERCENTILE))
    foreground = volume[volume > 0]
    if foreground.size == 0 or foreground.std() == 0:
        raise ValueError(f"case {case!r}: modality {modality!r} has no non-constant positive voxels to z-score.")
    return ((volume - foreground.mean()) / foreground.std()).astype(np.float32)


def _brain_box(mask: np.ndarray, case: str) -> tuple[slice, ...]:
    if not mask.any():
        raise ValueError(f"case {case!r}: the image has no non-zero voxel; cannot crop to the brain.")
    box = []
    for axis in range(3):
        indices = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(indices[0]), int(indices[-1]) + 1))
    return tuple(box)


def prepare_brats19(
    source_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split_dir: str | os.PathLike | None = None,
    multimodal: bool = False,
    num_labelled: int | Sequence[int] = (25, 50),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert BraTS 2019 case folders to a NIfTI Decathlon folder (paper setting: FLAIR, whole tumour).

    Args:
        source_dir: folder of case folders (or of ``HGG/``, ``LGG/`` holding them).
        out_dir: output folder (``imagesTr``, ``labelsTr``, ``dataset.json``).
        split_dir: folder with ``train.txt``, ``val.txt``, ``test.txt``; default: the SSL4MIS split (250/25/60).
        multimodal: 4 channels (FLAIR, T1, T1ce, T2) in one 4-D NIfTI and nested labels 0/1/2/3 (see the module
            docstring) instead of FLAIR + whole tumour.
        num_labelled: labelled-set sizes of the protocols in ``dataset.json`` (first N of ``train.txt``).
        overwrite: rewrite cases whose files already exist.
        progress: show a progress bar.

    Returns:
        ``out_dir``; its ``dataset.json`` has ``train_ids``, ``val_ids``, ``test_ids``.

    Raises:
        FileNotFoundError: a listed case folder, a modality or the segmentation is missing; a split file is missing.
        ValueError: a modality or segmentation whose geometry differs from FLAIR, an all-zero image, BraTS labels
            outside {0, 1, 2, 4} (multimodal), a case in two split lists.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if split_dir is None:
        train, val, test = list(BRATS19_TRAIN), list(BRATS19_VAL), list(BRATS19_TEST)
    else:
        train, val, test = (read_case_list(Path(split_dir) / f"{s}.txt") for s in ("train", "val", "test"))
    ordered = [*train, *val, *test]
    twice = sorted({c for c in ordered if ordered.count(c) > 1})
    if twice:
        raise ValueError(f"case id(s) in more than one of train/val/test: {twice[:10]}.")
    num_labelled = normalise_num_labelled(num_labelled, len(train))
    folders = _find_case_folders(source_dir, ordered)
    modalities = BRATS_MODALITIES if multimodal else BRATS_MODALITIES[:1]
    for case in ordered:
        for name in (*modalities, "seg"):
            _modality_file(folders[case], case, name)
    settings = {"multimodal": bool(multimodal)}
    check_settings(out_dir, "prepare_brats19", settings, overwrite)

    def convert_one(case: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
        folder = folders[case]
        flair, reference = _load(_modality_file(folder, case, "flair"), case, "modality 'flair'", None)
        channels = [flair] + [
            _load(_modality_file(folder, case, m), case, f"modality {m!r}", reference)[0] for m in modalities[1:]
        ]
        seg, _ = _load(_modality_file(folder, case, "seg"), case, "segmentation", reference)
        seg = np.rint(seg).astype(np.int64)
        box = _brain_box(np.any([c != 0 for c in channels], axis=0), case)
        if multimodal:
            unknown = sorted(set(np.unique(seg).tolist()) - set(BRATS_NESTED_LABELS))
            if unknown:
                raise ValueError(f"case {case!r}: segmentation has labels {unknown} outside BraTS's {{0, 1, 2, 4}}.")
            lookup = np.zeros(max(BRATS_NESTED_LABELS) + 1, dtype=np.uint8)
            for brats, ours in BRATS_NESTED_LABELS.items():
                lookup[brats] = ours
            label = lookup[seg[box]]
        else:
            label = (seg[box] > 0).astype(np.uint8)
        image = np.stack([_normalise(c[box], case, m) for c, m in zip(channels, modalities)], axis=-1)
        if not multimodal:
            image = image[..., 0]
        affine = reference.affine.copy()
        affine[:3, 3] = affine[:3, :3] @ np.array([b.start for b in box], dtype=np.float64) + affine[:3, 3]
        return image_nifti(image, affine), label_nifti(label, affine)

    if multimodal:
        modality = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
        labels = {"0": "background", "1": "oedema (whole tumour only)", "2": "necrotic / non-enhancing tumour core",
                  "3": "enhancing tumour"}
        extra = {"label_regions": {"whole_tumour": "label >= 1", "tumour_core": "label >= 2",
                                   "enhancing_tumour": "label == 3"}}
    else:
        modality, labels, extra = {"0": "FLAIR"}, {"0": "background", "1": "whole_tumour"}, {}
    meta = dataset_json(
        name="BraTS2019",
        description=(
            "BraTS 2019 training data, SSL4MIS split; cropped to the brain bounding box, intensities above the "
            "99.9th percentile clipped, z-scored over non-zero voxels; "
            + ("4 modalities, nested tumour labels." if multimodal else "FLAIR only, whole tumour (labels > 0).")
        ),
        reference=(
            "Menze et al., TMI 2015; Bakas et al., Sci. Data 2017 and arXiv:1811.02629 (BraTS). Split: "
            "HiLab-git/SSL4MIS data/BraTS2019."
        ),
        modality=modality,
        labels=labels,
        train_ids=train,
        val_ids=val,
        test_ids=test,
        num_labelled=num_labelled,
        extra=extra,
    )
    return write_converted("prepare_brats19", out_dir, settings, ordered, convert_one, meta, overwrite, progress)
