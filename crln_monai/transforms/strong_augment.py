"""Placeholder: being written."""

class StrongAugment:  # placeholder
    def __init__(self, *a, **k):
        raise NotImplementedError('StrongAugment')
