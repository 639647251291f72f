"""What an evaluation returns: ``EvalResult``, the record between ``rlft.eval.evaluate`` and its
readers (the training loops, ``rlft eval``, the demo, the report), and its file ``run_dir/eval/<tag>.json``.

The file is the flat JSON object of ``EvalResult.to_dict()``: the fields in order, with
``monitors``, ``components`` and ``strata`` spread into it and each optional field only when set.
``read_eval`` reads it back; a field a file lacks (written by hand, or by an older rlft) reads as
None (an empty dict for the three groups).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rlft.atomic import atomic_write
from rlft.data.buckets import LABELS
from rlft.errors import RlftError, where
from rlft.eval.monitors import COMPONENT_PREFIX, MONITOR_KEYS
from rlft.rundir import eval_path

# The keys of rlft.data.buckets.stratified_scores, in its order.
STRATA_KEYS = ("traffic_weighted", "unweighted", *(k for label in LABELS for k in (label, f"n_{label}")), "rare")
_OPTIONAL = ("buckets", "train_counts", "bucket_rule", "cache_per_example", "replay", "replay_eval")


@dataclass(frozen=True)
class EvalResult(dict):
    """One greedy evaluation of n examples (for a replay: n unique prompts, each decoded once).

    The record is also a dict: the ``to_dict()`` it had when built, for callers written against
    the plain dict it replaced (the scripts in benchmarks/ index it, add keys to it and
    ``json.dumps`` it). It is frozen, so the fields and that dict cannot disagree; a key a caller
    adds changes the dict only. rlft reads the fields and writes ``to_dict()``.
    """

    tag: str
    step: int
    split: str
    n: int
    metric_name: str                         # the task metric (rlft.rewards.METRICS)
    metric: float                            # mean of per_example, 0-100
    per_example: list[float]                 # (n,) sentence scores of the task metric
    corpus_metric: float                     # the corpus-level statistic (BLEU's, chrF's)
    second_metric_name: str | None           # a metric the reward did not optimize, to catch hacking
    second_metric: float | None
    second_per_example: list[float] | None   # (n,)
    reward: float                            # mean reward over the finite ones
    kl: float | None                         # mean per-token KL(policy || reference); None without a reference
    kl_n: int                                # rows the KL covers (eval.kl_rows)
    length: float                            # mean completion length, tokens
    truncation_rate: float                   # share of completions cut at max_new_tokens
    ids: list[str]                           # (n,)
    counts: list[float]                      # (n,) traffic counts (requests per prompt for a replay)
    outputs: list[str]                       # (n,) greedy completions
    samples: list[dict[str, str]]            # {'id', 'prompt', 'reference', 'output'} of the first eval.show_samples
    monitors: dict[str, float] = field(default_factory=dict)    # rlft.eval.monitors.text_monitors
    components: dict[str, float] = field(default_factory=dict)  # 'reward/<name>' -> mean, several-term rewards
    buckets: list[str] | None = None         # (n,) training-count bucket of each example (rlft.data.buckets)
    train_counts: list[float] | None = None  # (n,) each example's count in training (0 = unseen)
    bucket_rule: str | None = None           # the bucket thresholds, in words
    strata: dict[str, float | int | None] = field(default_factory=dict)  # stratified_scores: STRATA_KEYS
    cache_per_example: list[float | None] | None = None  # replay: the exact-match cache's score (None: new)
    replay: dict[str, Any] | None = None     # replay: the sample (rlft.eval.replay.evaluate_replay)
    replay_eval: EvalResult | None = None    # rlft eval with eval.replay: the replay's result (api.evaluate_model)

    def __post_init__(self) -> None:
        dict.update(self, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``eval/<tag>.json`` (values shared, not copied)."""
        out = {name: getattr(self, name) for name in _CORE}
        out.update(self.monitors)
        out.update(self.components)
        out.update({name: getattr(self, name) for name in _OPTIONAL[:3] if getattr(self, name) is not None})
        out.update(self.strata)
        out.update({name: getattr(self, name) for name in _OPTIONAL[3:] if getattr(self, name) is not None})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """The record of a JSON object written by ``to_dict`` (missing fields: None or empty)."""
        if isinstance(data, EvalResult):
            return data
        nested = data.get("replay_eval")
        return cls(**{name: data.get(name) for name in _CORE},
                   monitors={k: v for k, v in data.items() if k in MONITOR_KEYS},
                   components={k: v for k, v in data.items() if k.startswith(COMPONENT_PREFIX)},
                   strata={k: v for k, v in data.items() if k in STRATA_KEYS},
                   **{name: data.get(name) for name in _OPTIONAL[:-1]},
                   replay_eval=cls.from_dict(nested) if nested is not None else None)


_CORE = tuple(name for name in EvalResult.__dataclass_fields__
              if name not in ("monitors", "components", "strata", *_OPTIONAL))


def write_eval(run_dir: str | os.PathLike, result: EvalResult) -> Path:
    """Atomically write ``run_dir/eval/<tag>.json``."""
    return atomic_write(eval_path(run_dir, result.tag), json.dumps(result.to_dict(), ensure_ascii=False, indent=1))


def read_eval(path: str | os.PathLike) -> EvalResult:
    """One ``eval/<tag>.json``, checked to be a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RlftError(f"{where(str(path), err.lineno)}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise RlftError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return EvalResult.from_dict(data)
