"""Traffic-weighted sampling: counts -> probabilities p -> B prompt indices per step, plus loss weights.

Every cost scales with the U unique prompts (``rlft.data.counting``), never with the log: the
sampler draws B of the U prompts per step, so a repeated prompt costs one group of G rollouts
per draw, not one per occurrence.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rlft.errors import RlftError


def traffic_weights(counts: torch.Tensor, alpha: float, floor: float) -> torch.Tensor:
    """Sampling probabilities over the U unique prompts, float64 (U,).

    q_i = count_i**alpha / sum_j count_j**alpha        (alpha=0: uniform, alpha=1: traffic)
    p_i = floor / U + (1 - floor) * q_i                (closed-form floor)
    The mix sums to 1 and gives every prompt at least floor/U, a ``floor`` fraction of the
    uniform share, so the tail keeps being trained however skewed the counts are.
    """
    if not math.isfinite(alpha) or alpha < 0:
        raise RlftError(f"frequency.alpha: must be >= 0, got {alpha}")
    if not 0.0 <= floor <= 1.0:
        raise RlftError(f"frequency.floor: must be in [0, 1], got {floor}")
    counts = torch.as_tensor(counts, dtype=torch.float64)  # (U,)
    if counts.ndim != 1 or counts.numel() == 0:
        raise RlftError(f"traffic_weights: expected a non-empty 1-D tensor of counts, got shape {tuple(counts.shape)}")
    if not bool(torch.isfinite(counts).all() & (counts > 0).all()):
        raise RlftError("traffic_weights: counts must be finite and positive")
    # In log space: count**alpha overflows float64 for large counts and alpha (1e9**40), the
    # softmax of alpha * log(count) cannot.
    q = torch.softmax(alpha * counts.log(), dim=0)  # (U,)
    return floor / counts.numel() + (1.0 - floor) * q


def inclusion_probs(p: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Expected number of draws per step of each prompt, pi (U,), summing to B.

    pi = B * p, except that when B <= #{p > 0} no prompt may be drawn twice in a step, so
    pi is capped at 1 and the excess spread proportionally over the uncapped prompts
    (the usual capping for probability-proportional-to-size sampling without replacement).
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    pi = batch_size * p  # (U,)
    if batch_size > int((p > 0).sum()):
        return pi  # more slots than prompts: repeats are unavoidable, expected counts stay B * p
    capped = torch.zeros_like(p, dtype=torch.bool)
    while bool((pi > 1.0 + 1e-12).any()):  # at most B rounds: each caps at least one prompt
        capped |= pi > 1.0
        free = p.masked_fill(capped, 0.0)
        pi = torch.where(capped, torch.ones_like(p), free * (batch_size - int(capped.sum())) / free.sum())
    return pi


def systematic_sample(pi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw round(sum pi) indices so that prompt i is drawn pi_i times in expectation, long (B,).

    Systematic sampling (Madow, 1949) over a fresh random order of the prompts: one uniform u,
    points u, u+1, ..., u+B-1 on the cumulative sum of pi. A prompt with pi_i <= 1 is drawn at
    most once, with probability exactly pi_i. We use it instead of torch.multinomial without
    replacement, whose inclusion probabilities are flatter than B * p and have no closed form,
    so its head bias could not be corrected by loss weights.
    """
    support = torch.nonzero(pi > 0).squeeze(1)
    order = support[torch.randperm(support.numel(), generator=generator)]  # (S,)
    edges = torch.cumsum(pi[order], dim=0)  # (S,)
    n = int(round(float(edges[-1])))
    u = torch.rand((), generator=generator, dtype=torch.float64)
    points = u + torch.arange(n, dtype=torch.float64)  # (B,)
    slot = torch.searchsorted(edges, points, right=True).clamp_(max=order.numel() - 1)  # rounding at the end
    return order[slot]


def loss_weights(p: torch.Tensor, indices: torch.Tensor, inclusion: torch.Tensor | None = None) -> torch.Tensor:
    """Per-draw loss weights w (B,) that make the batch-mean loss unbiased for sum_i p_i L_i.

    E[(1/B) sum_b w_b L_{i_b}] = (1/B) sum_i pi_i w_i L_i = sum_i p_i L_i  with  w_i = B p_i / pi_i.
    ``inclusion`` is the sampler's pi; None means uniform sampling (pi_i = B/U), giving
    w_i = U p_i: the traffic weighting of mode 'loss'. The weights are deliberately not
    renormalized per batch: that would be a ratio estimator, biased towards the batch at hand;
    their population mean is already 1 (sum_i (pi_i/B) w_i = 1).
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    batch_size = indices.numel()
    if inclusion is None:
        return p[indices] * p.numel()  # (B,)
    return batch_size * p[indices] / inclusion[indices]  # (B,)


class PromptSampler:
    """Draws B unique-prompt indices per step with expected counts B * probs (capped at 1 each).

    Compute scales with the U unique prompts: a prompt seen a million times in traffic is one
    index with a large probability, so one step never rolls it out more than once when B <= U.
    ``target`` (default ``probs``) is the distribution the loss should follow; ``loss_weights``
    corrects for the capping and for ``probs != target`` (mode 'loss': uniform probs, traffic
    target). Reproducible from ``seed``; ``state_dict`` saves the generator for resume.
    """

    def __init__(self, probs: torch.Tensor, batch_size: int, *, seed: int = 0, target: torch.Tensor | None = None):
        if batch_size < 1:
            raise RlftError(f"rollout.prompts_per_step: must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.set_probs(probs, target)

    def set_probs(self, probs: torch.Tensor, target: torch.Tensor | None = None) -> None:
        """Swap the distribution (e.g. after a tail boost) without touching the random stream."""
        probs = torch.as_tensor(probs, dtype=torch.float64)
        target = probs if target is None else torch.as_tensor(target, dtype=torch.float64)
        if probs.ndim != 1 or probs.numel() == 0 or target.shape != probs.shape:
            raise RlftError(f"PromptSampler: probs and target must be 1-D of one length, got "
                            f"{tuple(probs.shape)} and {tuple(target.shape)}")
        if bool((probs < 0).any()) or float(probs.sum()) <= 0:
            raise RlftError("PromptSampler: probabilities must be non-negative with a positive sum")
        if bool(((target > 0) & (probs == 0)).any()):
            raise RlftError("PromptSampler: target puts weight on prompts that are never sampled")
        self.probs, self.target = probs / probs.sum(), target / target.sum()
        self.inclusion = inclusion_probs(self.probs, self.batch_size)  # (U,)

    @property
    def num_prompts(self) -> int:
        return self.probs.numel()

    def sample(self) -> torch.Tensor:
        return systematic_sample(self.inclusion, self.generator)  # (B,) long, in random order

    def loss_weights(self, indices: torch.Tensor) -> torch.Tensor:
        return loss_weights(self.target, indices, self.inclusion)  # (B,)

    def state_dict(self) -> dict[str, Any]:
        # probs and target too: a tail-guard boost set them, and a resume must sample as the run did.
        return {"generator": self.generator.get_state(), "num_prompts": self.num_prompts,
                "probs": self.probs.clone(), "target": self.target.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_prompts"] != self.num_prompts:
            raise RlftError(f"resume: the prompt sampler was saved with {state['num_prompts']} unique prompts, "
                            f"the data now has {self.num_prompts}")
        self.generator.set_state(state["generator"])
        if "probs" in state:  # as saved, bit for bit (set_probs would renormalize); older checkpoints lack it
            self.probs, self.target = state["probs"].to(torch.float64), state["target"].to(torch.float64)
            self.inclusion = inclusion_probs(self.probs, self.batch_size)
