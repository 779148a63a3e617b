"""Data preparation: convert the public LA, Pancreas-CT and BraTS 2019 releases to NIfTI Decathlon folders.

Every converter writes ``imagesTr/<case>.nii.gz``, ``labelsTr/<case>.nii.gz`` (true spacing and affine) and a
``dataset.json`` with ``training``, ``train_ids``, ``test_ids`` (+ ``val_ids``), ``labels``, ``modality``,
``numTraining`` and a ``protocol`` block, readable by :func:`crln_monai.data.semi_supervised_datalist`. All or nothing:
a run that fails (a corrupt case, an interrupt) leaves the output folder as it was (:func:`.output.write_converted`).
Reruns skip complete cases and reproduce the same bytes. The h5/NRRD/DICOM readers are optional extras
(``pip install crln-monai[convert]``), imported only when used.
"""

from __future__ import annotations

from .brats import BRATS_MODALITIES, BRATS_NESTED_LABELS, prepare_brats19
from .dicom import read_dicom_series
from .la import UA_MT_CROP_HELP, prepare_la, prepare_la_from_h5, prepare_la_from_nrrd
from .nifti_io import encode_uint8_grid, is_complete_nifti_gz
from .pancreas import prepare_pancreas_ct
from .splits import (
    BRATS19_TEST,
    BRATS19_TRAIN,
    BRATS19_VAL,
    LA_TEST,
    LA_TRAIN,
    PANCREAS_CT_TEST,
    read_case_list,
)

__all__ = [
    "BRATS19_TEST",
    "BRATS19_TRAIN",
    "BRATS19_VAL",
    "BRATS_MODALITIES",
    "BRATS_NESTED_LABELS",
    "LA_TEST",
    "LA_TRAIN",
    "PANCREAS_CT_TEST",
    "UA_MT_CROP_HELP",
    "encode_uint8_grid",
    "is_complete_nifti_gz",
    "prepare_brats19",
    "prepare_la",
    "prepare_la_from_h5",
    "prepare_la_from_nrrd",
    "prepare_pancreas_ct",
    "read_case_list",
    "read_dicom_series",
]
