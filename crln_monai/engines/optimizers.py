"""The optimisers and learning-rate schedules of Algorithm 1, written once for bundles, scripts and tests.

The student and μ (the rectifier) are stepped by two SGD optimisers with the same arguments (METHOD.md §3:
SGD, Nesterov momentum 0.9, weight decay 5e-4, poly decay with power 0.9). μ's optimiser exists only when the
rectifier has parameters: ``rectifier="fixed_v1"`` and the mean-teacher ablations (no DIM) have none, and an SGD
over an empty list raises.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["poly_lr_scheduler", "rectifier_optimizer", "sgd"]


def sgd(params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD with Nesterov momentum, the optimiser of the student and of μ."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


def rectifier_optimizer(
    network: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4
) -> torch.optim.SGD | None:
    """The μ optimiser of ``network.rectifier`` (Eq. 16), or ``None`` when the rectifier is absent or has no parameters."""
    rectifier = getattr(network, "rectifier", None)
    params = [] if rectifier is None else [p for p in rectifier.parameters() if p.requires_grad]
    return sgd(params, lr, momentum, weight_decay) if params else None


def poly_lr_scheduler(
    optimizer: torch.optim.Optimizer | None, total_iters: int, power: float = 0.9
) -> torch.optim.lr_scheduler.PolynomialLR | None:
    """Poly decay ``lr · (1 - t / total_iters)^power``, stepped once per epoch by the bundle; ``None`` without an optimiser."""
    if optimizer is None:
        return None
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_iters, power=power)
