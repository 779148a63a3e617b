"""Evaluation: medpy-equivalent metrics, bootstrap, UA-MT sliding window, report files and the evaluator handler."""

from .case_report_handler import CaseMetricsReport, case_id
from .metrics import bootstrap, multiclass_metrics, segmentation_metrics
from .report import case_record, write_evaluation_report
from .sliding_window import UAMTSlidingWindowInferer, overlap_for_stride, sliding_window_softmax, window_starts

__all__ = [
    "CaseMetricsReport",
    "UAMTSlidingWindowInferer",
    "bootstrap",
    "case_id",
    "case_record",
    "multiclass_metrics",
    "overlap_for_stride",
    "segmentation_metrics",
    "sliding_window_softmax",
    "window_starts",
    "write_evaluation_report",
]
