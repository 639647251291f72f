"""Masked reductions, the KL estimators and the one policy-gradient loss every algorithm shares.

Notation: B prompts, G samples per prompt, N = B * G rows, T completion tokens. ``mask`` is
(N, T) float with 1 on real completion tokens (EOS included) and 0 on padding.

The algorithms differ only in how they turn rewards into advantages (per sequence: see
``reinforce``, ``scst``, ``rloo``, ``grpo``; per token: ``ppo``); the loss below is the same for
all of them, with GRPO and PPO switching on ratio clipping.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from rlft.algorithms.loss_settings import KL_MODE_ESTIMATORS, KlEstimator, LossNorm


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over positions where ``mask`` is non-zero (weighted by ``mask``)."""
    # `where` first: padded positions may hold inf/NaN (e.g. log-probs of pad tokens), and
    # inf * 0 would still be NaN.
    x = torch.where(mask > 0, x, torch.zeros_like(x)) * mask
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the masked positions; 0 where the mask is empty (no NaN, no NaN grad)."""
    total = masked_sum(x, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    # Dividing by a safe 1 instead of selecting 0 afterwards keeps the backward pass free of
    # the 0/0 that `torch.where` would still differentiate through.
    safe = torch.where(count > 0, count, torch.ones_like(count))
    return total / safe


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KlEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi.  # (N, T)

    With log r = log pi_ref(y) - log pi(y) and y ~ pi (Schulman 2020, "Approximating KL
    divergence"):
        k1 = -log r                 unbiased value, negative on some tokens, high variance
        k2 = (log r)^2 / 2          biased value (second order in log r), >= 0
        k3 = (r - 1) - log r        unbiased value and >= 0 (log r <= r - 1)

    As a value (a reward penalty, the logged 'kl') k1 and k3 are unbiased. As a *loss term* what
    matters is the expected gradient, E_{y~pi}[grad k(y)], at one position (prefix held fixed):
        k1:  E[grad log pi]                  = 0                        (no signal, only noise)
        k2:  E[log(pi/pi_ref) grad log pi]   = grad KL(pi || pi_ref)    (the intended one)
        k3:  E[(1 - pi_ref/pi) grad log pi]  = grad KL(pi_ref || pi)    (the reverse KL)
    k3 in the loss is DeepSeekMath eq. 4 (GRPO): it optimizes the reverse KL. Over a sequence, a
    loss term only sees each position's KL given its prefix, not how a token changes the KL of
    the positions after it (Tang & Munos 2025, "On a few pitfalls in KL gradient estimation");
    the reward penalty (``kl_reward``) carries both.
    """
    log_r = ref_logprobs - logprobs  # (N, T)
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    if estimator == "k3":
        # expm1 is exact near r = 1, where most tokens sit when the policy is close to pi_ref.
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(get_args(KlEstimator))}")


