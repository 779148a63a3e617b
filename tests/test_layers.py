"""The library's packages import downwards only (docs/design.md#layers): no package imports one above it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "crln_monai"
LAYERS = [
    {"io", "utils", "overrides", "networks", "losses"},
    {"data", "engines"},
    {"evaluation", "handlers"},
    {"workflow", "bundle"},  # bundle.py: the 0.1 name of workflow, kept for exported bundles
    {"plan"},
    {"demo"},
]
"""Bottom first; a package may import its own layer and those below."""


def _layer(name: str) -> int:
    return next(i for i, members in enumerate(LAYERS) if name in members)


def _imports(path: Path) -> set[str]:
    """The crln_monai packages (first component under crln_monai) a module imports, at any depth."""
    relative = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(relative[: len(relative) - node.level])
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # "from . import x" at the package root
                    parts = [alias.name for alias in node.names]
            elif node.module and node.module.startswith("crln_monai."):
                parts = node.module.split(".")[1:]
            else:
                continue
            found.add(parts[0])
    return found


def _owner(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_every_package_is_placed_in_a_layer():
    packages = {_owner(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert packages <= set().union(*LAYERS), packages - set().union(*LAYERS)


def test_no_package_imports_one_above_it():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        owner = _owner(path)
        if owner in ("__init__", "__main__"):
            continue
        for imported in _imports(path) - {owner}:
            if imported not in set().union(*LAYERS):
                continue
            if _layer(imported) > _layer(owner):
                upward.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not upward, upward
