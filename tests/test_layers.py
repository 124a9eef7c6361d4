"""Arrows point down only: what each top-level package may import (the brief's structure)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# numba brings llvmlite; its IR builder is how engine/simd.py writes the vector kernel.
ENGINE_MAY_IMPORT = {"numpy", "numba", "llvmlite"}


def imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level module names each file of `package` imports (relative imports excluded)."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = roots
    return out


@pytest.mark.parametrize("path", sorted(imported_roots("engine")))
def test_engine_imports_only_numpy_numba_and_the_standard_library(path):
    roots = imported_roots("engine")[path] - {"__future__"}
    third_party = {r for r in roots if r not in sys.stdlib_module_names}
    assert third_party <= ENGINE_MAY_IMPORT, f"{path} imports {sorted(third_party)}"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("engine", {"model", "stream", "metrics", "api", "estimators"}),
        ("model", {"stream", "metrics", "api"}),
        ("metrics", {"stream", "model", "api"}),
        ("api", {"stream"}),
        ("estimators", {"model", "stream", "metrics", "api"}),
    ],
)
def test_arrows_point_down_only(package, forbidden):
    for path, roots in imported_roots(package).items():
        assert not roots & forbidden, f"{path} imports {sorted(roots & forbidden)}"


@pytest.mark.parametrize("path", sorted(imported_roots("estimators")))
def test_estimators_stand_on_engine_and_scikit_learn_alone(path):
    roots = imported_roots("estimators")[path] - {"__future__"}
    third_party = {r for r in roots if r not in sys.stdlib_module_names}
    assert third_party <= {"numpy", "sklearn", "engine"}, f"{path} imports {sorted(third_party)}"
