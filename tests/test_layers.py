"""The packages are layers (DESIGN.md): nothing below imports from above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "ramparts"

# Lowest first. A module may import from its own layer or any layer below it.
LAYERS: list[set[str]] = [
    {"config", "logs", "problems", "headers", "detectors", "routes", "alerts", "metrics"},
    {"db"},
    {"crypto"},
    {"audit", "release"},
    {"identity"},
    {"policy"},
    {"ai", "payments"},
    {"apps", "backup"},
    {"web", "quotes", "tabletop"},
    {"demo", "runtime", "cli"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _top_level(module: Path) -> str:
    relative = module.relative_to(SRC)
    return relative.parts[0].removesuffix(".py")


def _imported(module: Path) -> set[str]:
    """Top-level ramparts packages a module imports (relative imports are refused)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: use absolute imports"
            if node.module == "ramparts":
                names = [f"ramparts.{alias.name}" for alias in node.names]
            elif node.module:
                names = [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("ramparts.")}
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    packages = {_top_level(p) for p in MODULES} - {"__init__"}
    assert packages <= set(RANK), f"unplaced: {sorted(packages - set(RANK))}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_upward_imports(module: Path) -> None:
    own = _top_level(module)
    if own == "__init__":
        return
    upward = {name for name in _imported(module) if RANK[name] > RANK[own]}
    assert not upward, f"{own} imports from higher layers: {sorted(upward)}"
