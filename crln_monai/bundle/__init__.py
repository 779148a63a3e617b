"""Bundle helpers: offline metadata verification, switch checks."""

from .flags import check_flags
from .verify import METADATA_SCHEMA, verify_bundle_metadata

__all__ = ["METADATA_SCHEMA", "check_flags", "verify_bundle_metadata"]
