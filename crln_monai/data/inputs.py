"""Inference inputs: a folder, a file or a list of NIfTI files, checked before anything runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["nifti_files"]

_SUFFIXES = (".nii.gz", ".nii")


def nifti_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The NIfTI files named by ``inputs``: a folder (its ``*.nii.gz`` and ``*.nii``, sorted), one file, or a list of
    files and folders.

    Raises:
        FileNotFoundError: a named path does not exist, or a folder holds no NIfTI file.
        ValueError: a named file is not NIfTI.
    """
    if isinstance(inputs, (str, os.PathLike)):
        path = Path(inputs)
        if path.is_dir():
            files = sorted(str(p) for p in path.iterdir() if p.name.endswith(_SUFFIXES))
            if not files:
                raise FileNotFoundError(f"no NIfTI files (*.nii.gz, *.nii) in input folder {path}")
            return files
        inputs = [path]
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():  # a folder in a list: its NIfTI files, as for a folder alone
            files += nifti_files(path)
            continue
        if not path.is_file():
            raise FileNotFoundError(f"input {path} not found; expected a NIfTI file or a folder of NIfTI files.")
        if not path.name.endswith(_SUFFIXES):
            raise ValueError(f"input {path} is not NIfTI (expected .nii.gz or .nii)")
        files.append(str(path))
    if not files:
        raise FileNotFoundError("no input files given")
    return files
