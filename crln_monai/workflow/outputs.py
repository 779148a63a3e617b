"""``check_outputs``: create the output folders of a run and prove they are writable before any work starts.

Without it a ``ckpt_dir`` that is a file or read-only fails only when the first checkpoint is written (after an
epoch of training), and inference into a read-only ``output_dir`` fails after the first case with MONAI's
"SaveImage cannot find a suitable writer". Bundle use::

    "initialize": [..., "$crln_monai.workflow.check_outputs({'output_dir': @output_dir})"]

A folder created here that is still empty when the process exits (a run refused or failed before writing
anything into it) is removed again, with the empty parents created with it, so a failed run leaves no empty
``eval/``, ``predictions/``, ``models/`` or ``export/`` behind; folders that existed before are never removed.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["check_outputs", "remove_empty_created"]

_CREATED: list[Path] = []
"""The top-most folder each :func:`check_outputs` call of this process created, in creation order."""
_OWNER = os.getpid()  # a forked child (a data-loader worker) inherits the list but removes nothing


def _first_missing(path: Path) -> Path | None:
    """The top-most part of ``path`` that does not exist yet (what ``mkdir(parents=True)`` creates first)."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def remove_empty_created() -> list[Path]:
    """Remove the folders :func:`check_outputs` created in this process that hold no file; returns them.

    Called when the process exits. Walks each created tree bottom-up and removes the empty folders only, so a
    folder that received a file (and its parents) stays.
    """
    removed: list[Path] = []
    if os.getpid() != _OWNER:
        return removed
    while _CREATED:
        top = _CREATED.pop()
        if not top.is_dir():
            continue
        for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(Path(entry[0]).parts)):
            try:
                os.rmdir(folder)
            except OSError:  # not empty (or gone): keep it
                continue
            removed.append(Path(folder))
    return removed


def check_outputs(folders: Mapping[str, str | os.PathLike]) -> None:
    """Create every folder (with its parents) and write and delete a probe file in it.

    Args:
        folders: config key -> folder path, e.g. ``{"ckpt_dir": "models", "output_dir": "eval"}``; a ``None`` path
            (an output the run does not write) is skipped.

    Raises:
        NotADirectoryError: a path (or one of its parents) is an existing file, naming the key and the path.
        PermissionError: a folder cannot be created or written, naming the key and the path.
        OSError: any other failure to create or write, naming the key and the path.
    """
    for key, folder in folders.items():
        if folder is None:
            continue
        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"output folder {key}={str(path)!r} is an existing file, not a folder.")
        created = _first_missing(path.absolute())
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise NotADirectoryError(
                f"cannot create output folder {key}={str(path)!r}: a part of the path is a file ({e.strerror})."
            ) from None
        except OSError as e:
            raise type(e)(f"cannot create output folder {key}={str(path)!r} ({e.strerror or e}).") from None
        if created is not None:
            if not _CREATED:
                atexit.register(remove_empty_created)
            _CREATED.append(created)
        probe = None
        try:
            handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=path)
            os.close(handle)
        except OSError as e:
            raise type(e)(f"output folder {key}={str(path)!r} is not writable ({e.strerror or e}).") from None
        finally:
            if probe is not None:
                os.unlink(probe)
