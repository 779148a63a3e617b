"""Training-time handlers: teacher EMA, atomic checkpoints, per-epoch reseeding, scalar history."""

from .checkpoint import AtomicCheckpointSaver, atomic_save
from .history import TrainingHistory, plot_training_curves
from .seeding import EpochSeeder
from .teacher_ema import TeacherEMA

__all__ = ["AtomicCheckpointSaver", "EpochSeeder", "TeacherEMA", "TrainingHistory", "atomic_save", "plot_training_curves"]
