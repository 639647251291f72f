"""benchmarks/ is a package run as ``python -m benchmarks.<name>``: every module imports without
starting work, and nothing edits sys.path to find its siblings."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import benchmarks

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(benchmarks.__path__, "benchmarks."))


def test_every_module_imports():
    names = _modules()
    # the scripts, the helpers and the throughput package's parts, __main__ included
    assert {"benchmarks.learning", "benchmarks.frequency", "benchmarks.lora_memory", "benchmarks.demo_selection",
            "benchmarks.common", "benchmarks.worker", "benchmarks.throughput.__main__",
            "benchmarks.throughput.flops"} <= set(names)
    for name in names:
        module = importlib.import_module(name)
        assert module.__doc__, f"{name} has no docstring"


def test_importing_starts_no_work():
    """In a fresh interpreter: importing every module prints nothing and loads neither torch nor
    transformers (a script that ran on import, or imported its heavy libraries at the top, would)."""
    code = ("import importlib, json, sys\n"
            f"for name in {_modules()!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]"], proc.stdout


def _edits_sys_path(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
               and node.value.id == "sys" for node in ast.walk(tree))


def test_no_sys_path_edits():
    sources = sorted((ROOT / "benchmarks").rglob("*.py"))
    assert sources and not [p for p in sources if "sys.path" in p.read_text(encoding="utf-8")]
    tests = sorted((ROOT / "tests" / "benchmarks").glob("*.py"))
    assert not [p for p in sources + tests if _edits_sys_path(p)]
