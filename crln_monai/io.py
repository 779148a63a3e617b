"""Atomic writes, one scheme for the whole package: a file or a folder's entries are replaced whole or not at all.

- :func:`atomic_write` writes one file: bytes, text or a ``write(file)`` function, into ``.<name>.<random>.tmp``
  beside ``path``, then one ``os.replace``. :func:`atomic_path` is the same for a writer that takes a file name
  (nibabel, MONAI's image writers). A failed write removes the temporary and leaves the previous file byte for
  byte; the file gets the permissions the umask allows, as a plain ``open(path, "w")`` would (``tempfile.mkstemp``
  would make every file 0600). :func:`remove_stale_temporaries` deletes what a killed write left.
- :func:`staged_folder` writes several entries of a folder (files or whole sub-folders, e.g. an export) into
  ``<folder>/.<label>-<random>.tmp``, each moved into place with one rename when the block succeeds; on failure the
  folder stays as it was.

Every writer that replaces a file or a folder's entries (checkpoints, history, reports, label maps, exports,
datalists, plans, converted and synthetic data sets) goes through these; nothing here imports the rest of the
package, so every layer may import it.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "remove_stale_temporaries", "staged_folder"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A new empty temporary file beside ``path`` to write; moved onto ``path`` when the block succeeds.

    The temporary is ``.<name>.<random>.tmp<suffix>`` (``suffix`` for writers that choose the format by the
    ending, e.g. ``".nii.gz"``), created with mode 0o666 so that the kernel applies the umask (and a default ACL).
    The parent folder is created when missing. On failure the temporary is removed, ``path`` is untouched and the
    exception propagates.

    Yields:
        the temporary file's path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} after 100 tries")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike,
    content: bytes | str | Callable[[IO], Any],
    mode: str | None = None,
    fsync: bool = False,
    **open_kwargs: Any,
) -> Path:
    """Write ``content`` to ``path`` through :func:`atomic_path`: a reader sees the old file or the new one, whole.

    Args:
        path: the file.
        content: the bytes, the text, or ``write(file)`` called with the open temporary file.
        mode: the ``open`` mode; default ``"w"`` for text, ``"wb"`` otherwise.
        fsync: flush the file to the disk before it replaces ``path`` (the converters' data sets).
        open_kwargs: passed to ``open`` (``newline``, ``encoding``).

    Returns:
        ``path``.
    """
    path = Path(path)
    if mode is None:
        mode = "w" if isinstance(content, str) else "wb"
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        if callable(content):
            content(f)
        else:
            f.write(content)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries an interrupted :func:`atomic_write` of ``path`` left beside it; returns them.

    Only names of the form ``.<name>.<random>.tmp`` are touched (``tempfile.mkstemp``'s random part too), nothing
    else in the folder.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")
    removed = []
    for entry in path.parent.iterdir():
        if pattern.fullmatch(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        logger.info(f"{path.parent}: removed {len(removed)} stale temporary file(s) of {path.name}")
    return removed


def _tree(path: Path) -> dict[str, tuple[int, int]] | None:
    """Relative path → (device, inode) of each file under ``path`` (``path`` itself if a file); None if absent."""
    if path.is_file():
        info = path.stat()
        return {"": (info.st_dev, info.st_ino)}
    if not path.is_dir():
        return None
    found = {}
    for folder, subfolders, files in os.walk(path):
        for name in subfolders + files:
            item = Path(folder) / name
            info = item.lstat()
            found[str(item.relative_to(path))] = (info.st_dev, info.st_ino) if not item.is_dir() else (0, 0)
    return found


def _move_into_place(stage: Path, folder: Path, last: Sequence[str]) -> set[str]:
    """Move each entry of ``stage`` into ``folder`` with one rename, ``last`` in that order at the end; returns the
    names. An entry that is already in place (the same files: hard links) is left alone, modification times too;
    a folder (or an entry replacing one) is swapped: the old one goes into ``stage`` and is deleted with it."""
    order = {name: i for i, name in enumerate(last)}
    entries = sorted(stage.iterdir(), key=lambda p: (order.get(p.name, -1), p.name))
    replaced = stage / ".replaced"
    for entry in entries:
        final = folder / entry.name
        if _tree(entry) == _tree(final):
            continue
        if (entry.is_dir() or final.is_dir()) and (final.exists() or final.is_symlink()):
            replaced.mkdir(exist_ok=True)
            os.rename(final, replaced / entry.name)
            try:
                os.rename(entry, final)
            except OSError:
                os.rename(replaced / entry.name, final)
                raise
        else:
            os.replace(entry, final)
    return {entry.name for entry in entries}


@contextlib.contextmanager
def staged_folder(
    folder: str | os.PathLike, label: str, last: Sequence[str] = (), stale: Sequence[str] = ()
) -> Iterator[Path]:
    """A temporary folder ``<folder>/.<label>-<random>.tmp`` to write entries of ``folder`` into, moved into place
    when the block succeeds.

    * Entering creates ``folder`` (with its parents) and removes the temporary folders of ``label`` that a killed
      process left in it.
    * On success each top-level entry of the temporary folder (a file or a whole sub-folder) replaces ``folder``'s
      entry of that name with one rename, the names of ``last`` at the end in that order (so the presence of the
      last one marks a complete write); an entry holding the very files already in place (hard links) is left
      alone. Then the files of ``folder`` matching a ``stale`` glob that were not just written are removed (e.g. the
      figure of a class that no longer exists). Other entries of ``folder`` are never touched.
    * On failure ``folder`` stays as it was, and the folders this call created are removed again when empty.
    * The temporary folder is removed either way.

    Args:
        folder: the folder whose entries are written.
        label: names the temporary folder (``"report"``, ``"prepare"``, an export's name).
        last: entry names to move last, in this order.
        stale: glob patterns of earlier files to remove when the new write does not replace them.

    Yields:
        the temporary folder.
    """
    folder = Path(folder)
    created = []
    missing = folder
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    prefix, suffix = f".{label}-", ".tmp"
    for leftover in folder.glob(f"{glob.escape(prefix)}*{suffix}"):  # left by a killed process
        shutil.rmtree(leftover, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=folder))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for made in created:  # deepest first: the folders this call made, when they are empty again
            with contextlib.suppress(OSError):
                made.rmdir()
        raise
    try:
        written = _move_into_place(stage, folder, last)
        for pattern in stale:
            for old in folder.glob(pattern):
                if old.is_file() and old.name not in written:
                    old.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
