"""Bundle helpers: offline metadata verification."""

from .verify import METADATA_SCHEMA, verify_bundle_metadata

__all__ = ["METADATA_SCHEMA", "verify_bundle_metadata"]
