"""High-frequency fine-tuning: count repeated prompts, weight them by traffic, guard the tail.

Real traffic is imbalanced: a few prompts make up most requests. rlft trains on the U *unique*
prompts, each carrying its traffic count, so a prompt seen a million times is one row with a
weight. Every cost below scales with U, never with the log: counting keeps one entry per unique
prompt, and the sampler draws B of the U prompts per step, so a repeated prompt costs one group
of G rollouts per draw, not one per occurrence.

Pipeline: ``count_prompts`` (log -> Examples with counts) -> ``traffic_weights`` (counts ->
probabilities p) -> ``PromptSampler`` (p -> B prompt indices per step, plus loss weights) ->
``assign_buckets`` / ``stratified_scores`` (head/torso/tail evaluation) -> ``TailGuard`` (boost
the tail's weight when its validation metric drops).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlft.config import DataConfig
from rlft.data import loading
from rlft.data.example import Example
from rlft.errors import RlftError, where

BUCKETS = ("head", "torso", "tail")

_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")  # Unicode decimal digits, so Arabic-Indic digits merge as well


# ---------------------------------------------------------------------------- counting


def normalize_prompt(text: str) -> str:
    """The key under which near-duplicate prompts are merged: 'Error 404 at line 12' -> 'error 0 at line 0'.

    NFKC first, so fullwidth digits and letters ('１２３', 'Ａ') and the ideographic space become
    their ASCII forms; then casefold, one '0' per digit run, whitespace runs to one space, strip.
    """
    # NFKC again after casefold, as Unicode's NFKC_Casefold does: folding can denormalize.
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    text = _DIGITS.sub("0", text)
    return _SPACES.sub(" ", text).strip()


class PromptCounter:
    """Count a traffic log incrementally: ``add(line, row)`` per raw row, then ``examples()``.

    Memory holds one entry per unique prompt (its first text, id, extra fields, count and the
    distinct references), never the log, so a log can be fed in any number of chunks.
    A row counts ``row[count_field]`` (a positive integer) or ``row[weight_field]`` (a positive
    number) or 1; missing, null and empty-string cells count as absent (CSV, Parquet).
    """

    def __init__(self, *, prompt_field: str = "prompt", reference_field: str = "reference",
                 references_field: str = "references", count_field: str = "count",
                 weight_field: str = "weight", id_field: str = "id", normalize: bool = False,
                 require_reference: bool = True, source: str = "log"):
        self.prompt_field, self.reference_field, self.references_field = prompt_field, reference_field, references_field
        self.count_field, self.weight_field, self.id_field = count_field, weight_field, id_field
        self.normalize, self.require_reference, self.source = normalize, require_reference, source
        self._known = {prompt_field, reference_field, references_field, count_field, weight_field, id_field}
        # The row checks are the data loader's own, so a log and a dataset fail the same way.
        self._cfg = DataConfig(prompt_field=prompt_field, reference_field=reference_field,
                               references_field=references_field, count_field=count_field, id_field=id_field)
        self._entries: dict[str, dict[str, Any]] = {}  # key -> entry, in first-seen order

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, line: int, row: dict) -> None:
        if not isinstance(row, dict):
            raise RlftError(f"{where(self.source, line)}: expected an object, got {type(row).__name__}")
        prompt = self._prompt(line, row)
        references = self._references(line, row)
        count = self._count(line, row)
        key = normalize_prompt(prompt) if self.normalize else prompt
        entry = self._entries.get(key)
        if entry is None:
            raw_id = row.get(self.id_field)
            entry = {"prompt": prompt, "line": line, "count": 0, "references": {},
                     "id": None if raw_id is None or str(raw_id).strip() == "" else str(raw_id),
                     "meta": {k: _jsonable(v) for k, v in row.items() if k not in self._known}}
            self._entries[key] = entry
        entry["count"] += count
        # A dict used as an ordered set keeps references in first-seen order.
        entry["references"].update(dict.fromkeys(references))

    def examples(self) -> list[Example]:
        """Unique prompts by descending count; ties keep first appearance (the sort is stable)."""
        ranked = sorted(self._entries.values(), key=lambda e: -e["count"])
        seen: dict[str, int] = {}
        out = []
        for rank, e in enumerate(ranked, start=1):
            if self.require_reference and not e["references"]:
                raise RlftError(f"{where(self.source, e['line'])}: no reference for this prompt in any of its rows "
                                f"(fields '{self.reference_field}' or '{self.references_field}')")
            ex_id = e["id"] if e["id"] is not None else f"p{rank}"
            if ex_id in seen:
                raise RlftError(f"{where(self.source, e['line'], self.id_field)}: id '{ex_id}' also names a "
                                f"different prompt (line {seen[ex_id]})")
            seen[ex_id] = e["line"]
            out.append(Example(prompt=e["prompt"], references=tuple(e["references"]), id=ex_id,
                               count=float(e["count"]), meta=dict(e["meta"])))
        return out

    def _prompt(self, line: int, row: dict) -> str:
        return loading._prompt(row, self._cfg, self.source, line)

    def _references(self, line: int, row: dict) -> list[str]:
        return loading._references(row, self._cfg, self.source, line, required=False)

    def _count(self, line: int, row: dict) -> float:
        return loading._count(row, self._cfg, self.source, line, weight_field=self.weight_field)


def count_prompts(rows: Iterable[tuple[int, dict]], *, prompt_field: str = "prompt",
                  reference_field: str = "reference", references_field: str = "references",
                  count_field: str = "count", weight_field: str = "weight", id_field: str = "id",
                  normalize: bool = False, require_reference: bool = True, source: str = "log") -> list[Example]:
    """One streaming pass over ``(line, row)`` pairs of a traffic log -> unique prompts with counts.

    Repeats (exact, or equal under ``normalize_prompt`` with ``normalize=True``) merge into one
    Example that keeps the first-seen prompt text, id and extra fields (``meta``), sums the
    counts and unions the references in first-seen order. Ids are the first row's ``id_field``
    or ``p{rank}`` (1 = most frequent). Order: descending count, ties by first appearance.
    """
    counter = PromptCounter(prompt_field=prompt_field, reference_field=reference_field,
                            references_field=references_field, count_field=count_field,
                            weight_field=weight_field, id_field=id_field, normalize=normalize,
                            require_reference=require_reference, source=source)
    for line, row in rows:
        counter.add(line, row)
    return counter.examples()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


# ---------------------------------------------------------------------------- weights and sampling


def traffic_weights(counts: torch.Tensor, alpha: float, floor: float) -> torch.Tensor:
    """Sampling probabilities over the U unique prompts, float64 (U,).

    q_i = count_i**alpha / sum_j count_j**alpha        (alpha=0: uniform, alpha=1: traffic)
    p_i = floor / U + (1 - floor) * q_i                (closed-form floor)
    The mix sums to 1 and gives every prompt at least floor/U, a ``floor`` fraction of the
    uniform share, so the tail keeps being trained however skewed the counts are.
    """
    if not math.isfinite(alpha) or alpha < 0:
        raise RlftError(f"frequency.alpha: must be >= 0, got {alpha}")
    if not 0.0 <= floor <= 1.0:
        raise RlftError(f"frequency.floor: must be in [0, 1], got {floor}")
    counts = torch.as_tensor(counts, dtype=torch.float64)  # (U,)
    if counts.ndim != 1 or counts.numel() == 0:
        raise RlftError(f"traffic_weights: expected a non-empty 1-D tensor of counts, got shape {tuple(counts.shape)}")
    if not bool(torch.isfinite(counts).all() & (counts > 0).all()):
        raise RlftError("traffic_weights: counts must be finite and positive")
    # In log space: count**alpha overflows float64 for large counts and alpha (1e9**40), the
    # softmax of alpha * log(count) cannot.
    q = torch.softmax(alpha * counts.log(), dim=0)  # (U,)
    return floor / counts.numel() + (1.0 - floor) * q


def inclusion_probs(p: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Expected number of draws per step of each prompt, pi (U,), summing to B.

    pi = B * p, except that when B <= #{p > 0} no prompt may be drawn twice in a step, so
    pi is capped at 1 and the excess spread proportionally over the uncapped prompts
    (the usual capping for probability-proportional-to-size sampling without replacement).
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    pi = batch_size * p  # (U,)
    if batch_size > int((p > 0).sum()):
        return pi  # more slots than prompts: repeats are unavoidable, expected counts stay B * p
    capped = torch.zeros_like(p, dtype=torch.bool)
    while bool((pi > 1.0 + 1e-12).any()):  # at most B rounds: each caps at least one prompt
        capped |= pi > 1.0
        free = p.masked_fill(capped, 0.0)
        pi = torch.where(capped, torch.ones_like(p), free * (batch_size - int(capped.sum())) / free.sum())
    return pi


def systematic_sample(pi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw round(sum pi) indices so that prompt i is drawn pi_i times in expectation, long (B,).

    Systematic sampling (Madow, 1949) over a fresh random order of the prompts: one uniform u,
    points u, u+1, ..., u+B-1 on the cumulative sum of pi. A prompt with pi_i <= 1 is drawn at
    most once, with probability exactly pi_i. We use it instead of torch.multinomial without
    replacement, whose inclusion probabilities are flatter than B * p and have no closed form,
    so its head bias could not be corrected by loss weights.
    """
    support = torch.nonzero(pi > 0).squeeze(1)
    order = support[torch.randperm(support.numel(), generator=generator)]  # (S,)
    edges = torch.cumsum(pi[order], dim=0)  # (S,)
    n = int(round(float(edges[-1])))
    u = torch.rand((), generator=generator, dtype=torch.float64)
    points = u + torch.arange(n, dtype=torch.float64)  # (B,)
    slot = torch.searchsorted(edges, points, right=True).clamp_(max=order.numel() - 1)  # rounding at the end
    return order[slot]


