"""Mean-teacher EMA of the student's parameters, with the UA-MT warm-up (docs/method.md#teacher-ema, A9)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..utils import unwrap_model as _unwrap

__all__ = ["TeacherEMA"]


class TeacherEMA:
    """EMA teacher update ``θ̄ ← α_t θ̄ + (1 − α_t) θ`` with ``α_t = min(1 − 1/(t + 1), max_decay)``.

    * Covers **all** parameters of the teacher (DIM, prototypes, unused heads), matched by name with
      the student's. Parameters whose name starts with one of ``copy_prefixes`` are **copied** from
      the student instead (the rectifier's μ is one scalar shared by student and teacher, docs/method.md#teacher-ema).
    * **Buffers are not touched** by default: the teacher's BN running statistics come from its own
      forward passes (it pseudo-labels in train mode, docs/method.md, A9). With ``copy_buffers=True`` they are
      copied from the student at every update, for runs where the teacher never runs in train mode
      (supervised only): its statistics would otherwise stay at their initial values.
    * At ``t = 0`` α is 0, so the first update makes the teacher equal to the student exactly.
    * The update is two ``torch._foreach_*`` kernels (plus one copy) over parameter lists built once
      in the constructor, under ``torch.no_grad()``; a student wrapped in
      ``DistributedDataParallel`` is unwrapped via ``.module``.
    * ``state_dict``/``load_state_dict`` hold the step counter and ``max_decay``, so a resumed run
      continues the warm-up; give this object to ``CheckpointSaver``/``CheckpointLoader``.

    Why not ``ignite.handlers.EMAHandler`` (Ignite 0.5; MONAI itself has no EMA teacher):
    it builds its own teacher by deep-copying the model, while CRLN's teacher is a pre-built
    network the trainer and the bundle configs name; its built-in momentum warm-up is linear,
    not UA-MT's ``1 − 1/(t + 1)`` (reproducing it needs a ``LambdaStateScheduler`` whose lambda cannot
    be pickled into a checkpoint); it averages every parameter alike and cannot copy some (μ)
    while averaging the rest; its default buffer handling makes the teacher share the student's BN
    buffers; and it fires on an engine event, whereas CRLN updates the teacher *inside* the
    iteration, after the student's step and the μ step (so the copied μ is the one just stepped).

    Args:
        student: the trained network (possibly DDP-wrapped).
        teacher: the averaged network, same architecture (possibly wrapped).
        max_decay: the cap on α, in ``[0, 1]``; 0.99 as in UA-MT and CRLN.
        copy_prefixes: parameter-name prefixes copied instead of averaged.
        copy_buffers: copy the student's buffers (BN statistics) into the teacher at every update.

    Raises:
        ValueError: if ``max_decay`` is outside ``[0, 1]``, if student and teacher are the same
            module, or if their parameter names, shapes, dtypes or devices differ.
        TypeError: if ``copy_prefixes`` is a bare string.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        max_decay: float = 0.99,
        copy_prefixes: Sequence[str] = ("rectifier.",),
        copy_buffers: bool = False,
    ) -> None:
        if isinstance(copy_prefixes, str):
            raise TypeError(f"copy_prefixes must be a sequence of strings, got the string {copy_prefixes!r}.")
        self.max_decay = self._check_max_decay(max_decay)
        self.copy_prefixes = tuple(copy_prefixes)
        student_module, teacher_module = _unwrap(student), _unwrap(teacher)
        if student_module is teacher_module:
            raise ValueError("student and teacher must be two modules, got the same module twice.")

        student_params = dict(student_module.named_parameters())
        teacher_params = dict(teacher_module.named_parameters())
        self._check_match(student_params, teacher_params)

        self._avg_teacher: list[torch.Tensor] = []
        self._avg_student: list[torch.Tensor] = []
        self._copy_teacher: list[torch.Tensor] = []
        self._copy_student: list[torch.Tensor] = []
        for name, teacher_param in teacher_params.items():
            copied = name.startswith(self.copy_prefixes)
            (self._copy_teacher if copied else self._avg_teacher).append(teacher_param)
            (self._copy_student if copied else self._avg_student).append(student_params[name])
        student_buffers = dict(student_module.named_buffers())
        self._teacher_buffers = [b for _, b in teacher_module.named_buffers()]
        self._student_buffers = [student_buffers[name] for name, _ in teacher_module.named_buffers()]
        self.copy_buffers = copy_buffers
        self._step = 0

    @property
    def step(self) -> int:
        """Number of updates done so far (the ``t`` of the next update)."""
        return self._step

    def alpha(self, step: int) -> float:
        """``α_t = min(1 − 1/(t + 1), max_decay)`` for ``t = step >= 0``."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}.")
        return min(1.0 - 1.0 / (step + 1), self.max_decay)

    @torch.no_grad()
    def update(self) -> float:
        """One EMA step with ``α = alpha(step)``, then ``step += 1``; returns that α."""
        alpha = self.alpha(self._step)
        if self._avg_teacher:
            torch._foreach_mul_(self._avg_teacher, alpha)
            torch._foreach_add_(self._avg_teacher, self._avg_student, alpha=1.0 - alpha)
        if self._copy_teacher:
            torch._foreach_copy_(self._copy_teacher, self._copy_student)
        if self.copy_buffers and self._teacher_buffers:
            torch._foreach_copy_(self._teacher_buffers, self._student_buffers)
        self._step += 1
        return alpha

    @torch.no_grad()
    def mirror(self) -> None:
        """Make the teacher the student's copy (parameters and buffers) without an EMA step: ``step`` is unchanged, so
        the first :meth:`update` after a supervised burn-in starts the warm-up from this copy (α = 0 at ``t = 0``)."""
        torch._foreach_copy_(self._avg_teacher + self._copy_teacher, self._avg_student + self._copy_student)
        if self._teacher_buffers:
            torch._foreach_copy_(self._teacher_buffers, self._student_buffers)

    def state_dict(self) -> dict:
        """``{"step": int, "max_decay": float}``."""
        return {"step": self._step, "max_decay": self.max_decay}

    def load_state_dict(self, state: dict) -> None:
        """Restore the step counter (and ``max_decay``) saved by :meth:`state_dict`.

        Raises:
            ValueError: if ``step`` is missing or not a non-negative int, or ``max_decay`` is invalid.
        """
        if "step" not in state:
            raise ValueError(f"state must hold 'step', got keys {sorted(state)}.")
        step = state["step"]
        if isinstance(step, torch.Tensor):
            step = int(step.item())
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state['step'] must be a non-negative int, got {step!r}.")
        if "max_decay" in state:
            self.max_decay = self._check_max_decay(state["max_decay"])
        self._step = step

    @staticmethod
    def _check_max_decay(max_decay: float) -> float:
        if not 0.0 <= float(max_decay) <= 1.0:
            raise ValueError(f"max_decay must be in [0, 1], got {max_decay!r}.")
        return float(max_decay)

    @staticmethod
    def _check_match(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> None:
        only_student = sorted(set(student) - set(teacher))
        only_teacher = sorted(set(teacher) - set(student))
        if only_student or only_teacher:
            raise ValueError(
                "student and teacher parameter names differ: only in student "
                f"{only_student[:5]}, only in teacher {only_teacher[:5]}."
            )
        wrong = [
            f"{n}: {tuple(student[n].shape)} {student[n].dtype} {student[n].device} vs "
            f"{tuple(teacher[n].shape)} {teacher[n].dtype} {teacher[n].device}"
            for n in teacher
            if (student[n].shape, student[n].dtype, student[n].device) != (teacher[n].shape, teacher[n].dtype, teacher[n].device)
        ]
        if wrong:
            raise ValueError(f"student and teacher parameter shapes, dtypes or devices differ: {wrong[:5]}.")
