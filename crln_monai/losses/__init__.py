"""Losses of CRLN: supervised, pseudo-label and Collaborative Positive Supervision."""

from .cps import CPSLoss
from .pseudo_label import PseudoLabelLoss
from .segmentation import SegmentationLoss

__all__ = ["CPSLoss", "PseudoLabelLoss", "SegmentationLoss"]