def loss_weights(p: torch.Tensor, indices: torch.Tensor, inclusion: torch.Tensor | None = None) -> torch.Tensor:
    """Per-draw loss weights w (B,) that make the batch-mean loss unbiased for sum_i p_i L_i.

    E[(1/B) sum_b w_b L_{i_b}] = (1/B) sum_i pi_i w_i L_i = sum_i p_i L_i  with  w_i = B p_i / pi_i.
    ``inclusion`` is the sampler's pi; None means uniform sampling (pi_i = B/U), giving
    w_i = U p_i: the traffic weighting of mode 'loss'. The weights are deliberately not
    renormalized per batch: that would be a ratio estimator, biased towards the batch at hand;
    their population mean is already 1 (sum_i (pi_i/B) w_i = 1).
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    batch_size = indices.numel()
    if inclusion is None:
        return p[indices] * p.numel()  # (B,)
    return batch_size * p[indices] / inclusion[indices]  # (B,)


class PromptSampler:
    """Draws B unique-prompt indices per step with expected counts B * probs (capped at 1 each).

    Compute scales with the U unique prompts: a prompt seen a million times in traffic is one
    index with a large probability, so one step never rolls it out more than once when B <= U.
    ``target`` (default ``probs``) is the distribution the loss should follow; ``loss_weights``
    corrects for the capping and for ``probs != target`` (mode 'loss': uniform probs, traffic
    target). Reproducible from ``seed``; ``state_dict`` saves the generator for resume.
    """

    def __init__(self, probs: torch.Tensor, batch_size: int, *, seed: int = 0, target: torch.Tensor | None = None):
        if batch_size < 1:
            raise RlftError(f"rollout.prompts_per_step: must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.set_probs(probs, target)

    def set_probs(self, probs: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Swap the distribution (e.g. after a tail boost) without touching the random stream."""
        probs = torch.as_tensor(probs, dtype=torch.float64)
        target = probs if target is None else torch.as_tensor(target, dtype=torch.float64)
        if probs.ndim != 1 or probs.numel() == 0 or target.shape != probs.shape:
            raise RlftError(f"PromptSampler: probs and target must be 1-D of one length, got "
                            f"{tuple(probs.shape)} and {tuple(target.shape)}")
        if bool((probs < 0).any()) or float(probs.sum()) <= 0:
            raise RlftError("PromptSampler: probabilities must be non-negative with a positive sum")
        if bool(((target > 0) & (probs == 0)).any()):
            raise RlftError("PromptSampler: target puts weight on prompts that are never sampled")
        self.probs, self.target = probs / probs.sum(), target / target.sum()
        self.inclusion = inclusion_probs(self.probs, self.batch_size)  # (U,)

    @property
    def num_prompts(self) -> int:
        return self.probs.numel()

    def sample(self) -> torch.Tensor:
        return systematic_sample(self.inclusion, self.generator)  # (B,) long, in random order

    def loss_weights(self, indices: torch.Tensor) -> torch.Tensor:
        return loss_weights(self.target, indices, self.inclusion)  # (B,)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "num_prompts": self.num_prompts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_prompts"] != self.num_prompts:
            raise RlftError(f"resume: the prompt sampler was saved with {state['num_prompts']} unique prompts, "
                            f"the data now has {self.num_prompts}")
        self.generator.set_state(state["generator"])


# ---------------------------------------------------------------------------- buckets and evaluation


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
