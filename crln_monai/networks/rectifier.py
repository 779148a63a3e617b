"""Placeholder: being written."""

class Rectifier:  # placeholder
    def __init__(self, *a, **k):
        raise NotImplementedError('Rectifier')
