"""Head / torso / tail: bucket prompts by their count in the training log, score per bucket, and
guard the tail during RL.

A bucket is a range of training counts (``CountBuckets``): prompts of equal count always share a
bucket, and a prompt the training log never saw is 'unseen' (matched exactly, or under
``rlft.data.counting.normalize_prompt`` with ``frequency.normalize``). ``stratified_scores`` gives
the per-bucket evaluation; ``TailGuard`` and ``apply_tail_boost`` raise the tail's sampling weight
while the rare prompts' validation metric drops.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from rlft.data.counting import prompt_key
from rlft.data.example import Example
from rlft.errors import RlftError

if TYPE_CHECKING:  # torch is imported where it is used, so eval results and the report load without it
    import torch

BUCKETS = ("head", "torso", "tail")
SEEN, UNSEEN = "seen", "unseen"  # 'seen': in training, whose counts are all equal (no head or tail)
LABELS = (*BUCKETS, SEEN, UNSEEN)


@dataclass(frozen=True)
class CountBuckets:
    """Head, torso and tail as ranges of training counts.

    head: count >= head_min; torso: torso_min <= count < head_min (empty when equal); tail:
    count < torso_min. ``levels`` is the number of distinct counts; with one level (every prompt
    as frequent as the next) there is no frequency signal and every seen prompt is 'seen'.
    ``shares``/``sizes``: the training traffic share and the number of prompts per bucket.
    """

    head_min: float
    torso_min: float
    levels: int
    shares: tuple[float, float, float]
    sizes: tuple[int, int, int]

    @property
    def flat(self) -> bool:
        return self.levels <= 1

    def label(self, count: float | None) -> str:
        """The bucket of a prompt with this training count; 0 or None = never seen in training."""
        if not count:
            return UNSEEN
        if self.flat:
            return SEEN
        return "head" if count >= self.head_min else "torso" if count >= self.torso_min else "tail"

    def describe(self) -> str:
        """One line: the count range, prompts and training traffic share of each bucket."""
        if self.levels == 0:
            return "no training counts: every prompt is unseen"
        if self.flat:
            return (f"every training prompt has count {self.head_min:g}: no frequency signal, so no "
                    f"head/torso/tail (prompts are only seen or unseen)")
        ranges = (f"count >= {self.head_min:g}",
                  f"{self.torso_min:g} <= count < {self.head_min:g}" if self.torso_min < self.head_min else "empty",
                  f"count < {self.torso_min:g}")
        return "; ".join(f"{name}: {r} ({n} prompts, {share:.1%} of training traffic)" for name, r, n, share
                         in zip(BUCKETS, ranges, self.sizes, self.shares))


def _nearest(cum: Sequence[float], target: float, lo: int, hi: int) -> int:
    """The k in [lo, hi] whose cumulative share cum[k - 1] is nearest ``target`` (ties: smaller k)."""
    return min(range(lo, hi + 1), key=lambda k: (abs(cum[k - 1] - target), k))


def count_buckets(counts: Sequence[float], head_share: float = 0.5, torso_share: float = 0.3) -> CountBuckets:
    """Count thresholds from the training counts.

    Distinct counts v_1 > ... > v_L carry cumulative traffic shares S_1 < ... < S_L = 1. The head
    is v_1..v_h with S_h nearest ``head_share``, the torso v_{h+1}..v_m with S_m nearest
    ``head_share + torso_share`` (m >= h), the tail the rest; h and m stop at L - 1, so with two or
    more levels the head and the tail are never empty (the torso may be). Cuts fall between
    levels, never inside a tie: real counts are heavily tied (96% of the translation task's
    messages ship in one catalog), and cutting a tie by input order would put prompts of equal
    frequency into different buckets (a 'head' of count-1 prompts). The shares are therefore
    targets, met as closely as the ties allow; ``shares`` records the ones reached.
    """
    if not 0.0 <= head_share <= 1.0 or not 0.0 <= torso_share <= 1.0 or head_share + torso_share > 1.0 + 1e-12:
        raise RlftError(f"frequency.head_share/torso_share: must be in [0, 1] with a sum <= 1, "
                        f"got {head_share} and {torso_share}")
    if any(not math.isfinite(c) or c <= 0 for c in counts):
        raise RlftError("count_buckets: counts must be finite and positive")
    if not counts:
        return CountBuckets(math.inf, math.inf, 0, (0.0, 0.0, 0.0), (0, 0, 0))
    per_level = Counter(counts)
    levels = sorted(per_level, reverse=True)
    total = math.fsum(counts)
    cum = [s / total for s in accumulate(v * per_level[v] for v in levels)]  # S_1..S_L
    sizes = list(accumulate(per_level[v] for v in levels))
    if len(levels) == 1:
        return CountBuckets(levels[0], levels[0], 1, (1.0, 0.0, 0.0), (len(counts), 0, 0))
    h = _nearest(cum, head_share, 1, len(levels) - 1)
    m = _nearest(cum, head_share + torso_share, h, len(levels) - 1)
    return CountBuckets(head_min=levels[h - 1], torso_min=levels[m - 1], levels=len(levels),
                        shares=(cum[h - 1], cum[m - 1] - cum[h - 1], 1.0 - cum[m - 1]),
                        sizes=(sizes[h - 1], sizes[m - 1] - sizes[h - 1], len(counts) - sizes[m - 1]))


def assign_buckets(counts: Sequence[float], head_share: float = 0.5, torso_share: float = 0.3) -> list[str]:
    """The bucket of every training prompt, in input order (see ``count_buckets``)."""
    buckets = count_buckets(counts, head_share, torso_share)
    return [buckets.label(c) for c in counts]


def training_counts(train: Sequence[Example], *, normalize: bool = False) -> dict[str, float]:
    """Training count per prompt key (exact text, or ``normalize_prompt`` with ``normalize``)."""
    out: dict[str, float] = {}
    for ex in train:
        key = prompt_key(ex.prompt, normalize)
        out[key] = out.get(key, 0.0) + ex.count
    return out


def bucket_examples(examples: Sequence[Example], train: Sequence[Example], *, head_share: float = 0.5,
                    torso_share: float = 0.3, normalize: bool = False) -> tuple[CountBuckets, list[float], list[str]]:
    """Buckets of evaluated prompts from the TRAINING traffic: the thresholds, each example's
    training count (0 = never seen in training) and its label (head/torso/tail, seen, unseen)."""
    seen = training_counts(train, normalize=normalize)
    buckets = count_buckets(list(seen.values()), head_share, torso_share)
    counts = [seen.get(prompt_key(ex.prompt, normalize), 0.0) for ex in examples]
    return buckets, counts, [buckets.label(c) for c in counts]


def stratified_scores(scores: Sequence[float], counts: Sequence[float], buckets: Sequence[str]) -> dict[str, Any]:
    """Quality per request and per bucket.

    'traffic_weighted' = sum count*score / sum count (expected quality of one request),
    'unweighted' = mean over unique prompts; per label in ``LABELS`` (head, torso, tail, seen,
    unseen): the unweighted mean inside it (None when empty) and 'n_<label>' = its prompts;
    'rare' = the mean over the tail and the unseen prompts together (what the tail guard watches).
    """
    if not len(scores) == len(counts) == len(buckets):
        raise RlftError(f"stratified_scores: {len(scores)} scores, {len(counts)} counts, {len(buckets)} buckets")
    unknown = set(buckets) - set(LABELS)
    if unknown:
        raise RlftError(f"stratified_scores: unknown buckets {sorted(unknown)}; expected {', '.join(LABELS)}")
    total = math.fsum(counts)
    out: dict[str, Any] = {
        "traffic_weighted": math.fsum(c * s for c, s in zip(counts, scores)) / total if total > 0 else None,
        "unweighted": math.fsum(scores) / len(scores) if scores else None,
    }
    for name, members in [(name, (name,)) for name in LABELS] + [("rare", ("tail", UNSEEN))]:
        inside = [s for s, b in zip(scores, buckets) if b in members]
        out[name] = math.fsum(inside) / len(inside) if inside else None
        if name != "rare":
            out[f"n_{name}"] = len(inside)
    return out


# ---------------------------------------------------------------------------- tail guard


@dataclass(frozen=True)
class GuardDecision:
    active: bool
    multiplier: float   # factor for the tail's weights: boost while active, else 1
    message: str | None  # a line to log when the guard acts or releases


class TailGuard:
    """Keeps the tail's validation metric within ``delta`` points of its value at the start.

    The first ``update`` records the start. While the metric is more than ``delta`` below it,
    the guard is active and asks for the tail weights to be multiplied by ``boost``; it
    releases once the metric is back within ``delta``. ``delta < 0`` turns the guard off.
    """

    def __init__(self, delta: float, boost: float, metric: str = "metric"):
        if not math.isfinite(boost) or boost < 1.0:
            raise RlftError(f"frequency.tail_guard_boost: must be >= 1, got {boost}")
        self.delta, self.boost, self.metric = delta, boost, metric
        self.start: float | None = None
        self.active = False

    @property
    def enabled(self) -> bool:
        return self.delta >= 0

    def update(self, tail_metric: float | None) -> GuardDecision:
        # No tail prompts or a NaN metric carry no news: keep the current state.
        if not self.enabled or tail_metric is None or math.isnan(tail_metric):
            return self._decision(None)
        if self.start is None:
            self.start = tail_metric
            return self._decision(None)
        floor = self.start - self.delta
        if tail_metric < floor:
            self.active = True
            return self._decision(f"tail guard: tail {self.metric} {tail_metric:.1f} < start {self.start:.1f} - "
                                  f"{self.delta:.1f}; tail weight x{self.boost:g}")
        if self.active:
            self.active = False
            return self._decision(f"tail guard: tail {self.metric} {tail_metric:.1f} >= start {self.start:.1f} - "
                                  f"{self.delta:.1f}; released, tail weight x1")
        return self._decision(None)

    def _decision(self, message: str | None) -> GuardDecision:
        return GuardDecision(self.active, self.boost if self.active else 1.0, message)

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "active": self.active}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start, self.active = state["start"], bool(state["active"])


def apply_tail_boost(p: torch.Tensor, is_tail: torch.Tensor, multiplier: float) -> torch.Tensor:
    """p with the tail's entries multiplied by ``multiplier``, renormalized to sum 1 (U,)."""
    if p.shape != is_tail.shape:
        raise RlftError(f"apply_tail_boost: p has shape {tuple(p.shape)}, is_tail {tuple(is_tail.shape)}")
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise RlftError(f"apply_tail_boost: multiplier must be positive, got {multiplier}")
    import torch

    boosted = torch.where(is_tail, p * multiplier, p)  # (U,)
    return boosted / boosted.sum()
