"""The code knows no dataset by name: a dataset is its folder, and only the folder names it.

Every identifier and every string literal (docstrings and comments are documentation, and may
say where a figure was measured) outside ``pipeline/datasets/`` is checked for the shipped
datasets' names; the single exception is the default dataset's setting.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.datasets import DEFAULT_DATASET, dataset_names
from tests.conftest import REPO_ROOT

CODE_DIRS = ("pipeline", "transforms", "dags", "bench")
DEFAULT_SETTING = REPO_ROOT / "pipeline" / "datasets" / "__init__.py"


def _code_files() -> list[Path]:
    files = []
    for directory in CODE_DIRS:
        for path in sorted((REPO_ROOT / directory).rglob("*.py")):
            if "datasets" in path.relative_to(REPO_ROOT).parts[1:2]:
                continue  # pipeline/datasets/<name>/: the folders themselves
            files.append(path)
    return files


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _mentions(path: Path, names: list[str]) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            text = node.value.lower()
        elif isinstance(node, ast.Name):
            text = node.id.lower()
        elif isinstance(node, ast.Attribute):
            text = node.attr.lower()
        else:
            continue
        for name in names:
            if name in text:
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {text[:60]!r}")
    return found


def test_no_code_outside_the_dataset_folders_names_a_dataset():
    names = sorted({name.split("_")[0] for name in dataset_names()})
    assert "taxi" in names and "flights" in names
    found = [m for path in _code_files() for m in _mentions(path, names)]
    assert found == [], "\n".join(found)


def test_the_default_dataset_is_named_in_one_place():
    tree = ast.parse(DEFAULT_SETTING.read_text())
    literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert literals.count(DEFAULT_DATASET) == 1


def _root(name: str) -> str:
    """``validation``, ``validate`` -> ``validat``; ``serving``, ``serve`` -> ``serv``."""
    for suffix in ("ing", "ion", "es", "s", "e"):
        if name.endswith(suffix) and len(name) - len(suffix) >= 4:
            return name[: -len(suffix)]
    return name


@pytest.mark.parametrize("directory", CODE_DIRS)
def test_no_module_sits_beside_a_package_of_nearly_its_name(directory):
    """``validate.py`` beside ``validation/`` or ``transform.py`` beside ``transforms/``: which
    one holds the stage? One name, one place."""
    clashes = []
    for folder in [REPO_ROOT / directory, *(REPO_ROOT / directory).rglob("*")]:
        if not folder.is_dir() or folder.name == "__pycache__":
            continue
        modules = {p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")}
        packages = {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        for module in modules:
            for package in packages:
                if _root(module) == _root(package):
                    clashes.append(f"{folder.relative_to(REPO_ROOT)}: {module}.py / {package}/")
    assert clashes == []
