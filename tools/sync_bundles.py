#!/usr/bin/env python
"""Generate the shared config files of every non-reference bundle from the reference bundle ``bundles/la``.

The wiring of a CRLN bundle (networks, trainer, losses, handlers, evaluation, inference, DDP) and every value
common to all data sets live only in ``bundles/la``. The other bundles differ from it by a few top-level values
(docs/method.md#hyper-parameters: backbone, patch, sliding-window stride, weak pipeline, default protocol). This script
copies LA's ``train.json``, ``evaluate.json``, ``inference.json`` and ``multi_gpu_train.json`` into each bundle
of :data:`BUNDLE_VALUES`, replacing **only** the declared top-level keys that the file has (a declared key is
never added to a file that lacks it), and puts a ``"_generated_"`` key first (MONAI's config parser keeps
unknown top-level keys as plain, never-resolved values). ``configs/logging.conf`` gets a comment line on top;
``LICENSE`` is copied byte for byte (except where :data:`HANDWRITTEN` says a bundle writes its own). Dataset-specific
files (``metadata.json``, ``docs/README.md``, protocol files, ``multimodal.json``) are hand-written and not touched.
LA's ``inference.json`` is also copied verbatim to :data:`LIBRARY_COPIES` (the inference wiring every exported
bundle gets from ``crln_monai.workflow.export``).

Usage::

    python tools/sync_bundles.py            # (re)write the generated files
    python tools/sync_bundles.py --check    # write nothing; exit 1 and list the out-of-date files

``--root DIR`` points at another repository root (default: the one this script sits in).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crln_monai.workflow.ablation import ABLATION_LADDER

__all__ = [
    "BUNDLE_VALUES",
    "GENERATED_KEY",
    "GENERATED_NOTE",
    "HANDWRITTEN",
    "JSON_FILES",
    "LIBRARY_COPIES",
    "REFERENCE_BUNDLE",
    "TEXT_FILES",
    "generated_files",
    "library_files",
    "main",
    "stale_files",
    "write_generated",
]

REFERENCE_BUNDLE = "la"
"""The bundle (folder under ``bundles/``) that holds the shared wiring and values."""

JSON_FILES: tuple[str, ...] = (
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    *(f"configs/ablation/{rung}.json" for rung in ABLATION_LADDER),
)
"""Generated JSON configs (paths relative to a bundle root)."""

TEXT_FILES: tuple[str, ...] = ("configs/logging.conf", "LICENSE")
"""Generated non-JSON files: ``logging.conf`` with a comment header, ``LICENSE`` verbatim."""

HANDWRITTEN: dict[str, frozenset[str]] = {"custom": frozenset({"LICENSE"})}
"""Per bundle: files of :data:`TEXT_FILES` it writes by hand (the custom bundle's licence speaks of the user's data)."""

LIBRARY_COPIES: dict[str, str] = {"crln_monai/workflow/inference.json": "bundles/la/configs/inference.json"}
"""Library file → the reference file it is a verbatim copy of (paths relative to the repository root)."""

GENERATED_KEY = "_generated_"
GENERATED_NOTE = "by tools/sync_bundles.py from bundles/la; edit bundles/la or the script, not this file"

BUNDLE_VALUES: dict[str, dict[str, Any]] = {
    # NIH Pancreas-CT, default protocol Pancreas-6 (protocol_pancreas12.json for 12 labels). Weak pipeline:
    # min-max + random crop only (docs/method.md#weak-view), so no rot/flip and no brightness.
    "pancreas_ct": {
        "dataset_dir": "data/pancreas_ct",
        "backbone": "vnet",
        "patch_size": [96, 96, 96],
        "sw_stride": [16, 16, 16],
        "weak_rotate_flip": False,
        "weak_brightness": False,
        "class_names": ["background", "pancreas"],
        "num_labelled": 6,
        "num_prototypes": 4,
        "xi": 0.6,
        "lambda_cp": 1.0,
    },
    # BraTS 2019, paper setting FLAIR + whole tumour (multimodal.json for 4 channels / 4 classes); default
    # protocol BraTS-25 (protocol_brats50.json for 50 labels). Weak pipeline as LA.
    "brats19": {
        "dataset_dir": "data/brats19",
        "backbone": "unet3d",
        "in_channels": 1,
        "class_names": ["background", "whole tumour"],
        "patch_size": [96, 96, 96],
        "sw_stride": [16, 16, 16],
        "num_labelled": 25,
        "num_prototypes": 4,
        "xi": 0.1,
        "lambda_cp": 0.5,
    },
    # Users' own data (any organ, modality, classes): LA's wiring and defaults, with every labelled case of the
    # folder used and generic class names; `python -m crln_monai.plan <data> --output plan.json` writes the
    # data-dependent values as an override file layered on this bundle's train.json.
    "custom": {
        "dataset_dir": "data/mine",
        "num_labelled": None,
        "class_names": ["background", "foreground"],
    },
}
"""Per bundle: the top-level keys whose values differ from (or are pinned against) the reference bundle."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"reference config {path} is missing.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"reference config {path} is not valid JSON ({e}).") from e
    if not isinstance(config, dict):
        raise ValueError(f"reference config {path} must hold a JSON object, got {type(config).__name__}.")
    return config


