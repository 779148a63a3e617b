"""The scalars of :class:`~crln_monai.engines.SemiSupervisedTrainer`'s ``engine.state.output``, named once.

:class:`~crln_monai.handlers.TrainingHistory` records them in this order (the columns of ``history.csv``); the
trainer's tests check that its output holds exactly these beside the batch. Kept in a module without imports, so
that the handlers can read it without importing the trainer.
"""

from __future__ import annotations

__all__ = ["PSEUDO_LABEL_QUALITY", "TRAINING_SCALARS"]

PSEUDO_LABEL_QUALITY: tuple[str, ...] = (
    "confident_share", "confident_share_rectified", "pseudo_label_dice", "pseudo_label_dice_rectified",
)  # fmt: skip
"""Share of confident pseudo-label voxels and pseudo-label Dice against labels on disk, plain and rectified."""

TRAINING_SCALARS: tuple[str, ...] = (
    "loss", "loss_sup", "loss_relation", "loss_u", "loss_cp", "loss_mu", "mu", "rectifying", *PSEUDO_LABEL_QUALITY,
)  # fmt: skip
"""Every scalar of one iteration's output, in ``history.csv`` column order."""
