"""Teacher EMA and other training-time helpers."""

from .teacher_ema import TeacherEMA

__all__ = ["TeacherEMA"]
