"""Greedy-decode evaluation: task metric, reward, KL to the reference, length, truncation, and the
reward-hacking monitors (``rlft.eval.monitors``) with each reward component's mean.

The result is an ``rlft.eval.result.EvalResult``, written to ``run_dir/eval/<tag>.json`` by
``write_eval`` and read back by the report.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from rlft.data.example import Example
from rlft.eval.result import EvalResult


@torch.no_grad()
def greedy_kl(policy_model: Any, reference: Any, rollout: Any, *, is_seq2seq: bool) -> float:
    """Mean per-token KL(pi || pi_ref) along the greedy outputs, exact over the vocabulary.
    ``reference`` is a ``rlft.models.reference.Reference`` (with LoRA: the policy, adapter off).

    A sample-based estimate would be biased on greedy (argmax) tokens; here both full
    next-token distributions are compared at every generated position.
    """
    from rlft.models.logprobs import completion_token_logprobs

    mask = rollout.completion_mask
    if mask.sum() == 0:
        return 0.0
    logp = completion_token_logprobs(policy_model, rollout, is_seq2seq=is_seq2seq)  # (N, T, V)
    with reference.active() as ref_model:
        logq = completion_token_logprobs(ref_model, rollout, is_seq2seq=is_seq2seq)  # (N, T, V)
    kl = (logp.exp() * (logp - logq)).sum(-1)                                      # (N, T)
    return float((kl * mask).sum() / mask.sum())


def evaluate(
    parts: Any,
    examples: Sequence[Example],
    *,
    reference: Any = None,
    tag: str = "eval",
    step: int = 0,
    split: str = "validation",
    freq_buckets: bool = True,
    progress: bool = False,
    kl_rows: int | None = None,
    dist: Any = None,
) -> EvalResult:
    """Greedy-decode ``examples`` in batches and score them (``progress``: a bar over the batches).

    The exact KL to ``reference`` costs two more forward passes with full-vocabulary outputs;
    ``kl_rows`` limits it to the batches that start within the first ``kl_rows`` examples
    (``kl_n`` says how many rows it covers).

    ``dist`` (``rlft.training.distributed.Dist``, many processes): rank r decodes batches r, r +
    world, ...; the batches are the single process's, gathered back in their order, so every
    rank gets the result one process would (same outputs, same bucketed tables).

    Returns the ``EvalResult``: metric (0-100, mean of sentence scores) with per-example scores,
    a second metric, mean reward, KL to ``reference`` (None without one), mean length, truncation
    rate, the monitors, traffic buckets and stratified scores, and sample outputs.
    """
    from tqdm.auto import tqdm

    from rlft.eval.monitors import text_monitors
    from rlft.rewards import METRICS

    config = parts.config
    metric_name, second_name = metric_names(config)
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    starts = list(range(0, len(examples), config.eval.batch_size))
    bar = tqdm(total=len(examples), desc=tag, unit="row", disable=not progress or rank > 0, leave=False,
               dynamic_ncols=True)
    done = {}
    for i in range(rank, len(starts), world):
        done[starts[i]] = _decode_batch(parts, examples, starts[i], reference, kl_rows)
        bar.update(len(done[starts[i]]["outputs"]))
    bar.close()
    if world > 1:
        done = {start: rec for part in dist.gather_objects(done) for start, rec in part.items()}
    records = [done[start] for start in starts]
    outputs = [o for r in records for o in r["outputs"]]
    lengths = [x for r in records for x in r["lengths"]]
    truncated = [t for r in records for t in r["truncated"]]
    rewards = [x for r in records for x in r["rewards"]]
    columns: dict[str, list[float]] = {}  # 'reward/<name>' -> values of each reward component
    for r in records:
        for key, values in r["columns"].items():
            columns.setdefault(key, []).extend(values)
    kl_sum, kl_tokens, kl_n = (sum(r[k] for r in records) for k in ("kl_sum", "kl_tokens", "kl_n"))
    refs = [ex.references for ex in examples]
    per_example = METRICS[metric_name].sentence(outputs, refs)
    second = METRICS[second_name].sentence(outputs, refs) if second_name else None
    buckets = train_counts = rule = None
    strata: dict[str, Any] = {}
    if freq_buckets:  # buckets from the TRAINING counts; prompts absent from training are 'unseen'
        from rlft.data.buckets import bucket_examples, stratified_scores

        freq = config.frequency
        rule, train_counts, buckets = bucket_examples(
            examples, parts.splits.get("train", []), head_share=freq.head_share, torso_share=freq.torso_share,
            normalize=freq.normalize)
        strata = stratified_scores(per_example, [ex.count for ex in examples], buckets)
    return EvalResult(
        tag=tag, step=step, split=split, n=len(examples),
        metric_name=metric_name, metric=_mean(per_example), per_example=per_example,
        corpus_metric=METRICS[metric_name].corpus(outputs, refs),
        second_metric_name=second_name, second_metric=_mean(second) if second else None,
        second_per_example=second,
        reward=_mean([r for r in rewards if math.isfinite(r)]),
        kl=(kl_sum / kl_tokens) if kl_tokens else None, kl_n=kl_n,
        length=_mean(lengths), truncation_rate=_mean([float(t) for t in truncated]),
        ids=[ex.id for ex in examples], counts=[ex.count for ex in examples],
        outputs=outputs,
        samples=[{"id": ex.id, "prompt": ex.prompt, "reference": ex.references[0], "output": o}
                 for ex, o in list(zip(examples, outputs))[: max(config.eval.show_samples, 0)]],
        monitors=text_monitors([ex.prompt for ex in examples], outputs, refs, language=config.eval.language,
                               cjk=config.reward.cjk),
        components={k: _mean(v) for k, v in columns.items()} if len(columns) > 1 else {},
        buckets=buckets, train_counts=train_counts, bucket_rule=rule.describe() if rule is not None else None, strata=strata)


def _decode_batch(parts: Any, examples: Sequence[Example], start: int, reference: Any,
                  kl_rows: int | None) -> dict[str, Any]:
    """One evaluation batch, from ``start``: greedy outputs, lengths, truncation, rewards, the reward
    components and the KL parts (plain lists and numbers: they travel between processes)."""
    from rlft.data.templates import render
    from rlft.eval.monitors import component_columns
    from rlft.rewards import score

    config, policy = parts.config, parts.policy
    batch = list(examples[start:start + config.eval.batch_size])
    prompts = render(config, policy.tokenizer, batch, parts.max_prompt_tokens)
    rollout = parts.sampler.greedy(prompts, max_new_tokens=config.eval.max_new_tokens or config.rollout.max_new_tokens)
    result = score(parts.reward_fn, [ex.prompt for ex in batch], rollout.texts,
                   [ex.references for ex in batch], truncated=rollout.truncated.tolist())
    out = {"outputs": rollout.texts, "lengths": rollout.lengths.tolist(), "truncated": rollout.truncated.tolist(),
           "rewards": result.rewards if result.rewards is not None else [math.nan] * len(batch),
           "columns": component_columns(result.components), "kl_sum": 0.0, "kl_tokens": 0.0, "kl_n": 0}
    if reference is not None and (kl_rows is None or start < kl_rows):
        with parts.autocast():
            n_tok = float(rollout.completion_mask.sum())
            out.update(kl_sum=greedy_kl(policy.model, reference, rollout, is_seq2seq=policy.is_seq2seq) * n_tok,
                       kl_tokens=n_tok, kl_n=len(batch))
    return out


def metric_names(config: Any) -> tuple[str, str | None]:
    """The task metric and a second metric the reward did not optimize (to catch hacking)."""
    from rlft.rewards import METRICS

    name = config.eval.metric
    if name is None:  # the reward's first registered term, e.g. '0.8*chrf + 0.2*x' -> chrf
        terms = [t.split("*")[-1].strip() for t in config.reward.spec.split("+")]
        name = next((t for t in terms if t in METRICS), "chrf")
    if name not in METRICS:
        from rlft.errors import RlftError

        raise RlftError(f"config: eval.metric: unknown metric '{name}' (known: {', '.join(sorted(METRICS))})")
    second = {"chrf": "bleu", "bleu": "chrf", "rouge_l": "chrf"}.get(name, "chrf")
    return name, second


def log_summary(result: EvalResult) -> dict[str, float | None]:
    """The scalar part of an eval result, for metrics.jsonl."""
    from rlft.eval.monitors import MONITOR_KEYS

    keys = ["metric", "corpus_metric", "second_metric", "reward", "kl", "length", "truncation_rate",
            "traffic_weighted", "unweighted", "head", "torso", "tail", "unseen", "rare", *MONITOR_KEYS,
            *result.components]
    values = result.to_dict()
    return {k: values[k] for k in keys if k in values}


def _mean(xs: Sequence[float] | None) -> float:
    xs = list(xs or [])
    return float(sum(xs) / len(xs)) if xs else float("nan")


Evaluator = Callable[..., EvalResult]
