"""Placeholder: being written."""

class CRLN:  # placeholder
    def __init__(self, *a, **k):
        raise NotImplementedError('CRLN')

class CRLNOutput:  # placeholder
    def __init__(self, *a, **k):
        raise NotImplementedError('CRLNOutput')
