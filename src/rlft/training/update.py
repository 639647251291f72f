"""Step 5 of the RL loop: the policy-gradient update on one batch of rollouts.

``update(model, optimizer, UpdateBatch(...), UpdateSettings.from_config(...))`` takes
``algo.updates_per_batch`` optimizer steps, each over ``optim.grad_accum`` micro-batches. The
batch says what to learn from (rollouts, advantages, loss weights, reference log-probs); the
settings say how (the algorithm's loss settings, micro-batching, clipping, temperature).
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


@dataclass(frozen=True)
class UpdateBatch:
    """N = B * G rows to learn from."""

    rollout: RolloutLike                      # prompt_ids (N, P), prompt_mask (N, P), completion_ids/mask (N, T)
    advantages: torch.Tensor                  # (N,)
    weights: torch.Tensor | None = None       # (N,) per-row loss weights (traffic weighting); None: all 1
    ref_logprobs: torch.Tensor | None = None  # (N, T) reference log-probs for a KL loss term; None: no KL term


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

    @classmethod
    def from_config(cls, config: Config, parts: Any, *, clip: bool) -> UpdateSettings:
        """The settings of a run; ``parts`` (``rlft.training.setup.Parts``) gives the model kind and autocast."""
        return cls(config.algo, clip, config.optim.grad_accum, config.optim.max_grad_norm,
                   config.rollout.temperature, parts.policy.is_seq2seq, parts.autocast)


class UpdateResult(NamedTuple):
    stats: dict[str, float]   # loss, pg_loss, kl, entropy, clip_frac, ratio_mean, grad_norm
    error: str | None         # why the optimizer step was not taken (non-finite loss or gradient), or None


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: UpdateBatch,
           settings: UpdateSettings) -> UpdateResult:
    """``updates_per_batch`` optimizer steps on one batch of rollouts, in ``grad_accum`` micro-batches.

    Each micro-batch's loss is normalized by the whole batch's token (or row) count, so the
    accumulated gradient equals the gradient of the whole batch at once; the logged token means
    (kl, entropy, clip_frac, ratio_mean) are weighted by each micro-batch's tokens, so they are
    the batch's token means whatever ``grad_accum`` is. Log-probabilities are taken at the sampling
    temperature. Returns the stats and None, or the stats so far and the reason when a loss or
    gradient is not finite: that optimizer step is not taken.
    """
    from rlft.algorithms import rl_loss  # looked up per call: tests patch it
    from rlft.models.logprobs import completion_logprobs
    from rlft.training.optim import clip_grad_norm

    algo, rollout, ref_lp, weights = settings.algo, batch.rollout, batch.ref_logprobs, batch.weights
    mask = rollout.completion_mask                                                     # (N, T)
    n = mask.shape[0]
    normalizer = mask.sum() if algo.loss_norm == "token" else torch.tensor(float(n))
    chunks = _chunks(n, settings.grad_accum)
    old_lp = frozen_logprobs(model, rollout, settings) if algo.updates_per_batch > 1 else None  # before the first step
    model.train()
    totals: dict[str, float] = {}
    error = None
    for _ in range(algo.updates_per_batch):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for c in chunks:
            with settings.autocast():
                lp, ent = completion_logprobs(model, _rows(rollout, c), is_seq2seq=settings.is_seq2seq,
                                              with_entropy=algo.entropy_coef > 0, temperature=settings.temperature)
            lp = lp.float()                                                            # (n_c, T)
            loss, stats = rl_loss(
                lp, old_lp[c] if old_lp is not None else lp.detach(), batch.advantages[c], mask[c],
                ref_logprobs=ref_lp[c] if ref_lp is not None else None, kl_coef=algo.kl_coef,
                kl_estimator=algo.kl_estimator, entropy=ent.float() if ent is not None else None,
                entropy_coef=algo.entropy_coef, clip_eps=algo.clip_eps if settings.clip else None,
                loss_norm=algo.loss_norm, normalizer=normalizer,
                weights=weights[c] if weights is not None else None)
            loss.backward()
            step_loss += loss.item()
            # loss and pg_loss are normalized by the whole batch already: micro-batch values add up
            totals["pg_loss"] = totals.get("pg_loss", 0.0) + float(stats.pop("pg_loss"))
            tokens = float(mask[c].sum() / mask.sum().clamp(min=1))  # this micro-batch's share of the tokens
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v) * tokens
        totals["loss"] = totals.get("loss", 0.0) + step_loss
        grad_norm = totals["grad_norm"] = clip_grad_norm(model, settings.max_grad_norm)
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            error = f"non-finite {'loss' if not math.isfinite(step_loss) else 'gradient'}; update skipped"
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
    model.eval()
    k = algo.updates_per_batch
    return UpdateResult({key: (v / k if key != "grad_norm" else v) for key, v in totals.items()}, error)


def frozen_logprobs(model: torch.nn.Module, rollout: RolloutLike, settings: UpdateSettings) -> torch.Tensor:
    """log pi(y_t) of the sampled tokens at the sampling temperature, no grad, in the
    ``grad_accum`` micro-batches of the update (memory).  # (N, T) fp32"""
    from rlft.models.logprobs import completion_logprobs

    chunks = _chunks(rollout.completion_ids.shape[0], settings.grad_accum)
    with torch.no_grad(), settings.autocast():
        return torch.cat([completion_logprobs(model, _rows(rollout, c), is_seq2seq=settings.is_seq2seq,
                                              temperature=settings.temperature)[0] for c in chunks]).float()


def _chunks(n: int, parts: int) -> list[torch.Tensor]:
    return [c for c in torch.arange(n).chunk(parts) if len(c)]


def _rows(rollout: RolloutLike, idx: torch.Tensor) -> RolloutLike:
    """A view of some rows of a rollout, enough for log-probabilities."""
    return SimpleNamespace(prompt_ids=rollout.prompt_ids[idx], prompt_mask=rollout.prompt_mask[idx],
                           completion_ids=rollout.completion_ids[idx], completion_mask=rollout.completion_mask[idx])
