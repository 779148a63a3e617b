"""Placeholder: being written."""

class TeacherEMA:  # placeholder
    def __init__(self, *a, **k):
        raise NotImplementedError('TeacherEMA')
