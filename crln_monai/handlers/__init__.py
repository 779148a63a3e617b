"""Training-time handlers: teacher EMA, atomic checkpoints, per-epoch reseeding, scalar history."""

from .checked_loader import CheckedCheckpointLoader, check_checkpoint, read_checkpoint, resume_source, state_dict_mismatch
from .checkpoint import AtomicCheckpointSaver, BestMetric, atomic_save, remove_stale_temporaries
from .history import TrainingHistory, plot_training_curves
from .progress import RunProgress
from .seeding import EpochSeeder
from .teacher_ema import TeacherEMA

__all__ = [
    "CheckedCheckpointLoader", "check_checkpoint", "read_checkpoint", "resume_source", "state_dict_mismatch",
    "AtomicCheckpointSaver", "BestMetric", "EpochSeeder", "RunProgress", "TeacherEMA", "TrainingHistory", "atomic_save",
    "plot_training_curves", "remove_stale_temporaries",
]  # fmt: skip
