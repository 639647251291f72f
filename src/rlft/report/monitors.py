"""The reward-hacking monitors of a run, from its ``metrics.jsonl`` lines: which were logged, their
start and end values on train and validation, and the evaluations that raised the divergence
warning. The monitors themselves are defined in ``rlft.eval.monitors``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rlft.eval.monitors import COMPONENT_PREFIX, DIVERGENCE_KEY, MONITOR_KEYS
from rlft.report.plots import series

WHAT = {
    "zero_var_groups": "share of prompts whose G samples got equal rewards (no signal)",
    "length_ratio": "output length / reference length",
    "copy_rate": "share of outputs copying the prompt",
    "distinct_1": "unique words / words, over the batch",
    "distinct_2": "unique word pairs / word pairs, over the batch",
    "repetition": "share of repeated word triples within an output",
    "off_language": "share of outputs not in eval.language",
}


@dataclass(frozen=True)
class MonitorRow:
    key: str
    what: str
    train_start: float | None  # mean of the first tenth of the train lines
    train_end: float | None    # mean of the last tenth
    eval_start: float | None   # first evaluation
    eval_end: float | None     # last evaluation


def monitor_keys(metrics: Sequence[dict]) -> list[str]:
    """The monitors and reward components logged in ``metrics``, monitors first."""
    seen = {k for line in metrics for k in line}
    components = sorted(k for k in seen if k.startswith(COMPONENT_PREFIX))
    return [k for k in MONITOR_KEYS if k in seen] + components


def _ends(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    w = max(1, math.ceil(len(values) / 10))
    return sum(values[:w]) / w, sum(values[-w:]) / w


def monitor_rows(metrics: Sequence[dict], eval_split: str = "validation") -> list[MonitorRow]:
    rows = []
    for key in monitor_keys(metrics):
        train = _ends(series(metrics, "train", key)[1])
        evals = series(metrics, eval_split, key)[1]
        what = WHAT.get(key, f"mean of reward component '{key[len(COMPONENT_PREFIX):]}' (unweighted)")
        rows.append(MonitorRow(key, what, *train, evals[0] if evals else None, evals[-1] if evals else None))
    return rows


def divergence_steps(metrics: Sequence[dict]) -> list[int]:
    """Steps of the evaluations at which the validation metric had fallen while the train reward
    rose for two evaluations in a row."""
    return [int(line["step"]) for line in metrics if line.get(DIVERGENCE_KEY) == 1]
