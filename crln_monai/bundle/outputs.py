"""``check_outputs``: create the output folders of a run and prove they are writable before any work starts.

Without it a ``ckpt_dir`` that is a file or read-only fails only when the first checkpoint is written (after an
epoch of training), and inference into a read-only ``output_dir`` fails after the first case with MONAI's
"SaveImage cannot find a suitable writer". Bundle use::

    "initialize": [..., "$crln_monai.bundle.check_outputs({'output_dir': @output_dir})"]
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["check_outputs"]


def check_outputs(folders: Mapping[str, str | os.PathLike]) -> None:
    """Create every folder (with its parents) and write and delete a probe file in it.

    Args:
        folders: config key -> folder path, e.g. ``{"ckpt_dir": "models", "output_dir": "eval"}``.

    Raises:
        NotADirectoryError: a path (or one of its parents) is an existing file, naming the key and the path.
        PermissionError: a folder cannot be created or written, naming the key and the path.
        OSError: any other failure to create or write, naming the key and the path.
    """
    for key, folder in folders.items():
        path = Path(folder)
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"output folder {key}={str(path)!r} is an existing file, not a folder.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise NotADirectoryError(
                f"cannot create output folder {key}={str(path)!r}: a part of the path is a file ({e.strerror})."
            ) from None
        except OSError as e:
            raise type(e)(f"cannot create output folder {key}={str(path)!r} ({e.strerror or e}).") from None
        probe = None
        try:
            handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=path)
            os.close(handle)
        except OSError as e:
            raise type(e)(f"output folder {key}={str(path)!r} is not writable ({e.strerror or e}).") from None
        finally:
            if probe is not None:
                os.unlink(probe)
