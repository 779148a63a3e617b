"""The trainer's scalar outputs on the host: one read per logging step, shared by every logging handler."""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from typing import Any

import torch
from ignite.engine import Engine

from ..engines.outputs import TRAINING_SCALARS

__all__ = ["HOST_SCALARS", "every", "host_scalars"]

HOST_SCALARS = "host_scalars"
"""The output key under which :func:`host_scalars` keeps an iteration's floats."""


def host_scalars(output: MutableMapping[str, Any]) -> dict[str, float]:
    """The :data:`~crln_monai.engines.outputs.TRAINING_SCALARS` of a trainer output as floats, NaN ones left out.

    The device tensors among them are read in one host sync (stacked, then ``tolist``) and the result is kept in
    ``output[HOST_SCALARS]`` (the trainer builds a new output dict every iteration), so that the next handler
    reading the same iteration's output (``StatsHandler``, ``TensorBoardStatsHandler``,
    :class:`~crln_monai.handlers.TrainingHistory`) does not sync again; the tensors stay as they are. NaN marks a
    term the configuration switched off (no DIM: ``loss_relation``, ``mu``; supervised-only: ``loss_u``, ...).
    Use it as those handlers' ``output_transform``.
    """
    if HOST_SCALARS not in output:
        keys = [k for k in TRAINING_SCALARS if k in output]
        tensors = [k for k in keys if isinstance(output[k], torch.Tensor)]
        values = {k: float(output[k]) for k in keys if k not in tensors}
        if tensors:
            read = torch.stack([output[k].detach().float().reshape(()) for k in tensors]).tolist()
            values.update(zip(tensors, read))
        output[HOST_SCALARS] = {k: values[k] for k in keys if not math.isnan(values[k])}
    return dict(output[HOST_SCALARS])


def every(interval: int) -> Callable[[Engine, int], bool]:
    """Ignite event filter: true on every ``interval``-th event (``StatsHandler``'s ``iteration_log`` needs a callable)."""
    interval = max(1, int(interval))
    return lambda engine, event: event % interval == 0
