"""Step 5 of the RL loop: the policy-gradient update on one batch of rollouts.

``update(model, optimizer, UpdateBatch(...), UpdateSettings.from_config(...))`` makes
``algo.updates_per_batch`` passes over the batch (PPO's epochs), each of ``algo.minibatches``
optimizer steps, each step over ``optim.grad_accum`` micro-batches. The batch says what to learn
from (rollouts, advantages, loss weights, reference log-probs; PPO's value targets); the settings
say how (the algorithm's loss settings, micro-batching, clipping, temperature).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, ContextManager, NamedTuple

import torch

from rlft.config import AlgoConfig, Config
from rlft.models.logprobs import RolloutLike
from rlft.training.distributed import Dist


@dataclass(frozen=True)
class UpdateBatch:
    """N = B * G rows to learn from."""

    rollout: RolloutLike                      # prompt_ids (N, P), prompt_mask (N, P), completion_ids/mask (N, T)
    advantages: torch.Tensor                  # (N,) per sequence, or (N, T) per token (PPO)
    weights: torch.Tensor | None = None       # (N,) per-row loss weights (traffic weighting); None: all 1
    ref_logprobs: torch.Tensor | None = None  # (N, T) reference log-probs for a KL loss term; None: no KL term
    kl_coef: float | None = None              # the KL loss term's weight now (adaptive); None: algo.kl_coef
    old_logprobs: torch.Tensor | None = None  # (N, T) log-probs before the update; None: computed when needed
    returns: torch.Tensor | None = None       # (N, T) the value head's targets (PPO); None: no value loss
    old_values: torch.Tensor | None = None    # (N, T) the value head's estimates at rollout time (PPO)


@dataclass(frozen=True)
class UpdateSettings:
    """How to update: the algorithm's loss settings plus the optimizer's micro-batching and clipping."""

    algo: AlgoConfig
    clip: bool                 # the algorithm clips the ratio at 1 +- algo.clip_eps (GRPO)
    grad_accum: int            # micro-batches per optimizer step
    max_grad_norm: float       # 0: no clipping (the norm is logged either way)
    temperature: float         # the sampling temperature: log-probs of the distribution that sampled
    is_seq2seq: bool
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext
    dist: Dist = Dist()        # many processes: this rank's share of each minibatch, gradients averaged

    @classmethod
    def from_config(cls, config: Config, parts: Any, *, clip: bool) -> UpdateSettings:
        """The settings of a run; ``parts`` (``rlft.training.setup.Parts``) gives the model kind, autocast
        and the processes."""
        parts.dist.share(config.rollout.prompts_per_step, config.algo.minibatches)  # B must split: said before step 1
        return cls(config.algo, clip, config.optim.grad_accum, config.optim.max_grad_norm,
                   config.rollout.temperature, parts.policy.is_seq2seq, parts.autocast, parts.dist)


class UpdateResult(NamedTuple):
    stats: dict[str, float]   # loss, pg_loss, kl, entropy, clip_frac, ratio_mean, grad_norm (PPO: value_loss, ...)
    error: str | None         # why the optimizer step was not taken (non-finite loss or gradient), or None


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: UpdateBatch,
           settings: UpdateSettings, value_head: torch.nn.Module | None = None) -> UpdateResult:
    """``updates_per_batch`` passes over one batch of rollouts, each of ``minibatches`` optimizer
    steps (rows in order, the same split every pass), each in ``grad_accum`` micro-batches.

    Each micro-batch's loss is normalized by its minibatch's token (or row) count, so the
    accumulated gradient equals the gradient of the whole minibatch at once; the logged token
    means (kl, entropy, clip_frac, ratio_mean) are weighted by each micro-batch's tokens, so they
    are the minibatch's token means whatever ``grad_accum`` is, averaged over the steps. With a
    ``value_head`` and ``batch.returns`` (PPO) the loss adds ``vf_coef`` times the clipped value
    loss, and the optimizer steps the head too. Log-probabilities are taken at the sampling
    temperature. Returns the stats and None, or the stats so far and the reason when a loss or
    gradient is not finite: that optimizer step is not taken, nor any after it on this batch.

    On many processes ``batch`` is this rank's share of every minibatch (``settings.dist``); the
    normalizer is the global minibatch's, so the averaged gradient is the single-process one.
    """
    from rlft.models.value_head import with_value_head

    algo, n = settings.algo, batch.rollout.completion_mask.shape[0]
    old_lp = batch.old_logprobs
    if old_lp is None and algo.updates_per_batch * algo.minibatches > 1:
        old_lp = frozen_logprobs(model, batch.rollout, settings)  # the policy before the first step
    trained = with_value_head(model, value_head if batch.returns is not None else None)
    trained.train()
    totals: dict[str, float] = {}
    error, steps = None, [rows for _ in range(algo.updates_per_batch) for rows in _chunks(n, algo.minibatches)]
    for rows in steps:
        optimizer.zero_grad(set_to_none=True)
        step_loss = _accumulate(model, value_head, batch, old_lp, rows, settings, totals)
        grad_norm = totals["grad_norm"] = settings.dist.clip_grad_norm(trained, settings.max_grad_norm)
        step_loss = settings.dist.sum(step_loss)  # a non-finite loss on any rank skips the step on all
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            error = f"non-finite {'loss' if not math.isfinite(step_loss) else 'gradient'}; update skipped"
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
    trained.eval()
    return UpdateResult({key: (v / len(steps) if key != "grad_norm" else v) for key, v in totals.items()}, error)


def _accumulate(model: torch.nn.Module, value_head: torch.nn.Module | None, batch: UpdateBatch,
                old_lp: torch.Tensor | None, rows: torch.Tensor, settings: UpdateSettings,
                totals: dict[str, float]) -> float:
    """The gradient of one optimizer step over ``rows``, in ``grad_accum`` micro-batches; adds the
    step's stats to ``totals`` and returns its loss."""
    from rlft.algorithms import rl_loss  # looked up per call: tests patch it
    from rlft.algorithms.ppo import value_loss
    from rlft.models.logprobs import completion_logprobs_values

    algo, rollout, ref_lp, weights, dist = settings.algo, batch.rollout, batch.ref_logprobs, batch.weights, settings.dist
    mask = rollout.completion_mask                                                     # (N, T)
    head = value_head if batch.returns is not None else None
    normalizer = mask[rows].sum() if algo.loss_norm == "token" else torch.tensor(float(len(rows)))
    # Many processes: the global minibatch's count over the world size, as the ranks' gradients are averaged.
    normalizer = dist.sum(normalizer) / dist.world
    kl_coef = algo.kl_coef if batch.kl_coef is None else batch.kl_coef
    step_loss = 0.0
    for c in (rows[i] for i in _chunks(len(rows), settings.grad_accum)):
        with settings.autocast():
            lp, ent, values = completion_logprobs_values(dist.forward(model), head, _rows(rollout, c),
                                                         is_seq2seq=settings.is_seq2seq,
                                                         with_entropy=algo.entropy_coef > 0,
                                                         temperature=settings.temperature)
        lp = lp.float()                                                                # (n_c, T)
        loss, stats = rl_loss(
            lp, old_lp[c] if old_lp is not None else lp.detach(), batch.advantages[c], mask[c],
            ref_logprobs=ref_lp[c] if ref_lp is not None else None, kl_coef=kl_coef,
            kl_estimator=algo.kl_estimator, entropy=ent.float() if ent is not None else None,
            entropy_coef=algo.entropy_coef, clip_eps=algo.clip_eps if settings.clip else None,
            loss_norm=algo.loss_norm, normalizer=normalizer,
            weights=weights[c] if weights is not None else None)
        if values is not None:  # PPO: the value head regresses on the returns, clipped around the old values
            v_loss, v_stats = value_loss(values, batch.old_values[c], batch.returns[c], mask[c],
                                         clip=algo.cliprange_value, loss_norm=algo.loss_norm, normalizer=normalizer)
            loss = loss + algo.vf_coef * v_loss
            stats.update(v_stats)
        dist.backward(loss)
        step_loss += loss.item()
        # the losses are normalized by the whole minibatch already: micro-batch values add up
        for key in ("pg_loss", "value_loss"):
            if key in stats:
                totals[key] = totals.get(key, 0.0) + float(stats.pop(key))
        tokens = float(mask[c].sum() / mask[rows].sum().clamp(min=1))  # this micro-batch's share of the tokens
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + float(v) * tokens
    totals["loss"] = totals.get("loss", 0.0) + step_loss
    return step_loss


