"""Ignite handlers: atomic checkpoints, per-epoch reseeding, the non-finite check, the run's record, the run's
ownership of its folders (lock, no fresh run over a finished one), the resume checks of data and schedule, and the
evaluator's per-case report."""

from .case_report import CaseMetricsReport, case_id
from .checked_loader import (
    CheckedCheckpointLoader,
    check_checkpoint,
    checkpoint_geometry,
    read_checkpoint,
    resume_source,
    state_dict_mismatch,
)
from .checkpoint import AtomicCheckpointSaver, AtomicDiskSaver, BestMetric, atomic_save, remove_stale_temporaries
from .finite import NonFiniteCheck
from .history import TrainingHistory, plot_training_curves
from .progress import RunProgress
from .run_guard import RunGuard, earlier_run_files
from .run_lock import RunLock, RunLockedError
from .run_record import RunRecord
from .run_start import on_run_start
from .scalars import every, host_scalars
from .seeding import EpochSeeder
from .tensorboard import RunSummaryWriter

__all__ = [
    "CheckedCheckpointLoader", "check_checkpoint", "checkpoint_geometry", "read_checkpoint", "resume_source",
    "state_dict_mismatch",
    "AtomicCheckpointSaver", "AtomicDiskSaver", "BestMetric", "CaseMetricsReport", "EpochSeeder", "NonFiniteCheck",
    "RunGuard", "RunLock", "RunLockedError", "RunProgress", "RunRecord", "RunSummaryWriter", "TrainingHistory",
    "atomic_save", "case_id", "earlier_run_files", "every", "host_scalars", "on_run_start",
    "plot_training_curves", "remove_stale_temporaries",
]  # fmt: skip
