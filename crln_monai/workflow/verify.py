"""Offline ``verify_metadata`` for our bundles.

``python -m monai.bundle verify_metadata`` downloads the schema named in ``metadata.json`` and fails
offline (a URLError, unless a schema file already exists at ``--filepath``). We ship a JSON schema of the
mandatory keys of the MONAI Bundle Specification, written from the specification, and hand it to MONAI's own
``verify_metadata`` as an existing file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from monai.bundle import verify_metadata

__all__ = ["METADATA_SCHEMA", "verify_bundle_metadata"]

METADATA_SCHEMA = Path(__file__).with_name("metadata_schema.json")


def verify_bundle_metadata(meta_file: str | os.PathLike) -> None:
    """Validate ``meta_file`` against the shipped schema with ``monai.bundle.verify_metadata``, offline.

    Raises:
        FileNotFoundError: when ``meta_file`` does not exist.
        ValueError: naming the missing or malformed key (raised by MONAI from the jsonschema error).
    """
    meta_file = Path(meta_file)
    if not meta_file.is_file():
        raise FileNotFoundError(f"bundle metadata not found: {meta_file}")
    with tempfile.TemporaryDirectory() as tmp:
        schema = Path(tmp) / "schema.json"
        shutil.copy(METADATA_SCHEMA, schema)
        verify_metadata(meta_file=str(meta_file), filepath=str(schema), create_dir=False)
