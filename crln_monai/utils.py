"""Small helpers shared by the trainer, the handlers and the inferers, each written once."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AMP_DTYPES", "amp_dtype", "epoch_seed", "unwrap_model"]

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "none": None,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
"""Names accepted for an autocast dtype (bundle key ``amp_dtype``); ``"none"`` and ``None`` mean fp32."""


def amp_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """The autocast dtype named by ``value`` (a ``torch.dtype``, a name of :data:`AMP_DTYPES` or ``None``).

    Raises:
        ValueError: an unknown name.
    """
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be None, a torch.dtype or one of {sorted(AMP_DTYPES)}, got {value!r}.")
    return AMP_DTYPES[value]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch, a function of (seed, epoch) only, so that a resumed run repeats the same draws."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**32)


def unwrap_model(model: nn.Module) -> Any:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, else ``model``."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
