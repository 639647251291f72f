"""Imports flow one way: no import cycles, no import against the pipeline, nothing imports cli or report;
and no function over 80 lines (its docstring not counted) nor module over 400.

The graph is read from the source with ``ast``, every ``import`` counted wherever it stands (module
level, inside a function, under ``if TYPE_CHECKING``), so a lazy import cannot hide a dependency.
Every module is also imported, and every ``from rlft.x import name`` must name something ``x``
defines, which catches a function-level import of a name that moved.

The layers, lowest first (a module may import its own layer and the layers below it):

    base        errors, config, atomic, cache,   what every stage shares
                rundir
    data        data/*                            loading, templates, splits, counts
    models      models/*                          policy, reference, log-probabilities
    rollout     rollout/*                         sampling (uses models)
    rewards     rewards/*
    algorithms  algorithms/*                      pure torch
    tasks       tasks/*                           bundled tasks: data + template + reward + metric
    eval        eval/*
    training    training/*
    report      report/*                          reads run outputs only
    interfaces  rlft (the package), api, env
    apps        demo, cli, __main__               the commands; the only importers of report/cli
                label/*                           the labeling web app (`rlft label`)

This is the pipeline data -> rollout -> rewards -> algorithms -> training -> eval -> report with one
deliberate deviation: the training loop evaluates on validation as it goes (``training.loop`` calls
``eval.evaluate``), so evaluation is a library the loop uses and sits below training; evaluation
must never import training. ``cli`` may be imported only by ``__main__``, ``report`` only by the
apps (``rlft demo`` writes the report).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import rlft

PACKAGE = "rlft"
LAYERS: list[tuple[str, set[str]]] = [  # (layer, top-level names under rlft/), lowest first; "" = rlft/__init__
    ("base", {"errors", "config", "atomic", "cache", "rundir"}),
    ("data", {"data"}),
    ("models", {"models"}),
    ("rollout", {"rollout"}),
    ("rewards", {"rewards"}),
    ("algorithms", {"algorithms"}),
    ("tasks", {"tasks"}),
    ("eval", {"eval"}),
    ("training", {"training"}),
    ("report", {"report"}),
    ("interfaces", {"", "api", "env"}),
    ("apps", {"demo", "cli", "__main__", "label"}),
]
# The one import against the layers, with why it is safe: config checks algo.name against the
# algorithm registry, and algorithms imports nothing from rlft (checked below), so no cycle can form.
ALLOWED_UPWARD = {("config", "algorithms")}  # (importer, imported) as top-level names under rlft/
MAY_IMPORT = {"cli": {"__main__"}, "report": {"demo", "cli"}}  # besides the package itself


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file for every .py under ``root/package`` (a package is its __init__)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(root: Path, package: str = PACKAGE) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(module -> the package's modules it imports, [(module, imported module, name)] of from-imports
    of names that are not modules). An import of a module that does not exist raises AssertionError."""
    files = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in files}
    names: list[tuple[str, str, str]] = []
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1
                    here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets = [(f"{base}.{a.name}", None) if f"{base}.{a.name}" in files else (base, a.name)
                           for a in node.names]
            else:
                continue
            for target, name in targets:
                if target != package and not target.startswith(package + "."):
                    continue
                assert target in files, f"{mod} imports {target}, which is not a module of {package}"
                if target != mod:
                    graph[mod].add(target)
                if name is not None and name != "*":
                    names.append((mod, target, name))
    return graph, names


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def top(module: str) -> str:
    """The name under rlft/ that places a module: 'data' for rlft.data.loading, '' for rlft itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    for rank, (_, names) in enumerate(LAYERS):
        if top(module) in names:
            return rank
    raise AssertionError(f"{module}: not in any layer; add rlft/{top(module)} to LAYERS in {__file__}")


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a in graph for b in graph[a]
                  if layer(b) > layer(a) and (top(a), top(b)) not in ALLOWED_UPWARD)


def forbidden(graph: dict[str, set[str]]) -> list[str]:
    """Imports of cli or report from anywhere but their own package and the modules allowed to."""
    return sorted(f"{a} -> {b}" for a in graph for b in graph[a]
                  if top(b) in MAY_IMPORT and top(a) != top(b) and top(a) not in MAY_IMPORT[top(b)])


MAX_FUNCTION_LINES = 80  # a function's lines, its docstring not counted
MAX_MODULE_LINES = 400


def too_long(root: Path, package: str = PACKAGE) -> list[str]:
    """Modules over MAX_MODULE_LINES lines and functions (methods and nested ones too) over
    MAX_FUNCTION_LINES, as 'module (n)' and 'module.function (n)'."""
    found = []
    for module, path in module_files(root, package).items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{module} ({len(text.splitlines())})")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = node.end_lineno - node.lineno + 1
            doc = node.body[0]
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                n -= doc.end_lineno - doc.lineno + 1
            if n > MAX_FUNCTION_LINES:
                found.append(f"{module}.{node.name} ({n})")
    return sorted(found)


SRC = Path(rlft.__file__).resolve().parent.parent
GRAPH, FROM_NAMES = import_graph(SRC)


def test_every_module_imports_and_names_what_it_imports_from_the_package():
    for module in GRAPH:
        if module.split(".")[-1] != "__main__":  # a __main__ runs its command when imported
            importlib.import_module(module)
    missing = [f"{mod}: from {target} import {name}" for mod, target, name in FROM_NAMES
               if not hasattr(importlib.import_module(target), name)]
    assert not missing, "imports of names the module does not define:\n" + "\n".join(missing)


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_point_down_the_layers():
    found = upward(GRAPH)
    assert not found, "imports against the layers (see this file's docstring):\n" + "\n".join(found)
    for a, b in ALLOWED_UPWARD:  # an exception that is no longer needed goes
        assert any(top(m) == a and any(top(t) == b for t in GRAPH[m]) for m in GRAPH), \
            f"{a} -> {b} no longer happens; remove it from ALLOWED_UPWARD"


def test_nothing_imports_cli_or_report():
    found = forbidden(GRAPH)
    assert not found, "cli and report are imported only by the commands:\n" + "\n".join(found)


def test_algorithms_import_nothing_from_the_package():
    found = sorted(f"{a} -> {b}" for a in GRAPH if top(a) == "algorithms" for b in GRAPH[a] if top(b) != "algorithms")
    assert not found, "\n".join(found)


def test_the_checks_find_cycles_upward_and_forbidden_imports_in_a_synthetic_package(tmp_path):
    files = {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/loading.py": "from rlft.data.counting import normalize\n",
        "data/counting.py": "def f():\n    from rlft.data import loading\n",        # function-level: a cycle
        "rewards/__init__.py": "",
        "rewards/metrics.py": "from . import embedding\n",                          # relative import
        "rewards/embedding.py": "from rlft.rewards.metrics import as_references\n",
        "eval/__init__.py": "",
        "eval/evaluate.py": "def run():\n    from rlft.training.setup import render\n",  # upward
        "training/__init__.py": "",
        "training/setup.py": "import rlft.data.loading\n",                           # down the layers
        "report/__init__.py": "",
        "report/html.py": "",
        "api.py": "from rlft.report import html\n",                                   # forbidden
        "cli.py": "from rlft.report import html\n",                                   # allowed
    }
    for name, text in files.items():
        (tmp_path / "rlft" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rlft" / name).write_text(text)
    graph, names = import_graph(tmp_path)
    assert cycles(graph) == [["rlft.data.counting", "rlft.data.loading"],
                             ["rlft.rewards.embedding", "rlft.rewards.metrics"]]
    assert upward(graph) == ["rlft.eval.evaluate -> rlft.training.setup"]
    assert forbidden(graph) == ["rlft.api -> rlft.report.html"]
    assert ("rlft.eval.evaluate", "rlft.training.setup", "render") in names


def test_no_function_over_80_lines_and_no_module_over_400():
    found = too_long(SRC)
    assert not found, "split these (functions: docstring not counted):\n" + "\n".join(found)


def test_the_size_check_finds_a_long_function_and_a_long_module(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(79))
    files = {
        "__init__.py": "",
        "short.py": f'def ok():\n    """A docstring\n    of lines\n    that do not count."""\n{body}\n',  # 80 lines: at the limit
        "long_fn.py": f"def long():\n{body}\n    x = 1\n    return x0\n",                              # 82 lines
        "long_mod.py": "\n".join(f"y{i} = {i}" for i in range(401)) + "\n",
    }
    for name, text in files.items():
        (tmp_path / "rlft" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "rlft" / name).write_text(text)
    assert too_long(tmp_path) == ["rlft.long_fn.long (82)", "rlft.long_mod (401)"]
