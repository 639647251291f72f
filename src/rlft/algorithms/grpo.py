"""Group-relative advantages of GRPO (Shao et al. 2024, DeepSeekMath, section 4.1.2).

    A_i = (R_i - mean(R_1..R_G)) / (std(R_1..R_G) + eps)

The group of G samples of one prompt serves as its own baseline, replacing PPO's critic. The
loss is ``common.rl_loss`` with ratio clipping.

std is the unbiased (Bessel-corrected, divide by G - 1) sample standard deviation: that is
what the reference implementations compute (``torch.std`` in TRL's GRPOTrainer and in verl),
so ``eps`` and learning rates carry over from them unchanged. The choice only rescales every
advantage by sqrt((G-1)/G) (0.71 at G = 2, 0.94 at G = 8).

``scale=False`` keeps only the centring, as Dr. GRPO (Liu et al. 2025) recommends: dividing by
the std up-weights prompts whose samples barely differ (too easy or too hard).
"""

from __future__ import annotations

import torch
from torch import Tensor


def advantages(rewards: Tensor, scale: bool = True, eps: float = 1e-4) -> Tensor:
    """rewards (B, G) -> advantages (B, G). Needs G >= 2; a group of equal rewards gets 0."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, G), got shape {tuple(rewards.shape)}")
    g = rewards.shape[1]
    if g < 2:
        raise ValueError(f"GRPO needs at least 2 samples per prompt (group_size), got {g}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (B, G)
    # With equal rewards the float mean can be off by a rounding step, which the division by
    # eps blows up (7 rewards of 12.84 in float32 give +0.019 each): such a group carries no
    # signal, so force its advantages to exactly 0.
    flat = (rewards.amax(dim=1, keepdim=True) == rewards.amin(dim=1, keepdim=True))  # (B, 1)
    centred = torch.where(flat, torch.zeros_like(centred), centred)
    if not scale:
        return centred
    std = rewards.std(dim=1, keepdim=True, correction=1)  # (B, 1)
    return centred / (std + eps)
