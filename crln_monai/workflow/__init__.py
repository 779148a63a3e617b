"""What the bundles' workflow JSON calls: the configuration schema and check, the output-folder check, switch checks,
offline metadata verification, the config-facing calls that keep conditions out of bundle JSON (wiring), the ablation
ladder, and the exporter with its model card and export template (``inference.json``)."""

from ..overrides import describe_differences, settings_differences
from .ablation import ABLATION_LADDER, ablation_file, ablation_overrides
from .check import check_config, plain_values
from .export import BundleExporter, export_bundle, export_name, inference_config, record_test_results
from .flags import check_flags
from .outputs import check_outputs
from .schema import RELATIONS, SCHEMA, KeySpec, Relation
from .verify import METADATA_SCHEMA, verify_bundle_metadata
from .wiring import attach, default_device, epoch_step, predictions_dir, resume_objects, validation_evaluator

__all__ = [
    "ABLATION_LADDER",
    "ablation_file",
    "ablation_overrides",
    "attach",
    "default_device",
    "epoch_step",
    "predictions_dir",
    "resume_objects",
    "validation_evaluator",
    "BundleExporter",
    "METADATA_SCHEMA",
    "RELATIONS",
    "SCHEMA",
    "KeySpec",
    "Relation",
    "check_config",
    "check_flags",
    "check_outputs",
    "describe_differences",
    "export_bundle",
    "export_name",
    "inference_config",
    "plain_values",
    "record_test_results",
    "settings_differences",
    "verify_bundle_metadata",
]
