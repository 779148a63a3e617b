#!/usr/bin/env python
"""Make a thick-slice copy of a NIfTI data set: every ``k``-th slice along one voxel axis, affine adjusted.

The evidence runs of the time-budget protocol (docs/results.md, "Own data on a budget") need a real thick-slice
set; this turns the 0.625-mm LA volumes into 5-mm ones (``--step 8``), as a thick-slice acquisition of the same
anatomy would be. Image and label keep the same slices (``start, start + k, ...``); the affine's column of that
axis is multiplied by ``k`` and its origin moved to the first kept slice, so world coordinates of kept voxels are
unchanged. ``--transpose_first`` also moves that axis to the front of the voxel order and says so in the affine
(the same world geometry, another voxel order), for the "thick axis first" twin of issue 16.

The dataset json (Decathlon: ``training`` with ``image``/``label``, any other keys such as ``train_ids`` and
``test_ids``) is copied with its paths kept and a note in ``description``.

Example::

    python scripts/thick_slices.py ../shared/data/la2018 work/la_thick --step 8
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from crln_monai.io import staged_folder


def reslice(array: np.ndarray, affine: np.ndarray, axis: int, step: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``step``-th slice along ``axis`` from ``start``; the affine maps the kept voxels where they were."""
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, None, step)
    kept = array[tuple(index)]
    new = affine.copy()
    new[:3, 3] = affine[:3, 3] + affine[:3, axis] * start
    new[:3, axis] = affine[:3, axis] * step
    return kept, new


def to_front(array: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Move voxel ``axis`` first; the affine's columns follow, so the world geometry is unchanged."""
    order = [axis] + [a for a in range(3) if a != axis]
    new = affine.copy()
    new[:3, :3] = affine[:3, order]
    return np.ascontiguousarray(np.moveaxis(array, axis, 0)), new


def _write(array: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header, path: Path) -> None:
    image = nib.Nifti1Image(array, affine, header=header)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def convert(
    source: Path, target: Path, step: int, axis: int, start: int, transpose_first: bool, datalist_file: str
) -> Path:
    """Write the thick-slice copy of ``source`` into ``target`` (created through a temporary folder)."""
    meta = json.loads((source / datalist_file).read_text())
    with staged_folder(target.parent, target.name) as stage:  # the folder replaced whole, or left as it was
        work = stage / target.name
        work.mkdir()
        for entry in meta["training"]:
            for key in ("image", "label"):
                if key not in entry:
                    continue
                image = nib.load(str(source / entry[key]))
                array = np.asanyarray(image.dataobj)
                kept, affine = reslice(array, image.affine, axis, step, start)
                if transpose_first:
                    kept, affine = to_front(kept, affine, axis)
                header = image.header.copy()
                _write(kept, affine, header, work / entry[key])
        meta["description"] = (
            f"{meta.get('description', '')} Thick-slice copy: every {step}th slice of voxel axis {axis} from "
            f"{start}{', that axis moved first' if transpose_first else ''} (scripts/thick_slices.py)."
        ).strip()
        (work / datalist_file).write_text(json.dumps(meta, indent=2))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="data set folder with a Decathlon dataset json")
    parser.add_argument("target", type=Path, help="folder to write (replaced when it exists)")
    parser.add_argument("--step", type=int, default=8, help="keep every step-th slice")
    parser.add_argument("--axis", type=int, default=2, help="voxel axis to thin out")
    parser.add_argument("--start", type=int, default=None, help="first kept slice (default step // 2)")
    parser.add_argument("--transpose_first", action="store_true", help="move the thinned axis first (same world)")
    parser.add_argument("--datalist_file", default="dataset.json")
    args = parser.parse_args(argv)
    if args.step < 1 or args.axis not in (0, 1, 2):
        parser.error("--step must be >= 1 and --axis one of 0, 1, 2")
    start = args.step // 2 if args.start is None else args.start
    out = convert(args.source, args.target, args.step, args.axis, start, args.transpose_first, args.datalist_file)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
