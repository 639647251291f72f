"""PPO with a learned value (Schulman et al. 2017; for language models Ziegler et al. 2019).

Each completion token is an action: state s_t = (x, y_<t), action y_t. The reward of a token is
the KL penalty of that token, and the sequence reward R arrives on the last one (Ziegler et al.
2019, eq. 2; TRL's PPOTrainer, OpenRLHF):

    r_t = -kl_coef * (log pi(y_t) - log pi_ref(y_t))  +  [t = last] R

A value head estimates V(s_t); generalized advantage estimation (Schulman et al. 2016) turns
rewards and values into per-token advantages, whitened over the batch before the clipped-ratio
loss (``common.rl_loss`` with (N, T) advantages). The value head regresses on the returns with
its own clipped loss (``value_loss``).

Notation: N rows, T completion tokens; ``mask`` (N, T) has 1 on real completion tokens (a
prefix of each row: completions are right-padded).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlft.algorithms.common import aggregate, masked_mean
from rlft.algorithms.loss_settings import LossNorm


def token_rewards(rewards: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """Sequence rewards (N,) and per-token KL (N, T) -> per-token rewards (N, T).

    r_t = -kl_coef * kl_t on every completion token, plus R on the last one; 0 on padding.
    ``kl=None``: no per-token penalty (the KL is a loss term, or there is none).
    """
    if rewards.dim() != 1 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"rewards must be (N,) and mask (N, T), got {tuple(rewards.shape)} and {tuple(mask.shape)}")
    mask = mask.to(rewards.dtype)
    out = torch.zeros_like(mask)                                                       # (N, T)
    if kl is not None:
        out = -kl_coef * torch.where(mask > 0, kl.to(out.dtype), torch.zeros_like(out))
    last = (mask.sum(1).long() - 1).clamp(min=0)                                       # (N,) index of the last token
    has_tokens = mask.sum(1) > 0
    out[torch.arange(len(rewards)), last] += torch.where(has_tokens, rewards, torch.zeros_like(rewards))
    return out


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16):

        delta_t = r_t + gamma V_{t+1} - V_t              (V after the last token = 0)
        A_t     = delta_t + gamma lam A_{t+1}           = sum_l (gamma lam)^l delta_{t+l}
        returns = A_t + V_t                             (the value head's targets)

    rewards, values, mask (N, T) -> (advantages (N, T), returns (N, T)), both 0 on padding.
    lam = 1 gives the Monte-Carlo return minus V; lam = 0 the one-step TD error.
    """
    mask = mask.to(values.dtype)
    values = torch.where(mask > 0, values, torch.zeros_like(values))                   # (N, T)
    rewards = torch.where(mask > 0, rewards.to(values.dtype), torch.zeros_like(values))
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)   # (N, T) V_{t+1}
    deltas = rewards + gamma * next_values - values                                     # (N, T)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])                                            # (N,) A_{t+1}
    for t in reversed(range(values.shape[1])):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the masked tokens of the whole batch; 0 on padding.  # (N, T)

    The unbiased (n - 1) variance, as TRL's ``masked_whiten``; a batch of one token is only centred.
    """
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask) * (n / (n - 1) if n > 1 else 1.0)
    return torch.where(mask > 0, (x - mean) * torch.rsqrt(var + eps), torch.zeros_like(x))


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip: float,
               loss_norm: LossNorm = "token", normalizer: float | Tensor | None = None,
               ) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped value loss (Ziegler et al. 2019; TRL PPOTrainer, OpenAI baselines ppo2):

        V_clip = old_V + clip(V - old_V, -c, c)
        l_t    = 1/2 max((V_t - G_t)^2, (V_clip_t - G_t)^2)

    values (N, T) with grad; old_values (the value head's estimates at rollout time) and returns
    G (N, T) detached. The max keeps the value head from moving more than c from its old
    estimate in one batch, like the ratio clipping does for the policy. Reduced by
    ``common.aggregate`` like the policy loss (``normalizer`` for micro-batches). Returns the
    loss and detached stats 'value_loss' (normalized like the loss) and 'value_clip_frac'
    (tokens where the clipped branch is the larger, so they get no gradient).
    """
    dtype = torch.promote_types(values.dtype, torch.float32)
    values, old_values, returns, mask = values.to(dtype), old_values.to(dtype), returns.to(dtype), mask.to(dtype)
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)                # (N, T)
    unclipped_loss = (values - returns).square()
    clipped_loss = (clipped - returns).square()
    loss = aggregate(0.5 * torch.maximum(unclipped_loss, clipped_loss), mask, loss_norm, normalizer)
    with torch.no_grad():
        stats = {"value_loss": loss.detach(),
                 "value_clip_frac": masked_mean((clipped_loss > unclipped_loss).to(dtype), mask)}
    return loss, stats
