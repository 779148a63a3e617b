"""The semi-supervised trainer and its device-side statistics."""

from .pseudo_label_quality import confident_share, pseudo_label_dice
from .semi_supervised_trainer import SemiSupervisedTrainer

__all__ = ["SemiSupervisedTrainer", "confident_share", "pseudo_label_dice"]