def _generated_json(reference: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """``reference`` with the keys of ``values`` that it has replaced, ``_generated_`` first, as JSON text."""
    config: dict[str, Any] = {GENERATED_KEY: GENERATED_NOTE}
    for key, value in reference.items():
        if key != GENERATED_KEY:
            config[key] = values[key] if key in values else value
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def generated_files(root: str | Path, bundle: str) -> dict[Path, bytes]:
    """The generated files of ``bundle`` as they should be on disk.

    Args:
        root: repository root (holding ``bundles/``).
        bundle: a key of :data:`BUNDLE_VALUES`.

    Returns:
        ``{path under root: file content}`` for :data:`JSON_FILES` and :data:`TEXT_FILES`.

    Raises:
        KeyError: ``bundle`` is not declared in :data:`BUNDLE_VALUES`.
        ValueError: a declared key is a top-level key of none of the reference JSON files (a typo would otherwise
            be silently dropped), or a reference config is not a JSON object.
        FileNotFoundError: a reference file is missing.
    """
    if bundle not in BUNDLE_VALUES:
        raise KeyError(f"bundle {bundle!r} is not declared in BUNDLE_VALUES ({sorted(BUNDLE_VALUES)}).")
    root = Path(root)
    source, target = root / "bundles" / REFERENCE_BUNDLE, root / "bundles" / bundle
    values = BUNDLE_VALUES[bundle]
    references = {name: _read_json(source / name) for name in JSON_FILES}
    unknown = sorted(set(values) - {key for config in references.values() for key in config})
    if unknown:
        raise ValueError(
            f"BUNDLE_VALUES[{bundle!r}] declares {unknown}, which no reference config of bundles/{REFERENCE_BUNDLE} "
            f"has at top level ({', '.join(JSON_FILES)})."
        )
    files = {target / name: _generated_json(config, values).encode() for name, config in references.items()}
    logging_conf = (source / "configs/logging.conf").read_bytes()
    files[target / "configs/logging.conf"] = f"# {GENERATED_KEY}: {GENERATED_NOTE}\n".encode() + logging_conf
    files[target / "LICENSE"] = (source / "LICENSE").read_bytes()
    for name in HANDWRITTEN.get(bundle, ()):
        files.pop(target / name)
    return files


def library_files(root: str | Path) -> dict[Path, bytes]:
    """The library's verbatim copies of reference files (:data:`LIBRARY_COPIES`) as they should be on disk."""
    root = Path(root)
    return {root / copy: (root / source).read_bytes() for copy, source in LIBRARY_COPIES.items()}


def _out_of_date(root: str | Path, bundles: Sequence[str] | None) -> dict[Path, bytes]:
    """The generated files that are missing or differ on disk, with the content they should have."""
    out_of_date = {}
    expected = {} if bundles else library_files(root)
    for bundle in bundles or list(BUNDLE_VALUES):
        expected.update(generated_files(root, bundle))
    for path, content in expected.items():
        if not path.is_file() or path.read_bytes() != content:
            out_of_date[path] = content
    return out_of_date


def stale_files(root: str | Path, bundles: Sequence[str] | None = None) -> list[Path]:
    """Generated files that are missing or differ from what :func:`generated_files` gives.

    Args:
        root: repository root.
        bundles: bundles to check; default: all of :data:`BUNDLE_VALUES`.

    Returns:
        the out-of-date paths, in a stable order (empty when everything is up to date).
    """
    return list(_out_of_date(root, bundles))


def write_generated(root: str | Path, bundles: Sequence[str] | None = None) -> list[Path]:
    """(Re)write the out-of-date generated files; returns the paths written."""
    written = []
    for path, content in _out_of_date(root, bundles).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write, or with ``--check`` verify, the generated files. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root")
    parser.add_argument("bundles", nargs="*", help=f"bundles to process (default: {', '.join(BUNDLE_VALUES)})")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.check:
        stale = stale_files(root, args.bundles)
        for path in stale:
            print(f"out of date: {path.relative_to(root)}", file=sys.stderr)
        if stale:
            print("run `python tools/sync_bundles.py` to regenerate them.", file=sys.stderr)
        return 1 if stale else 0
    for path in write_generated(root, args.bundles):
        print(f"wrote {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
