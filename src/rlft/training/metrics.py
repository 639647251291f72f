"""Run logging: ``metrics.jsonl`` (the source of truth for reports) plus optional TensorBoard.

Each ``metrics.jsonl`` line is one JSON object::

    {"step": 12, "split": "train", "time": 1718000000.5, "reward": 0.41, "kl": 0.002, ...}

``time`` is Unix seconds. Floats that are NaN or infinite are written as ``null`` so every
line is strict JSON (readable by ``jq``, pandas, browsers); a ``null`` metric therefore
means "not a finite number" (or that the caller passed ``None``). Text samples from
:meth:`MetricsLogger.log_text` are lines with ``"split": "text"`` and keys ``tag``/``text``.

On resume from step ``k``, lines with ``step > k`` were written after the checkpoint by the
run that died; they are dropped (``rlft.rundir.truncate_metrics`` rewrites the file atomically)
and TensorBoard events from ``k + 1`` on are purged, so curves don't double back on themselves.
``rlft.rundir.read_metrics`` reads the file back.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from rlft.atomic import atomic_write
from rlft.rundir import CONFIG_FILE, METRICS_FILE, jsonable, truncate_metrics

TENSORBOARD_DIR = "tensorboard"
TEXT_SPLIT = "text"
_RESERVED = ("step", "split", "time")
_tb_warned = False


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: tensors/NumPy scalars unwrapped, non-finite floats -> None (``jsonable``)."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        value = value.item()  # 0-d tensor or NumPy scalar; a larger tensor raises, as it should
    if value is None or isinstance(value, (bool, int, float, str)):
        return jsonable(value)
    raise TypeError(f"metric value must be a number, string or None, got {type(value).__name__}")


class MetricsLogger:
    """Append-only metrics for one run directory; use as a context manager or call :meth:`close`."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer = _open_tensorboard(self.run_dir / TENSORBOARD_DIR, resume_step) if tensorboard else None

    def log(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        """One line for ``split`` (``train``, ``validation``, ...) at ``step``; numbers also go to TensorBoard."""
        clash = [k for k in metrics if k in _RESERVED]
        if clash:
            raise ValueError(f"metric names {clash} are reserved for the line itself")
        values = {k: _plain(v) for k, v in metrics.items()}
        self._write({"step": int(step), "split": split, "time": time.time(), **values})
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{split}/{key}", value, int(step))

    def log_text(self, step: int, tag: str, text: str) -> None:
        """A text sample (e.g. a prompt and its generated output) at ``step``."""
        self._write({"step": int(step), "split": TEXT_SPLIT, "time": time.time(), "tag": tag, "text": str(text)})
        if self._writer is not None:
            # TensorBoard renders text as Markdown; a code block keeps newlines and spacing as they are.
            self._writer.add_text(tag, "```\n" + str(text) + "\n```", int(step))

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        self._file.flush()  # a crash loses at most the line being written

    def flush(self) -> None:
        self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open_tensorboard(log_dir: Path, resume_step: int | None):
    global _tb_warned
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _tb_warned:
            warnings.warn("TensorBoard is not installed (pip install tensorboard); logging to "
                          "metrics.jsonl only. Set run.tensorboard=false to silence this.",
                          RuntimeWarning, stacklevel=3)
            _tb_warned = True
        return None
    # purge_step hides events at or after that step that a crashed run wrote past its last checkpoint.
    purge = resume_step + 1 if resume_step is not None else None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge, flush_secs=30)


def save_resolved_config(run_dir: str | Path, config_dict: dict[str, Any]) -> Path:
    """Write the fully resolved config to ``run_dir/config.yaml`` (atomically), in field order.

    Loading that file back with ``load_config`` reproduces the run's settings.
    """
    import yaml

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    atomic_write(path, yaml.safe_dump(jsonable(config_dict, allow_nan=True), sort_keys=False, allow_unicode=True))
    return path
