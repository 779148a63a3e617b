"""Inference inputs: a folder, a file or a list of NIfTI files, checked before anything runs, and the one output
file of each input case.

* :func:`nifti_files` lists the NIfTI files a ``--input`` names (hidden files such as macOS ``._x.nii.gz`` and the
  writers' temporary files left out).
* :func:`inference_inputs` turns them into cases (``{"image": path | [channel paths], "case": id}``) and checks,
  before any work, that each case gets its own output ``<output_dir>/<case>_seg.nii.gz``
  (:func:`segmentation_path`) and that no output would overwrite an input or a file this tool did not write.
* Every label map written by inference and evaluation carries :data:`SEGMENTATION_DESCRIPTION` in its NIfTI
  header's ``descrip`` field (:func:`is_segmentation`), so a folder used as both input and output folder never has
  its own predictions segmented again (found by the header, not by the ``_seg`` name: a user's ``x_seg.nii.gz`` is
  not mistaken for one, and a renamed prediction is still known).

Case ids are file names without the ending (``a.nii.gz`` → ``a``). nnU-Net test folders (``<case>_0000.nii.gz``,
``<case>_0001.nii.gz``, ...) are grouped into one case per ``<case>`` as the data set reader groups them
(:func:`crln_monai.data.case_id_from_filename` with ``strip_channel``): when every file of the inputs carries a
channel suffix and each case's channels are ``0 .. n-1``. Files whose names differ only in the ending (``a.nii``
beside ``a.nii.gz``) are named with it (cases ``a_nii`` and ``a_nii_gz``: one output per input); two inputs that
share the whole file name (``p1/scan.nii.gz`` and ``p2/scan.nii.gz``) would write one output and are refused,
naming both, before any work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib

from .datalist import case_id_from_filename, split_channel_suffix

__all__ = ["SEGMENTATION_DESCRIPTION", "inference_inputs", "is_segmentation", "nifti_files", "segmentation_path"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".nii.gz", ".nii")

SEGMENTATION_DESCRIPTION = "crln-monai segmentation"
"""NIfTI header ``descrip`` of every label map this package writes (:mod:`crln_monai.evaluation.postprocessing`)."""

_Inputs = str | os.PathLike | Sequence[str | os.PathLike]


def segmentation_path(output_dir: str | os.PathLike, case: str) -> Path:
    """The label map of ``case``: ``<output_dir>/<case>_seg.nii.gz`` (inference and evaluation name it so)."""
    return Path(output_dir) / f"{case}_seg.nii.gz"


def is_segmentation(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a label map written by this package (its header's ``descrip``); ``False`` for any file
    that is not a readable NIfTI."""
    try:
        description = nib.load(os.fspath(path)).header["descrip"].item()
    except Exception:  # noqa: BLE001 - any unreadable file is simply not one of ours
        return False
    return isinstance(description, bytes) and description.decode(errors="replace").startswith(SEGMENTATION_DESCRIPTION)


def _listed(inputs: _Inputs) -> list[tuple[str, Path | None]]:
    """``(file, the folder it was found in or None when named)`` for every NIfTI file ``inputs`` names."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[tuple[str, Path | None]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = sorted(
                str(p) for p in path.iterdir()
                if p.name.endswith(_SUFFIXES) and not p.name.startswith(".") and not p.is_dir()
            )  # fmt: skip
            if not files:
                raise FileNotFoundError(f"no NIfTI files (*.nii.gz, *.nii) in input folder {path}")
            found += [(f, path) for f in files]
            continue
        if not path.is_file():
            raise FileNotFoundError(f"input {path} not found; expected a NIfTI file or a folder of NIfTI files.")
        if not path.name.endswith(_SUFFIXES):
            raise ValueError(f"input {path} is not NIfTI (expected .nii.gz or .nii)")
        found.append((str(path), None))
    if not found:
        raise FileNotFoundError("no input files given")
    return found


def nifti_files(inputs: _Inputs) -> list[str]:
    """The NIfTI files named by ``inputs``: a folder (its ``*.nii.gz`` and ``*.nii``, sorted, hidden files left out),
    one file, or a list of files and folders.

    Raises:
        FileNotFoundError: a named path does not exist, or a folder holds no NIfTI file.
        ValueError: a named file is not NIfTI.
    """
    return [path for path, _ in _listed(inputs)]


def _first(image: str | list[str]) -> str:
    return image if isinstance(image, str) else image[0]


def _collision(first: str, second: str, case: str, output: Path) -> ValueError:
    return ValueError(
        f"inputs {first} and {second} are both case {case!r} and would both be written to {output}; expected one "
        "input per case name: rename or remove one of them, or segment them in separate runs."
    )


def _cases(files: list[str], in_channels: int | None, output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One item per case: nnU-Net channel files grouped (see the module docstring), any other file alone."""
    parsed = [(path, *split_channel_suffix(path)) for path in files]
    if parsed and all(channel is not None for _, _, channel in parsed):
        groups: dict[str, dict[int, str]] = {}
        for path, case, channel in parsed:
            channels = groups.setdefault(case, {})
            if channel in channels:
                raise _collision(channels[channel], path, case, segmentation_path(output_dir, case))
            channels[channel] = path
        gap = next((c for c, channels in groups.items() if sorted(channels) != list(range(len(channels)))), None)
        if gap is None:
            return [
                {"image": chans[0] if len(chans) == 1 else [chans[i] for i in range(len(chans))], "case": case}
                for case, chans in groups.items()
            ]
        if in_channels is not None and in_channels > 1:
            names = ", ".join(Path(groups[gap][c]).name for c in sorted(groups[gap]))
            raise ValueError(
                f"input case {gap!r} has the channel files {names} (channels {sorted(groups[gap])}); expected "
                f"{gap}_0000 .. {gap}_{in_channels - 1:04d} (nnU-Net naming, in_channels={in_channels})."
            )
    return [{"image": path, "case": case} for path, case in zip(files, _case_names(files))]


