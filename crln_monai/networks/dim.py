"""Placeholder: being written."""

class DynamicInteractionModule:  # placeholder
    def __init__(self, *a, **k):
        raise NotImplementedError('DynamicInteractionModule')