def frozen_logprobs(model: torch.nn.Module, rollout: RolloutLike, settings: UpdateSettings) -> torch.Tensor:
    """log pi(y_t) of the sampled tokens at the sampling temperature, no grad, in the
    ``grad_accum`` micro-batches of the update (memory).  # (N, T) fp32"""
    return frozen_logprobs_values(model, None, rollout, settings)[0]


def frozen_logprobs_values(model: torch.nn.Module, value_head: torch.nn.Module | None, rollout: RolloutLike,
                           settings: UpdateSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``frozen_logprobs`` and, from the same forward passes, the value head's V(x, y_<t) (PPO's
    old values), or None without a head.  # (N, T) fp32 each"""
    from rlft.models.bf16_emulation import cast_frozen_once
    from rlft.models.logprobs import completion_logprobs_values

    chunks = _chunks(rollout.completion_ids.shape[0], settings.grad_accum)
    with torch.no_grad(), settings.autocast(), cast_frozen_once(model):
        parts = [completion_logprobs_values(settings.dist.forward(model), value_head, _rows(rollout, c),
                                            is_seq2seq=settings.is_seq2seq,
                                            temperature=settings.temperature) for c in chunks]
    values = torch.cat([p[2] for p in parts]) if value_head is not None else None
    return torch.cat([p[0] for p in parts]).float(), values


def _chunks(n: int, parts: int) -> list[torch.Tensor]:
    return [c for c in torch.arange(n).chunk(parts) if len(c)]


def _rows(rollout: RolloutLike, idx: torch.Tensor) -> RolloutLike:
    """A view of some rows of a rollout, enough for log-probabilities."""
    return SimpleNamespace(prompt_ids=rollout.prompt_ids[idx], prompt_mask=rollout.prompt_mask[idx],
                           completion_ids=rollout.completion_ids[idx], completion_mask=rollout.completion_mask[idx])
