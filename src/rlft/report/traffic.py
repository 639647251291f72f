"""The traffic tables: the metric by training-count bucket, and the replay of future requests.

Reads the ``EvalResult`` records of ``rlft.eval.evaluate`` (a held-out split) and
``rlft.eval.replay`` (the replay sample, decoded before and after training). Plain text, like ``rlft.report.table``.
"""

from __future__ import annotations

from rlft.eval.bootstrap import BootstrapResult, paired_bootstrap
from rlft.eval.replay import ReplayScores, baselines, per_request
from rlft.eval.result import EvalResult
from rlft.report.table import _render, align_pair, bucket_table, display_name, fmt, fmt_ci


def replay_table(before: EvalResult, after: EvalResult | None = None, *, n_resamples: int = 1000,
                 seed: int = 0) -> str:
    """Mean metric per request on the replay sample: all, seen and new requests, for the model
    before and after, the change with its paired 95% CI, the exact-match cache (new requests
    unanswered, scored 0) and the cache answering seen requests with the model answering new ones."""
    if after is not None:
        before, after = align_pair(before, after, before_src="replay before", after_src="replay after")
    meta, weights = before.replay, before.counts
    seen = meta["seen"]
    last = after if after is not None else before
    rows: list[tuple[str, ReplayScores]] = []
    models = (("model before", before), ("model after", after)) if after is not None else (("model", before),)
    for label, data in models:
        rows.append((label, per_request(data.per_example, weights, seen)))
    cache = baselines(last.per_example, last.cache_per_example, weights, seen)
    rows.append(("exact-match cache", cache["cache"]))
    rows.append((f"cache + {models[-1][0]}", cache["cache + model"]))
    n_seen = sum(w for w, s in zip(weights, seen) if s)
    n_all = sum(weights)
    header = ["per request", f"all ({n_all:g})", f"seen ({n_seen:g})", f"new ({n_all - n_seen:g})"]
    body = [[label, fmt(r.all), fmt(r.seen), fmt(r.new)] for label, r in rows]
    if after is not None:
        cis = [_change(before.per_example, after.per_example, weights, seen, keep, n_resamples, seed)
               for keep in (None, True, False)]
        body.insert(2, ["change [95% CI]", *("-" if c is None else f"{c.delta:+.2f} {fmt_ci(c)}" for c in cis)])
    name = display_name(before.metric_name)
    title = (f"{name} on a replay of {n_all:g} future requests (seed {meta['seed']}): P(new prompt) = n1/N = "
             f"{meta['singletons']}/{meta['log_requests']:g} = {meta['p_new']:.3f} (Good-Turing, training log); "
             f"{n_seen:g} requests repeat training prompts, {n_all - n_seen:g} are new held-out prompts "
             f"({len(weights)} unique prompts decoded)")
    notes = ["Cache: answers a seen prompt with its first training reference; it has no answer for a new prompt "
             "(scored 0). 'cache + model': the cache on seen prompts, the model on new ones."]
    if meta.get("pool_reused"):
        notes.append(f"More new requests than held-out prompts ({meta['pool']}): some new prompts repeat.")
    return title + "\n" + _render(header, body) + "\n" + "\n".join(notes)


def _change(before: list[float], after: list[float], weights: list[float], seen: list[bool], keep: bool | None,
            n_resamples: int, seed: int) -> BootstrapResult | None:
    idx = [i for i, s in enumerate(seen) if keep is None or s == keep]
    if not idx:
        return None
    return paired_bootstrap([before[i] for i in idx], [after[i] for i in idx], weights=[weights[i] for i in idx],
                            n_resamples=n_resamples, seed=seed)


def traffic_tables(before: EvalResult, after: EvalResult, replay_before: EvalResult | None = None,
                   replay_after: EvalResult | None = None, *, seed: int = 0) -> str:
    """The bucket table (or the line saying why there is none) of the held-out evaluation, then
    the replay table when the replay was evaluated."""
    parts = [bucket_table(before, after, seed=seed)]
    if replay_before is not None:
        parts.append(replay_table(replay_before, replay_after, seed=seed))
    return "\n\n".join(p for p in parts if p)
