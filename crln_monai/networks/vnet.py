"""Placeholder: being written."""

class VNet:  # placeholder
    def __init__(self, *a, **k):
        raise NotImplementedError('VNet')
