"""The optimisers and learning-rate schedules of Algorithm 1, written once for bundles, scripts and tests.

The student and μ (the rectifier) are stepped by two optimisers of one kind with the same arguments. The paper's
kind is SGD (Nesterov momentum 0.9, weight decay 5e-4, poly decay with power 0.9;
docs/method.md#schedule-and-optimisers); ``"adamw"``
(AdamW, decoupled weight decay ``weight_decay``, ``momentum`` unused) is the short-budget rule's choice
(docs/results.md). μ's optimiser exists only when the rectifier has parameters: ``rectifier="fixed_v1"`` and the
mean-teacher ablations (no DIM) have none, and an optimiser over an empty list raises.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "PolyLR", "optimizer", "poly_lr_scheduler", "rectifier_optimizer", "sgd"]

OPTIMIZERS = ("sgd", "adamw")
"""The optimiser kinds: ``"sgd"`` (the paper's) and ``"adamw"`` (the short-budget rule's)."""


def sgd(params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """SGD with Nesterov momentum, the paper's optimiser of the student and of μ."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


def optimizer(
    params: Iterable[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, kind: str = "sgd"
) -> torch.optim.Optimizer:
    """The student's optimiser: :func:`sgd`, or AdamW (``kind="adamw"``; ``momentum`` unused).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind == "sgd":
        return sgd(params, lr, momentum, weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer kind must be one of {OPTIMIZERS}, got {kind!r}.")


def rectifier_optimizer(
    network: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, kind: str = "sgd"
) -> torch.optim.Optimizer | None:
    """The μ optimiser of ``network.rectifier`` (Eq. 16), of the student's ``kind``, or ``None`` when the rectifier
    is absent or has no parameters."""
    rectifier = getattr(network, "rectifier", None)
    params = [] if rectifier is None else [p for p in rectifier.parameters() if p.requires_grad]
    return optimizer(params, lr, momentum, weight_decay, kind) if params else None


class PolyLR(torch.optim.lr_scheduler.PolynomialLR):
    """torch's ``PolynomialLR`` whose length stays the configured one when a state dict is loaded.

    ``PolynomialLR.load_state_dict`` restores ``total_iters`` with the rest, so a run resumed with a larger
    ``max_epochs`` would keep the old length and train its added epochs at learning rate 0. Here a restored
    schedule of another length is re-targeted: each group's learning rate becomes the closed form
    ``base_lr · (1 - t / total_iters)^power`` of the configured length at the restored step ``t`` (the rate a run
    planned with that length has there), and decays from it to 0 at the new end. A schedule of the same length
    is restored untouched (bit-identical resume). Load the optimiser's state first (it restores the rates too).
    """

    def load_state_dict(self, state_dict: dict) -> None:
        total = self.total_iters
        super().load_state_dict(state_dict)
        if self.total_iters != total:
            self.total_iters = total
            step = min(self.last_epoch, total)
            rates = [base * (1.0 - step / total) ** self.power for base in self.base_lrs]
            for group, rate in zip(self.optimizer.param_groups, rates):
                group["lr"] = rate
            self._last_lr = rates


def poly_lr_scheduler(optimizer: torch.optim.Optimizer | None, total_iters: int, power: float = 0.9) -> PolyLR | None:
    """Poly decay ``lr · (1 - t / total_iters)^power`` (:class:`PolyLR`), stepped once per epoch by the bundle;
    ``None`` without an optimiser."""
    if optimizer is None:
        return None
    return PolyLR(optimizer, total_iters=total_iters, power=power)
