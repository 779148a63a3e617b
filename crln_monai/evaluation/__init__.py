"""Evaluation: medpy-equivalent metrics, bootstrap, UA-MT sliding window, report files and figures, prediction
post-processing and the name of the trained method. The evaluator's handler that writes the report is
:class:`crln_monai.handlers.CaseMetricsReport`."""

from .method import method_name
from .metrics import bootstrap, multiclass_metrics, segmentation_metrics
from .postprocessing import INPUT_SPACE_KEY, segmentation_postprocessing
from .report import case_record, staged_report, write_class_report, write_evaluation_report
from .sliding_window import UAMTSlidingWindowInferer, overlap_for_stride, sliding_window_softmax, window_starts

__all__ = [
    "INPUT_SPACE_KEY",
    "UAMTSlidingWindowInferer",
    "bootstrap",
    "case_record",
    "method_name",
    "multiclass_metrics",
    "overlap_for_stride",
    "segmentation_metrics",
    "segmentation_postprocessing",
    "sliding_window_softmax",
    "staged_report",
    "window_starts",
    "write_class_report",
    "write_evaluation_report",
]
