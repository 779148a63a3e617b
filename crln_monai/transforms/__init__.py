"""Batch-level transforms that run on the batch's own device."""

from .strong_augment import StrongAugment

__all__ = ["StrongAugment"]
