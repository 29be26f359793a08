"""Layering: the library imports no application code; benchmarks and data_prep do not import the command.

``mrdiff`` <- ``recon`` (the command, which may call the benchmark harness) and ``mrdiff`` <-
``benchmarks``; what both need lives in ``mrdiff``. Checked on the source (every import statement,
including those inside functions), so a lazy import cannot slip through.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "mrdiff": {"recon", "benchmarks", "data_prep"},
    "benchmarks": {"recon"},
    "data_prep": {"recon", "benchmarks"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level package names of every ``import`` / ``from ... import`` in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    bad = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {k: v for k, v in bad.items() if v} == {}
