"""The semi-supervised trainer, its teacher EMA, optimisers and device-side statistics."""

from .optimizers import OPTIMIZERS, optimizer, poly_lr_scheduler, rectifier_optimizer, sgd
from .pseudo_label_quality import confident_share, pseudo_label_dice
from .semi_supervised_trainer import SemiSupervisedTrainer
from .teacher_ema import TeacherEMA

__all__ = [
    "OPTIMIZERS",
    "SemiSupervisedTrainer",
    "TeacherEMA",
    "confident_share",
    "optimizer",
    "poly_lr_scheduler",
    "pseudo_label_dice",
    "rectifier_optimizer",
    "sgd",
]
