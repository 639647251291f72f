"""Head / torso / tail: bucket prompts by traffic, score per bucket, and guard the tail during RL.

``assign_buckets`` / ``stratified_scores`` give the head/torso/tail evaluation; ``TailGuard``
and ``apply_tail_boost`` raise the tail's sampling weight while its validation metric drops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlft.errors import RlftError

BUCKETS = ("head", "torso", "tail")


def assign_buckets(counts: Sequence[float], head_share: float = 0.5, torso_share: float = 0.3) -> list[str]:
    """'head' / 'torso' / 'tail' per prompt, in input order.

    Sorted by count (descending, stable by index), the head is the shortest prefix whose
    traffic reaches ``head_share`` of the total, the torso the next prompts until the prefix
    reaches ``head_share + torso_share``, the tail the rest. Ties are cut in input order: real
    counts are heavily tied (96% of the translation task's messages occur in one program), and
    keeping a tie group whole would put every prompt in the head; prompts of equal count are
    interchangeable, so cutting a group keeps each bucket's share of traffic as configured.
    """
    if not 0.0 <= head_share <= 1.0 or not 0.0 <= torso_share <= 1.0 or head_share + torso_share > 1.0 + 1e-12:
        raise RlftError(f"frequency.head_share/torso_share: must be in [0, 1] with a sum <= 1, "
                        f"got {head_share} and {torso_share}")
    if any(not math.isfinite(c) or c <= 0 for c in counts):
        raise RlftError("assign_buckets: counts must be finite and positive")
    total = math.fsum(counts)
    # A relative tolerance so that 0.1 + 0.2 'reaches' 0.3 of the traffic.
    head_end, torso_end = (head_share * total * (1 - 1e-12), (head_share + torso_share) * total * (1 - 1e-12))
    order = sorted(range(len(counts)), key=lambda i: -counts[i])  # stable: ties in input order
    out = [""] * len(counts)
    before = 0.0  # traffic of the prompts ahead of this one
    for i in order:
        out[i] = "head" if before < head_end else "torso" if before < torso_end else "tail"
        before += counts[i]
    return out


def stratified_scores(scores: Sequence[float], counts: Sequence[float], buckets: Sequence[str]) -> dict[str, Any]:
    """Quality per request and per bucket.

    'traffic_weighted' = sum count*score / sum count (expected quality of one request),
    'unweighted' = mean over unique prompts, 'head'/'torso'/'tail' = unweighted mean inside
    the bucket (None when empty), 'n_head'/'n_torso'/'n_tail' = prompts per bucket.
    """
    if not len(scores) == len(counts) == len(buckets):
        raise RlftError(f"stratified_scores: {len(scores)} scores, {len(counts)} counts, {len(buckets)} buckets")
    unknown = set(buckets) - set(BUCKETS)
    if unknown:
        raise RlftError(f"stratified_scores: unknown buckets {sorted(unknown)}; expected {', '.join(BUCKETS)}")
    total = math.fsum(counts)
    out: dict[str, Any] = {
        "traffic_weighted": math.fsum(c * s for c, s in zip(counts, scores)) / total if total > 0 else None,
        "unweighted": math.fsum(scores) / len(scores) if scores else None,
    }
    for name in BUCKETS:
        inside = [s for s, b in zip(scores, buckets) if b == name]
        out[name] = math.fsum(inside) / len(inside) if inside else None
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
    boosted = torch.where(is_tail, p * multiplier, p)  # (U,)
    return boosted / boosted.sum()
