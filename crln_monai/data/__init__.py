"""Data: the one reader of a data set (its json and headers), datalists and protocols, the pre-flight data check, a
cache that fails cleanly, the two-stream sampler, the weak pipelines, the strong view (a GPU batch transform the trainer
applies), synthetic LA-like volumes."""

from .cache import CacheDataset, CaseLoadError
from .checks import check_cases
from .datalist import (
    DATALIST_KEYS,
    case_id_from_filename,
    export_name,
    load_datalist_json,
    save_datalist_json,
    semi_supervised_datalist,
    split_channel_suffix,
    without_labels,
)
from .dataset import DataSet, read_dataset
from .geometry import ResampleOutsideTrainingd, trained_geometry
from .inputs import SEGMENTATION_DESCRIPTION, inference_inputs, is_segmentation, nifti_files, segmentation_path
from .sampler import TwoStreamBatchSampler
from .strong_augment import CUTMIX_LAMBDAS, StrongAugment
from .synthetic import make_synthetic_dataset, synthetic_case
from .transforms import EnsureLabeld, evaluation_transforms, semi_supervised_train_transforms

__all__ = [
    "DATALIST_KEYS",
    "SEGMENTATION_DESCRIPTION",
    "CUTMIX_LAMBDAS",
    "CacheDataset",
    "CaseLoadError",
    "DataSet",
    "EnsureLabeld",
    "ResampleOutsideTrainingd",
    "StrongAugment",
    "TwoStreamBatchSampler",
    "case_id_from_filename",
    "check_cases",
    "evaluation_transforms",
    "export_name",
    "inference_inputs",
    "is_segmentation",
    "load_datalist_json",
    "make_synthetic_dataset",
    "nifti_files",
    "read_dataset",
    "save_datalist_json",
    "segmentation_path",
    "semi_supervised_datalist",
    "semi_supervised_train_transforms",
    "split_channel_suffix",
    "synthetic_case",
    "trained_geometry",
    "without_labels",
]
