"""Per-component reward normalization before the weighted sum (GDPO-style).

GDPO (Group reward-Decoupled normalization Policy Optimization, Liu et al. 2026) normalizes
each reward component within its group before summing, instead of normalizing the sum:

    r_i = sum_k w_k * (c_ki - mean_g(c_k)) / (std_g(c_k) + eps)

With a plain weighted sum, a component of large spread (chrF moves by 0.3 between samples)
drowns one of small spread (a placeholder score that is 1 in nearly every sample): the sum's
ranking within a group is the large component's ranking. Standardized, each component moves the
advantage by about its weight. A group where a component is constant gets 0 from it: it says
nothing about which sample is better.

The standardization is ``grpo.advantages`` (centring, unbiased std, eps 1e-4, flat groups to
exactly 0), so the two cannot drift. Deviation from GDPO: GDPO then normalizes the sum over the
batch; here the sum is the reward handed to the configured estimator (RLOO, GRPO, ...), whose
own baseline and scaling take that role. With one sample per prompt (G = 1) the components are
standardized over the batch instead (the whole batch is one group).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlft.algorithms import grpo


def decoupled_rewards(components: Tensor, weights: Tensor) -> Tensor:
    """components (K, B, G), weights (K,) -> rewards (B, G): the weighted sum of each component
    standardized within its group (over the batch when G = 1)."""
    if components.dim() != 3 or weights.shape != components.shape[:1]:
        raise ValueError(f"components must be (K, B, G) with weights (K,), got {tuple(components.shape)} "
                         f"and {tuple(weights.shape)}")
    k, b, g = components.shape
    groups = components if g > 1 else components.reshape(k, 1, b)                  # (K, B', G')
    standardized = torch.stack([grpo.advantages(c) for c in groups])                # (K, B', G')
    return (weights.view(k, 1, 1) * standardized).sum(0).reshape(b, g)              # (B, G)
