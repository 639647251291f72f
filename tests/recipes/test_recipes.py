"""The recipes sit beside the package: ``rlft`` never imports them, and every bundled task has a builder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rlft
from recipes.tasks import BUILDERS, build
from rlft.errors import RlftError
from rlft.tasks import TASKS


def test_rlft_never_imports_the_recipes():
    root = Path(rlft.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "recipes"]
    assert offenders == []


def test_every_bundled_task_has_a_builder():
    assert sorted(BUILDERS) == sorted(TASKS)


def test_build_names_the_known_tasks(tmp_path):
    with pytest.raises(RlftError, match="did you mean 'dialogue'"):
        build("dialog", tmp_path)
