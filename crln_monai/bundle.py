"""Alias of :mod:`crln_monai.workflow`, kept only so that bundles exported before the rename keep running.

Their ``configs/inference.json`` imports ``crln_monai.bundle`` and calls ``crln_monai.bundle.check_config()``,
``crln_monai.bundle.check_outputs(...)`` and ``crln_monai.bundle.default_device()``. New code and configs use
:mod:`crln_monai.workflow`.
"""

from .workflow import *  # noqa: F403
from .workflow import __all__  # noqa: F401
