"""Traffic replay: score a model on a sample of future requests, as the task's traffic would send them.

A held-out split scores prompts that training never saw, each once: it says nothing about the
requests that repeat. The replay evaluation draws N future requests from a model of the traffic
fitted to the training log (the train split with its counts) and scores each request:

* The next request is a prompt the log never saw with probability p_new = n1 / N_log
  (Good-Turing's estimate of the unseen mass: the share of the log's requests that are
  singletons, n1 prompts of count 1 out of N_log = sum of counts; Good 1953). Otherwise it
  repeats training prompt i with probability c_i / N_log (the empirical distribution; the
  Good-Turing discount of seen counts is left out: it would only move mass between seen
  prompts, not change p_new). Every request is drawn independently.
* A repeat is the training prompt itself, scored against its training references (a repeated
  request wants the same answer).
* A new request is a held-out prompt (``held_out``, e.g. the test split) whose key the training
  log lacks, drawn without replacement in a seeded order: new prompts are tail-like, mostly seen
  once. Only if N * p_new exceeds the pool do new requests repeat pool prompts (``pool_reused``).

Scores are per request (a prompt requested k times counts k times) while each unique prompt is
decoded once. The exact-match cache baseline answers a repeat with the prompt's first training
reference and has no answer for a new prompt: 'cache' scores those 0, 'cache + model' lets the
model answer them. On these data a repeat's references are its training references, so the
cache's score on repeats is the ceiling any model is measured against there.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlft.data.counting import prompt_key
from rlft.data.example import Example
from rlft.errors import RlftError

if TYPE_CHECKING:
    from rlft.eval.result import EvalResult


def unseen_share(counts: Sequence[float]) -> float:
    """Good-Turing probability that the next request is a prompt never seen: n1 / N.

    n1 = prompts of count 1, N = total requests in the log. A log without repeats gives 1
    (nothing ever recurred), one without singletons 0.
    """
    total = math.fsum(counts)
    if not counts or total <= 0:
        raise RlftError("replay: the training log is empty")
    return sum(1 for c in counts if c == 1) / total


@dataclass(frozen=True)
class ReplaySample:
    """N future requests over the unique prompts they name (each decoded once)."""

    examples: tuple[Example, ...]  # unique prompts, in order of first request (U_r,)
    requests: tuple[int, ...]      # index into ``examples`` of every request (N,)
    seen: tuple[bool, ...]         # per unique prompt: in the training log (U_r,)
    p_new: float                   # model probability that a request is new (Good-Turing n1 / N_log)
    log_requests: float            # N_log: requests in the training log
    singletons: int                # n1: training prompts of count 1
    pool: int                      # held-out prompts absent from training, the source of new requests
    pool_reused: bool              # more new requests than pool prompts: some new prompts repeat
    seed: int

    @property
    def weights(self) -> list[int]:
        """Requests per unique prompt (U_r,)."""
        per = Counter(self.requests)
        return [per[i] for i in range(len(self.examples))]


def replay_sample(train: Sequence[Example], held_out: Sequence[Example], n: int, *, seed: int = 0,
                  normalize: bool = False) -> ReplaySample:
    """Draw ``n`` future requests (see the module docstring for the model); deterministic in ``seed``.

    Prompts match the training log exactly, or under ``normalize_prompt`` with ``normalize``
    (``frequency.normalize``); a held-out prompt that matches a training one is not new and
    is left out of the pool.
    """
    if n < 1:
        raise RlftError(f"eval.replay: must be >= 1 requests, got {n}")
    counts = [ex.count for ex in train]
    p_new = unseen_share(counts)
    known = {prompt_key(ex.prompt, normalize) for ex in train}
    pool: dict[str, Example] = {}
    for ex in held_out:
        key = prompt_key(ex.prompt, normalize)
        if key not in known:
            pool.setdefault(key, ex)
    rng = random.Random(seed)
    is_new = [rng.random() < p_new for _ in range(n)]
    n_new = sum(is_new)
    if n_new and not pool:
        raise RlftError("replay: the traffic model asks for new prompts, but every held-out prompt is in training")
    repeats = iter(rng.choices(range(len(train)), weights=counts, k=n - n_new))
    new_prompts = list(pool.values())
    rng.shuffle(new_prompts)
    new_stream = (new_prompts[j % len(new_prompts)] for j in range(n_new))  # past the pool's end: around again
    drawn = [(next(new_stream), False) if new else (train[next(repeats)], True) for new in is_new]
    index: dict[tuple[bool, str], int] = {}
    examples: list[Example] = []
    seen: list[bool] = []
    requests = []
    for ex, was_seen in drawn:
        key = (was_seen, ex.id)
        if key not in index:
            index[key] = len(examples)
            examples.append(ex)
            seen.append(was_seen)
        requests.append(index[key])
    return ReplaySample(tuple(examples), tuple(requests), tuple(seen), p_new, math.fsum(counts),
                        sum(1 for c in counts if c == 1), len(pool), n_new > len(pool), seed)


def cache_answers(sample: ReplaySample) -> list[str | None]:
    """The exact-match cache: a seen prompt's first training reference, None for a new prompt."""
    return [ex.references[0] if s else None for ex, s in zip(sample.examples, sample.seen)]


