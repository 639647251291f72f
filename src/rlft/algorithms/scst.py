"""Self-critical sequence training (Rennie et al. 2017).

    A_i = R(y_i) - R(y_greedy)

The baseline is the reward of the model's own greedy decode of the same prompt: it tracks how
hard each prompt is, needs no learned critic, and does not depend on the samples y_i, so the
gradient stays unbiased. Samples that beat the greedy output are pushed up, the rest down.
"""

from __future__ import annotations

from torch import Tensor


def advantages(rewards: Tensor, greedy_rewards: Tensor) -> Tensor:
    """rewards (B, G), greedy_rewards (B,) -> advantages (B, G)."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, G), got shape {tuple(rewards.shape)}")
    if greedy_rewards.shape != rewards.shape[:1]:
        raise ValueError(f"greedy_rewards must be (B,) = ({rewards.shape[0]},), got shape {tuple(greedy_rewards.shape)}")
    return rewards - greedy_rewards.to(rewards.dtype).unsqueeze(1)  # (B, G)
