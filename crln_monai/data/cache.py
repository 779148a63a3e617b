"""A ``CacheDataset`` whose cache filling fails cleanly: the failing case named, no thread left running.

MONAI's :class:`monai.data.CacheDataset` fills its cache with a ``multiprocessing.pool.ThreadPool``. When one case
raises (a truncated file, a NaN image, a bad label), the pool is terminated but its daemon worker threads go on
loading the cases they hold; the exception ends the program while they are inside C++ code (torch, numpy), and
Python's finalisation stops them there: ``terminate called without an active exception`` and exit status 134
(SIGABRT) after the message. The error itself names no file (``applying transform <LoadImaged ...>``).

:class:`CacheDataset` keeps MONAI's class (same arguments, same cache) and changes only how the cache is filled:
a ``concurrent.futures`` pool whose pending cases are cancelled and whose running ones are awaited before the
error propagates, so the program ends with a normal error status; the error names the case and its files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from monai.data import CacheDataset as _MonaiCacheDataset

__all__ = ["CacheDataset", "CaseLoadError"]


class CaseLoadError(RuntimeError):
    """A case failed while the dataset loaded (cached) it; the message names the case, its files and the cause."""


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a ``__cause__`` chain (MONAI wraps a reader's error in ``RuntimeError``\\ s)."""
    seen = set()
    while error.__cause__ is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__
    return error


def _describe(item: Any) -> str:
    if not isinstance(item, Mapping):
        return repr(item)[:200]
    parts = [f"case {item['case']!r}"] if "case" in item else []
    for key in ("image", "label"):
        value = item.get(key)
        if value is not None:
            files = ", ".join(map(str, value)) if isinstance(value, Sequence) and not isinstance(value, str) else value
            parts.append(f"{key} {files}")
    return ", ".join(parts) or repr(dict(item))[:200]


class CacheDataset(_MonaiCacheDataset):
    """:class:`monai.data.CacheDataset` that fills its cache with a pool it can stop (see the module docstring).

    Arguments and behaviour are MONAI's; ``num_workers=None`` uses ``os.cpu_count()`` threads as MONAI's does.

    Raises:
        CaseLoadError: a case fails to load while the cache fills; the message names it (its ``case`` id and
            files) and the underlying error in one line; the original exception is its ``__cause__``.
    """

    def _fill_cache(self, indices: Sequence[int] | None = None) -> list:
        if self.cache_num <= 0:
            return []
        if indices is None:
            indices = list(range(self.cache_num))
        workers = self.num_workers if self.num_workers is not None else (os.cpu_count() or 1)
        results: list = []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # leaving the block waits for running cases
            futures = [pool.submit(self._load_cache_item, i) for i in indices]
            if self.progress:
                from monai.utils import optional_import  # noqa: PLC0415

                tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
                iterator = tqdm(futures, total=len(futures), desc="Loading dataset") if has_tqdm else futures
            else:
                iterator = futures
            position = 0
            try:
                for position, future in enumerate(iterator):
                    results.append(future.result())
            except BaseException as error:
                for future in futures:
                    future.cancel()
                if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: as they are
                    raise
                cause = _root_cause(error)
                text = " ".join(str(cause).split())
                raise CaseLoadError(
                    f"loading {_describe(self.data[indices[position]])} failed: {type(cause).__name__}: {text}"
                ) from error
        return results