@dataclass(frozen=True)
class ReplayScores:
    """Mean score per request over all, seen and new requests (None when there are none)."""

    all: float | None
    seen: float | None
    new: float | None


def per_request(scores: Sequence[float], weights: Sequence[float], seen: Sequence[bool]) -> ReplayScores:
    """Request-weighted means of per-unique-prompt ``scores``: overall, on seen and on new prompts."""
    if not len(scores) == len(weights) == len(seen):
        raise RlftError(f"replay: {len(scores)} scores, {len(weights)} weights, {len(seen)} seen flags")

    def mean(keep: Sequence[bool]) -> float | None:
        w = math.fsum(wi for wi, k in zip(weights, keep) if k)
        return math.fsum(s * wi for s, wi, k in zip(scores, weights, keep) if k) / w if w > 0 else None

    return ReplayScores(mean([True] * len(seen)), mean(seen), mean([not s for s in seen]))


def baselines(model_scores: Sequence[float], cache_scores: Sequence[float | None], weights: Sequence[float],
              seen: Sequence[bool]) -> dict[str, ReplayScores]:
    """The cache alone (new requests unanswered: scored 0) and the cache with the model answering
    new requests. ``cache_scores``: the cache answer's score per seen prompt (None for new ones)."""
    cache = [c if s else 0.0 for c, s in zip(cache_scores, seen)]
    fallback = [c if s else m for c, m, s in zip(cache_scores, model_scores, seen)]
    return {"cache": per_request(cache, weights, seen), "cache + model": per_request(fallback, weights, seen)}


def evaluate_replay(parts: Any, sample: ReplaySample, *, tag: str = "replay", step: int = 0,
                    reference: Any = None, progress: bool = False) -> EvalResult:
    """Decode each unique prompt of ``sample`` once and score it (``rlft.eval.evaluate``).

    The result's ``counts`` are the requests per prompt, so its 'traffic_weighted' is the mean
    per request; ``cache_per_example`` is the cache answer's score (None for new prompts);
    ``replay`` holds the sample's model numbers.
    """
    from rlft.eval.evaluate import evaluate
    from rlft.rewards import METRICS

    weighted = [dataclasses.replace(ex, count=float(w)) for ex, w in zip(sample.examples, sample.weights)]
    out = evaluate(parts, weighted, reference=reference, tag=tag, step=step, split="replay", progress=progress)
    answers = cache_answers(sample)
    scored = METRICS[out.metric_name].sentence([a or "" for a in answers], [ex.references for ex in sample.examples])
    return dataclasses.replace(
        out, cache_per_example=[s if a is not None else None for s, a in zip(scored, answers)],
        replay={"requests": len(sample.requests), "seed": sample.seed, "p_new": sample.p_new,
                "log_requests": sample.log_requests, "singletons": sample.singletons, "pool": sample.pool,
                "pool_reused": sample.pool_reused, "seen": list(sample.seen)})


def replay_for(parts: Any, n: int, *, held_out: str = "test", seed: int | None = None) -> ReplaySample:
    """The replay sample of a run's data: training log = the train split, new prompts from ``held_out``."""
    config = parts.config
    if held_out not in parts.splits:
        raise RlftError(f"replay: no '{held_out}' split to draw new prompts from (have: {', '.join(parts.splits)})")
    return replay_sample(parts.splits["train"], parts.splits[held_out], n,
                         seed=config.run.seed if seed is None else seed, normalize=config.frequency.normalize)
