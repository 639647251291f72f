"""REINFORCE with a moving-average baseline (Williams 1992).

    grad J = E[ (R - b) grad log pi(y | x) ]

Any b that does not depend on the sample y keeps the estimate unbiased; a b close to E[R]
lowers its variance. Here b is an exponential moving average of past batch-mean rewards.
"""

from __future__ import annotations

from torch import Tensor


def advantages(rewards: Tensor, baseline: float | None, momentum: float) -> tuple[Tensor, float | None]:
    """A = R - b, then update b.  Returns (advantages (B, G), new baseline).

    rewards:  (B, G) one reward per sample.
    baseline: the running baseline from the previous call; None on the first call.
    momentum: b_new = momentum * b + (1 - momentum) * mean(R), in [0, 1); 0 = no baseline.

    The baseline is updated only AFTER A is computed, so b never contains the rewards it is
    subtracted from, and the estimator stays unbiased. For the same reason the first call uses
    b = 0 (A = R) rather than this batch's mean (which would hold each sample's own reward,
    biasing the gradient by a factor (1 - 1/N)). After the first call b starts at that batch's
    mean, not at (1 - momentum) * mean: an average started from 0 would lag towards 0 for
    ~1 / (1 - momentum) steps, a poor baseline when rewards sit far from 0.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, G), got shape {tuple(rewards.shape)}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"baseline momentum must be in [0, 1), got {momentum}")
    if momentum == 0.0:
        return rewards.clone(), None

    b = 0.0 if baseline is None else float(baseline)
    adv = rewards - b  # (B, G)
    batch_mean = float(rewards.detach().float().mean())
    new_baseline = batch_mean if baseline is None else momentum * b + (1.0 - momentum) * batch_mean
    return adv, new_baseline
