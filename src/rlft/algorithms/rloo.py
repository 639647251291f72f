"""REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics").

    A_i = R_i - 1/(G-1) sum_{j != i} R_j

Each sample's baseline is the mean reward of the other G-1 samples of the same prompt: it
depends on the prompt but not on sample i, so the estimate is unbiased with no critic.
Closed form used below: A_i = (G R_i - sum_j R_j) / (G - 1) = G/(G-1) (R_i - mean R).
"""

from __future__ import annotations

from torch import Tensor


def advantages(rewards: Tensor) -> Tensor:
    """rewards (B, G) -> leave-one-out advantages (B, G). Needs G >= 2."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, G), got shape {tuple(rewards.shape)}")
    g = rewards.shape[1]
    if g < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt (group_size), got {g}")
    total = rewards.sum(dim=1, keepdim=True)  # (B, 1)
    return (g * rewards - total) / (g - 1)  # (B, G)
