#!/usr/bin/env python
"""Run one of nnU-Net v2's console commands in this Python: ``python scripts/nnunet_launch.py nnUNetv2_train ARGS``.

The same entry point as the installed command (looked up in the ``console_scripts`` of the installed packages), with
one repair first, for CPU-only torch: the torchvision wheels on PyPI are CUDA builds, so beside a CPU torch their
compiled operators cannot load; torchvision then skips its operator registrations, except two (``nms`` and ``qnms``),
so ``import torchvision`` fails, and with it every nnU-Net command that looks a trainer up (nnU-Net imports all of
its trainer modules while searching, one of which imports ``timm``, which imports torchvision). When, and only when,
torchvision's compiled operators cannot load, this declares those two operators' signatures (no implementation:
nnU-Net never calls them) so that torchvision imports. The repair runs at import, so the processes nnU-Net spawns
(they re-import this module) get it too. ``scripts/compare_nnunet.py`` runs every nnU-Net command through it.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

import torch

#: torchvision's operators that it registers even when its compiled library is missing, with their signatures.
_UNCONDITIONAL_OPERATORS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY = None  # kept alive: the declarations last as long as this object


def torchvision_operators_load() -> bool | None:
    """Whether torchvision's compiled operators load in this torch (``None``: torchvision is not installed)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for library in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(library))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def repair_torchvision() -> bool:
    """Declare the operators torchvision registers unconditionally when its compiled ones cannot load; returns
    whether it did."""
    global _LIBRARY
    if _LIBRARY is not None or torchvision_operators_load() is not False:
        return False
    _LIBRARY = torch.library.Library("torchvision", "DEF")  # noqa: PLW0603
    for schema in _UNCONDITIONAL_OPERATORS:
        _LIBRARY.define(schema)
    return True


repair_torchvision()


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python scripts/nnunet_launch.py <nnU-Net command> [arguments]", file=sys.stderr)
        return 2
    name = sys.argv[1]
    found = [e for e in entry_points(group="console_scripts") if e.name == name]
    if not found or not name.startswith("nnUNetv2_"):
        print(f"nnunet_launch: {name!r} is not an installed nnU-Net v2 command (pip install -e \".[compare]\").",
              file=sys.stderr)  # fmt: skip
        return 2
    sys.argv = [name, *sys.argv[2:]]
    result = found[0].load()()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
