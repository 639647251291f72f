"""rlft.rundir: the one metrics.jsonl reader and the one JSON sanitizer; no second one in src/rlft."""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import rlft
from rlft.errors import RlftError
from rlft.rundir import METRICS_FILE, eval_path, jsonable, read_metrics, truncate_metrics

SRC = Path(rlft.__file__).resolve().parent


@dataclass
class _Point:
    x: float
    where: Path


def test_jsonable_makes_strict_json():
    value = {1: torch.tensor([1.5, float("nan")]), "t": torch.tensor(2), "np": np.float32(0.5),
             "arr": np.array([[1, 2]]), "i": np.int64(3), "b": np.bool_(True), "tuple": (1, float("inf")),
             "p": Path("a/b"), "dc": _Point(float("-inf"), Path("c")), "s": "x", "none": None, "flag": False}
    out = jsonable(value)
    assert out == {"1": [1.5, None], "t": 2, "np": 0.5, "arr": [[1, 2]], "i": 3, "b": True, "tuple": [1, None],
                   "p": "a/b", "dc": {"x": None, "where": "c"}, "s": "x", "none": None, "flag": False}
    assert type(out["i"]) is int and type(out["np"]) is float and out["flag"] is False
    json.dumps(out, allow_nan=False)  # strict JSON
    assert type(jsonable(np.float64(0.25))) is float


def test_jsonable_hands_unknown_objects_to_default_or_raises():
    class Odd:
        def __str__(self) -> str:
            return "odd"

    assert jsonable({"a": [Odd()]}, default=str) == {"a": ["odd"]}
    kept = jsonable({"a": [float("nan"), np.float64("inf")]}, allow_nan=True)["a"]  # json.dumps's own default
    assert math.isnan(kept[0]) and kept[1] == float("inf")
    with pytest.raises(TypeError, match="Odd is not JSON serializable"):
        jsonable({"a": Odd()})


def test_read_metrics_skips_only_a_torn_last_line(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1, "split": "train"}\n\n{"step": 1, "split": "validation"}\n{"step": 2, "spl')
    assert read_metrics(path) == [{"step": 1, "split": "train"}, {"step": 1, "split": "validation"}]
    assert read_metrics(tmp_path, split="validation") == [{"step": 1, "split": "validation"}]  # a run directory
    path.write_text('{"step": 1, "split": "train"}\nnot json\n{"step": 3, "split": "train"}\n')
    with pytest.raises(RlftError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(RlftError, match=r"metrics.jsonl:2: expected a JSON object, got list"):
        read_metrics(path)
    with pytest.raises(RlftError, match="does not exist"):
        read_metrics(tmp_path / "nope.jsonl")


def test_truncate_metrics_keeps_earlier_lines_byte_for_byte(tmp_path):
    path = tmp_path / METRICS_FILE
    kept = '{"step": 1, "split": "train", "x": 1.0000000000000002, "s": "\u00e9"}\n{"step": 2,   "split": "text"}\n'
    path.write_text(kept + 'garbage\n{"step": 3, "split": "train"}\n{"step": 4, "sp', encoding="utf-8")
    with pytest.warns(RuntimeWarning, match="dropping 2 unreadable line"):
        truncate_metrics(path, 2)
    assert path.read_text(encoding="utf-8") == kept
    truncate_metrics(tmp_path / "absent.jsonl", 2)
    assert not (tmp_path / "absent.jsonl").exists()


def test_eval_path():
    assert eval_path("runs/x", "after") == Path("runs/x/eval/after.json")


# ------------------------------------------------------------------ one of each, in src/rlft

def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _sources():
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


_SANITIZER = re.compile(r"_?(jsonable|json_ready|json_safe|to_json|jsonify|clean|default|sanitize\w*|yaml_ready|"
                        r"serializable)$")


def sanitizers_and_readers(sources) -> list[str]:
    """What would be a second JSON sanitizer or metrics reader: a function named like one
    (``_clean``, ``_jsonable``, ``read_metrics``) outside rundir.py, a ``json.dumps(..., default=...)``
    hook, a function that names the metrics file and parses JSON, or the literal file name."""
    found = []
    for name, tree in sources:
        if name == "rundir.py":
            continue
        for fn in _functions(tree):
            if _SANITIZER.match(fn.name) or "metrics" in fn.name and re.match(r"_?(read|load|parse|iter)", fn.name):
                found.append(f"{name}: def {fn.name}")
            nodes = list(ast.walk(fn))
            names_file = any(isinstance(n, ast.Name) and n.id == "METRICS_FILE" for n in nodes)
            parses = any(isinstance(n, ast.Attribute) and n.attr in ("loads", "load") and
                         isinstance(n.value, ast.Name) and n.value.id == "json" for n in nodes)
            if names_file and parses:
                found.append(f"{name}: {fn.name} reads {METRICS_FILE}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dumps" \
                    and any(k.arg == "default" for k in node.keywords):
                found.append(f"{name}: json.dumps(default=...)")
            if isinstance(node, ast.Constant) and node.value == METRICS_FILE:
                found.append(f"{name}: '{METRICS_FILE}' (use rlft.rundir.METRICS_FILE)")
    return found


def test_one_metrics_reader_and_one_json_sanitizer_in_src():
    assert sanitizers_and_readers(_sources()) == []


def test_the_scan_sees_a_second_sanitizer_and_reader():
    code = ("import json\nfrom rlft.rundir import METRICS_FILE\n"
            "def _clean(x):\n    return json.dumps(x, default=str)\n"
            "def curves(d):\n    return [json.loads(t) for t in (d / METRICS_FILE).open()]\n"
            "def load_metrics(d):\n    return open(d / 'metrics.jsonl')\n")
    assert sanitizers_and_readers([("report/x.py", ast.parse(code))]) == [
        "report/x.py: def _clean", "report/x.py: curves reads metrics.jsonl", "report/x.py: def load_metrics",
        "report/x.py: json.dumps(default=...)", "report/x.py: 'metrics.jsonl' (use rlft.rundir.METRICS_FILE)"]
