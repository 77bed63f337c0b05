"""The import directions DESIGN.md forbids never appear (checked on the source, by AST)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = ["mlt/data", "mlt/windows.py", "mlt/windows_draw.py", "mlt/models", "mlt/decode", "mlt/train/loop.py",
        "mlt/config.py", "mlt/errors.py", "mlt/checkpoint.py"]  # fmt: skip


def _files(*paths: str) -> list[Path]:
    out = []
    for p in paths:
        path = REPO / p
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", _files("featurestore"), ids=lambda p: p.name)
def test_featurestore_imports_only_stdlib_numpy_lmdb_pyarrow(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | {
        "numpy",
        "lmdb",
        "pyarrow",
        "featurestore",
        "__future__",
    }
    assert _imports(path, module_level_only=False) <= allowed


@pytest.mark.parametrize("path", _files(*CORE), ids=lambda p: str(p.relative_to(REPO)))
def test_core_does_not_import_ray_or_mlflow_at_module_level(path: Path) -> None:
    assert not _imports(path, module_level_only=True) & {"ray", "mlflow"}


@pytest.mark.parametrize("path", _files("mlt"), ids=lambda p: str(p.relative_to(REPO)))
def test_library_never_imports_jobs(path: Path) -> None:
    assert "jobs" not in _imports(path, module_level_only=False)
