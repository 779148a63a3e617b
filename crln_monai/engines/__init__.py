"""The semi-supervised trainer and its device-side statistics."""

from .optimizers import OPTIMIZERS, optimizer, poly_lr_scheduler, rectifier_optimizer, sgd
from .pseudo_label_quality import confident_share, pseudo_label_dice
from .semi_supervised_trainer import SemiSupervisedTrainer

__all__ = [
    "OPTIMIZERS",
    "SemiSupervisedTrainer",
    "confident_share",
    "optimizer",
    "poly_lr_scheduler",
    "pseudo_label_dice",
    "rectifier_optimizer",
    "sgd",
]