def kl_reward(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """The sequence KL penalty subtracted from the reward:  sum_t (log pi - log pi_ref)  # (N,)

    Ziegler et al. 2019 / TRL RLOO / OpenRLHF: the per-token k1 = log pi(y_t) - log pi_ref(y_t),
    detached, summed over the completion, and the algorithm's advantage is computed from
    R - kl_coef * KL. Its score-function gradient E[KL(y) grad log pi(y)] is exactly
    grad KL(pi || pi_ref) over whole sequences (E[grad log pi] = 0 removes the rest), and the
    algorithm's baseline applies to it too.
    """
    return masked_sum((logprobs - ref_logprobs).detach(), mask, dim=1)  # (N, T) -> (N,)


def aggregate(per_token: Tensor, mask: Tensor, loss_norm: LossNorm = "token",
              normalizer: float | Tensor | None = None) -> Tensor:
    """Reduce an (N, T) per-token loss to a scalar.

    'token':    sum_{i,t} l_it m_it / n_tokens               (DAPO, Yu et al. 2025: every token
                counts the same, so long completions are not down-weighted)
    'sequence': sum_i (sum_t l_it m_it / |o_i|) / n_rows     (DeepSeekMath eq. 3: 1/G sum_i 1/|o_i|)

    ``normalizer`` replaces n_tokens (resp. n_rows) when this call sees only a micro-batch:
    passing the whole batch's count makes the micro-batch losses add up to the batch loss, so
    their gradients add up to the batch gradient exactly.
    """
    if loss_norm == "token":
        total = masked_sum(per_token, mask)
        count = mask.sum() if normalizer is None else normalizer
    elif loss_norm == "sequence":
        total = masked_mean(per_token, mask, dim=1).sum()  # (N,) -> ()
        count = per_token.shape[0] if normalizer is None else normalizer
    else:
        raise ValueError(f"unknown loss_norm {loss_norm!r}; expected one of {', '.join(get_args(LossNorm))}")
    count = torch.as_tensor(count, dtype=total.dtype, device=total.device)
    return total / torch.where(count > 0, count, torch.ones_like(count))


def rl_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: KlEstimator = "k2",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    clip_eps: float | None = None,
    loss_norm: LossNorm = "token",
    normalizer: float | Tensor | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The policy-gradient loss (to minimise) shared by REINFORCE, SCST, RLOO, GRPO and PPO.

    Args (N rows, T tokens):
        logprobs:     (N, T) log pi_theta of the sampled tokens, with grad.
        old_logprobs: (N, T) log-probs under the policy that sampled them, detached. On-policy
                      they equal ``logprobs.detach()``: the ratio is 1 and the gradient is the
                      REINFORCE gradient  -A * grad log pi.
        advantages:   (N,) one advantage per sequence, shared by all its tokens, or (N, T) one
                      per token (PPO's GAE).
        mask:         (N, T) 1 on completion tokens.
        ref_logprobs: (N, T) log-probs under the frozen reference, for a KL loss term with
                      ``kl_estimator`` 'k2' (gradient of KL(pi || pi_ref)) or 'k3' (gradient of
                      the reverse KL(pi_ref || pi)); see ``kl_penalty``. None: no KL term (the
                      KL penalty then lives in the reward, ``kl_reward``).
        entropy:      (N, T) per-token entropy of pi_theta, for the entropy bonus.
        clip_eps:     PPO/GRPO ratio clipping; None = no clipping.
        weights:      (N,) per-sequence loss weights (e.g. traffic weights).

    GRPO objective (Shao et al. 2024, DeepSeekMath eq. 3), with r_it = pi_theta / pi_old:
        J = E[ 1/G sum_i 1/|o_i| sum_t ( min(r_it A_i, clip(r_it, 1-eps, 1+eps) A_i)
                                         - beta KL_it ) ]
    We minimise  l_it = -min(r A, clip(r) A) + kl_coef * KL_it - entropy_coef * H_it, scaled by
    the row weight, reduced by ``aggregate`` (``loss_norm='sequence'`` is eq. 3's 1/|o_i|).
    Without clipping the first term is -r A, which has the same gradient as the plain
    REINFORCE surrogate -A log pi at r = 1.

    Returns the loss and detached stats: 'pg_loss' (the policy-gradient part, normalised like
    the loss, so micro-batch values add up), and masked token means over this call's rows:
    'kl', 'entropy' (when given), 'clip_frac' (tokens whose clipped branch is active, i.e. get no
    gradient), 'ratio_mean'; a caller averaging micro-batches weights these by token counts.
    """
    n = logprobs.shape[0]
    if advantages.shape not in ((n,), tuple(logprobs.shape)) or (weights is not None and weights.shape != (n,)):
        raise ValueError(f"advantages must be (N,) = ({n},) or (N, T), and weights (N,), got "
                         f"{tuple(advantages.shape)} and {None if weights is None else tuple(weights.shape)}")
    # At least float32: under bf16 the ratio of nearly equal log-probs and a sum over
    # thousands of tokens both lose too many digits.
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    logprobs, old_logprobs = logprobs.to(dtype), old_logprobs.to(dtype)
    mask = mask.to(dtype)
    adv = advantages.to(dtype)
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv  # (N, 1), broadcast over tokens, or (N, T)
    ratio = torch.exp(logprobs - old_logprobs)  # (N, T)

    pg = -ratio * adv  # (N, T)
    if clip_eps is not None:
        clipped = -torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
        # max of the negated terms = -min(r A, clip(r) A): the pessimistic bound of PPO.
        pg = torch.maximum(pg, clipped)
        clip_active = ((adv > 0) & (ratio > 1.0 + clip_eps)) | ((adv < 0) & (ratio < 1.0 - clip_eps))
    else:
        clip_active = torch.zeros_like(mask, dtype=torch.bool)

    per_token = pg
    stats: dict[str, Tensor] = {}
    if ref_logprobs is not None:
        if kl_estimator not in KL_MODE_ESTIMATORS["loss"]:
            raise ValueError(f"KL estimator {kl_estimator!r} as a loss term has zero expected gradient; "
                             f"use one of {', '.join(KL_MODE_ESTIMATORS['loss'])} or the reward penalty (kl_reward)")
        kl = kl_penalty(logprobs, ref_logprobs.to(dtype), kl_estimator)  # (N, T)
        per_token = per_token + kl_coef * kl
        stats["kl"] = masked_mean(kl.detach(), mask)
    if entropy is not None:
        per_token = per_token - entropy_coef * entropy
        stats["entropy"] = masked_mean(entropy.detach(), mask)

    row_weight = None
    if weights is not None:
        row_weight = weights.to(dtype).unsqueeze(1)  # (N, 1)
        per_token = per_token * row_weight
    loss = aggregate(per_token, mask, loss_norm, normalizer)

    with torch.no_grad():
        weighted_pg = pg if row_weight is None else pg * row_weight
        stats["pg_loss"] = aggregate(weighted_pg, mask, loss_norm, normalizer)
        stats["clip_frac"] = masked_mean(clip_active.to(mask.dtype), mask)
        stats["ratio_mean"] = masked_mean(ratio, mask)
    return loss, stats
