"""Boolean switches of a bundle, checked before anything is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_flags"]


def check_flags(flags: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming every switch that is not a bool.

    ``python -m monai.bundle run ... --use_dim false`` passes the *string* ``'false'`` (python-fire only
    converts ``True``/``False``), which is truthy: without this check the run would silently train the
    full method instead of the ablation asked for.
    """
    bad = {k: v for k, v in flags.items() if not isinstance(v, bool)}
    if bad:
        shown = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        raise TypeError(
            f"bundle switches must be booleans, got {shown}. On the command line write True or False "
            f"with a capital letter (e.g. --{next(iter(bad))} False): python-fire reads 'false' as a string."
        )
