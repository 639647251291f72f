"""The files of a run directory, named and read in one place, and the one JSON sanitizer.

    run_dir/
      config.yaml        the resolved config              training.metrics.save_resolved_config
      metrics.jsonl      one JSON object per line          training.metrics.MetricsLogger; read_metrics
      eval/<tag>.json    one evaluation                   eval.result.write_eval / read_eval
      checkpoints/, best/, final/                          training.checkpoint
      report/            report.html, summary.json, ...   report.write_report

Files are written through ``rlft.atomic``; every value bound for a JSON or YAML file that may hold
tensors, NumPy values, paths, dataclasses or non-finite floats goes through ``jsonable``. Standard
library only, so any layer may import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any

from rlft.atomic import atomic_write
from rlft.errors import RlftError, where

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
EVAL_DIR = "eval"


def eval_path(run_dir: str | os.PathLike, tag: str) -> Path:
    """``run_dir/eval/<tag>.json``."""
    return Path(run_dir) / EVAL_DIR / f"{tag}.json"


def jsonable(obj: Any, default: Callable[[Any], Any] | None = None, *, allow_nan: bool = False) -> Any:
    """A copy of ``obj`` that strict JSON (``json.dumps(..., allow_nan=False)``) and ``yaml.safe_dump`` take.

    Dataclasses and mappings become dicts with str keys; lists and tuples lists; tensors and NumPy
    arrays or scalars their ``tolist()``; paths strings; NaN and infinities None (strict JSON has
    neither, and a ``null`` metric reads as "not a finite number"), or kept with ``allow_nan``
    (as ``json.dumps`` does by default). Any other object goes to ``default`` (as in
    ``json.dumps``; e.g. ``str``), or is a TypeError.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return float(obj) if allow_nan or math.isfinite(obj) else None
    if isinstance(obj, Mapping):  # before dataclasses: a dataclass that is a mapping (EvalResult) is its items
        return {str(k): jsonable(v, default, allow_nan=allow_nan) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), default, allow_nan=allow_nan)
                for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, default, allow_nan=allow_nan) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if callable(getattr(obj, "tolist", None)):  # torch.Tensor, numpy.ndarray, numpy scalars
        return jsonable(obj.tolist(), default, allow_nan=allow_nan)
    if default is not None:
        return default(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _parse(path: Path) -> tuple[list[tuple[int, str, Any]], int]:
    """([(line number, raw line, parsed JSON or the JSONDecodeError)] of the non-blank lines,
    the number of the last non-blank line, 0 when there is none)."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                value: Any = json.loads(text)
            except json.JSONDecodeError as err:
                value = err
            lines.append((number, text if text.endswith("\n") else text + "\n", value))
    return lines, lines[-1][0] if lines else 0


def read_metrics(path: str | os.PathLike, split: str | None = None) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (or of the one in run directory ``path``), in file order.

    ``split`` keeps only that split's lines. An unparsable last line is a write in progress (or
    torn by a crash) and is skipped; an unparsable line elsewhere, or a line that is not a JSON
    object, is an error naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        raise RlftError(f"{path}: metrics file does not exist")
    lines, last = _parse(path)
    records = []
    for number, _, value in lines:
        if isinstance(value, json.JSONDecodeError):
            if number == last:
                break
            raise RlftError(f"{where(str(path), number)}: not valid JSON ({value.msg})")
        if not isinstance(value, dict):
            raise RlftError(f"{where(str(path), number)}: expected a JSON object, got {type(value).__name__}")
        records.append(value)
    return [r for r in records if r.get("split") == split] if split is not None else records


def truncate_metrics(path: str | os.PathLike, step: int) -> None:
    """Keep the lines of ``metrics.jsonl`` at ``step`` or before, byte for byte (resume from ``step``:
    a run that died wrote the rest after its last checkpoint). Unreadable lines are dropped with a
    warning; the file is rewritten atomically. A missing file is left missing."""
    path = Path(path)
    if not path.exists():
        return
    lines, _ = _parse(path)
    bad = [number for number, _, value in lines if not isinstance(value, dict)]
    if bad:  # typically the last line, cut short by the crash that we are resuming from
        warnings.warn(f"{path}: dropping {len(bad)} unreadable line(s) (first: line {bad[0]})",
                      RuntimeWarning, stacklevel=3)
    atomic_write(path, "".join(text for _, text, value in lines
                               if isinstance(value, dict) and int(value.get("step", 0)) <= step))
