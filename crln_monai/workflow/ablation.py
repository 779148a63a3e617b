"""The paper's ablation ladder (Table 5) as override files of a bundle: ``configs/ablation/<rung>.json``.

The files are the one definition of each rung: the README's switch table names them, and the accuracy protocol
and the benchmarks read them through :func:`ablation_overrides` (or pass them as a further ``--config_file``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["ABLATION_LADDER", "ablation_file", "ablation_overrides"]

ABLATION_LADDER: tuple[str, ...] = ("supervised", "mean_teacher", "mt_cutmix_noise", "crln_dim", "crln_full")
"""The rungs, weakest first: supervised only, mean teacher, + CutMix/noise, + DIM, + CPS (full CRLN)."""


def ablation_file(bundle_root: str | os.PathLike, rung: str) -> Path:
    """``<bundle_root>/configs/ablation/<rung>.json``.

    Raises:
        ValueError: ``rung`` is not one of :data:`ABLATION_LADDER`.
        FileNotFoundError: the bundle has no such file.
    """
    if rung not in ABLATION_LADDER:
        raise ValueError(f"ablation rung must be one of {list(ABLATION_LADDER)}, got {rung!r}.")
    path = Path(bundle_root) / "configs" / "ablation" / f"{rung}.json"
    if not path.is_file():
        raise FileNotFoundError(f"ablation file {path} not found.")
    return path


def ablation_overrides(bundle_root: str | os.PathLike, rung: str) -> dict[str, Any]:
    """The switch values of one rung (the file's keys without MONAI's ``_desc_``-style ones)."""
    values = json.loads(ablation_file(bundle_root, rung).read_text())
    return {k: v for k, v in values.items() if not (k.startswith("_") and k.endswith("_"))}
