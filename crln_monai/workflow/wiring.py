"""The conditions and derived values a bundle config needs, each one call, so the JSON holds values and references.

Without these the configs wrote Python in strings: the device choice, "the run has a validation split" (four times,
as conditionals), the resume file's objects (a dict comprehension), a handler attached only when it exists, the
TensorBoard step of an epoch (a lambda). MONAI's ``ConfigParser`` evaluates such strings but cannot test or name them;
here each is a function with a docstring and a test, and the configs call it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine

from ..handlers.checkpoint import BestMetric

__all__ = ["attach", "default_device", "epoch_step", "predictions_dir", "resume_objects", "validation_evaluator"]


def default_device() -> torch.device:
    """``cuda:0`` when CUDA is available, else the CPU (the bundles' ``device``; ``--device`` overrides it)."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def validation_evaluator(evaluator: Engine, cases: Sequence[Any]) -> Engine | None:
    """The validation ``evaluator`` when the run has validation ``cases``, else ``None``.

    The one place that decides whether a run validates: the ``ValidationHandler``, the best-model exporter and the
    resume file's best metric all read the config key ``validator`` this returns.
    """
    return evaluator if len(cases) > 0 else None


def resume_objects(validator: Engine | None = None, **objects: Any) -> dict[str, Any]:
    """The objects ``resume.pt`` saves and a resume loads: ``objects`` without the ``None`` ones (a supervised run has
    no rectifier optimiser), and ``best_metric`` (the validator's best score and epoch) when ``validator`` is given."""
    kept = {name: obj for name, obj in objects.items() if obj is not None}
    if validator is not None:
        kept["best_metric"] = BestMetric(validator)
    return kept


def attach(engine: Engine, *handlers: Any) -> None:
    """Attach each handler that is not ``None`` (a disabled config component) to ``engine``, in order."""
    for handler in handlers:
        if handler is not None:
            handler.attach(engine)


def epoch_step(epoch_length: int) -> Callable[[int], int]:
    """Validation's TensorBoard step: epoch -> the trainer's iteration at its end, so both share one x axis."""
    return lambda epoch: epoch * epoch_length


def predictions_dir(output_dir: str | os.PathLike, save: bool) -> str | None:
    """Where evaluation writes its predictions: ``output_dir/predictions``, or ``None`` when it saves none."""
    return os.path.join(output_dir, "predictions") if save else None