def _case_names(files: list[str]) -> list[str]:
    """Case ids of single files; where files of one id differ in their ending, the ending joins the id."""
    ids = [case_id_from_filename(path) for path in files]
    names = list(ids)
    for case in {c for c in ids if ids.count(c) > 1}:
        clashing = [i for i, c in enumerate(ids) if c == case]
        if len({Path(files[i]).name for i in clashing}) == len(clashing):  # a.nii beside a.nii.gz
            for i in clashing:
                names[i] = Path(files[i]).name.replace(".", "_")
            logger.info(f"inputs {', '.join(files[i] for i in clashing)} share case {case!r}: named by their ending")
    return names


def _check_outputs(items: list[dict[str, Any]], output_dir: str | os.PathLike) -> None:
    """Refuse two cases with one output, an output that is an input, and an output that would overwrite a file this
    package did not write."""
    inputs = {
        os.path.realpath(path): path
        for item in items
        for path in ([item["image"]] if isinstance(item["image"], str) else item["image"])
    }
    seen: dict[Path, dict[str, Any]] = {}
    for item in items:
        output = segmentation_path(output_dir, item["case"])
        if output in seen:
            raise _collision(_first(seen[output]["image"]), _first(item["image"]), item["case"], output)
        seen[output] = item
        image = _first(item["image"])
        real = os.path.realpath(output)
        if real in inputs:
            raise ValueError(
                f"output {output} of input {image} would overwrite the input {inputs[real]}; expected outputs apart "
                "from the inputs: choose another output_dir."
            )
        if os.path.lexists(output) and not is_segmentation(output):
            raise ValueError(
                f"output {output} of input {image} exists and was not written by crln-monai; expected a free name "
                "(or an earlier prediction, which is replaced): move that file or choose another output_dir."
            )


def inference_inputs(
    inputs: _Inputs, output_dir: str | os.PathLike, in_channels: int | None = None
) -> list[dict[str, Any]]:
    """The cases an inference run segments, checked against the outputs they will write; before any work.

    Label maps written by this package (:func:`is_segmentation`) found in an input folder are left out (an input
    folder that is also the output folder); named explicitly, one is refused.

    Args:
        inputs: a folder, a NIfTI file, or a list of files and folders (``--input``).
        output_dir: the folder the ``<case>_seg.nii.gz`` label maps go to.
        in_channels: the model's channels; with more than one, nnU-Net channel files that do not make up channels
            ``0 .. n-1`` of a case are refused.

    Returns:
        ``[{"image": path | [channel paths], "case": id}, ...]``, in file order.

    Raises:
        FileNotFoundError: a named path does not exist; a folder holds no NIfTI file, or only label maps of ours.
        ValueError: a named file is not NIfTI or is one of our label maps; two inputs share a file name (one output);
            an output would overwrite an input or a file not written by this package; incomplete nnU-Net channels.
    """
    images: list[str] = []
    skipped: dict[Path, list[str]] = {}
    listed = _listed(inputs)
    for path, folder in listed:
        if not is_segmentation(path):
            images.append(path)
        elif folder is None:
            raise ValueError(
                f"input {path} is a label map written by crln-monai (NIfTI descrip {SEGMENTATION_DESCRIPTION!r}); "
                "expected an image to segment."
            )
        else:
            skipped.setdefault(folder, []).append(path)
    kept = set(images)
    for folder, paths in skipped.items():
        names = ", ".join(Path(p).name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        if not any(f == folder and p in kept for p, f in listed):
            raise FileNotFoundError(
                f"no images in input folder {folder}: its {len(paths)} NIfTI file(s) ({names}) are label maps "
                "written by crln-monai; expected images to segment."
            )
        logger.info(f"input folder {folder}: left out {len(paths)} label map(s) written by crln-monai ({names})")
    items = _cases(images, in_channels, output_dir)
    _check_outputs(items, output_dir)
    return items
