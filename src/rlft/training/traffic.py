"""Step 1 of the RL loop: which B unique prompts to roll out, by traffic weight, with the tail guard.

Target p_i ~ count_i**alpha with a floor (``frequency.alpha``, ``frequency.floor``). Mode 'sample'
draws prompts by p; mode 'loss' draws uniformly and weights the loss by p / uniform. Either way the
expected gradient is that of the traffic-weighted objective, and compute scales with unique prompts.
The tail guard boosts the tail's weight while its validation metric is below its starting value.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rlft.config import FrequencyConfig
from rlft.data.example import Example


class TrafficPrompts:
    def __init__(self, train_set: Sequence[Example], freq: FrequencyConfig, batch_size: int, seed: int) -> None:
        from rlft.data.buckets import TailGuard, assign_buckets
        from rlft.data.sampling import PromptSampler, traffic_weights

        self.mode = freq.mode
        counts = torch.tensor([ex.count for ex in train_set], dtype=torch.float64)
        self.target = traffic_weights(counts, freq.alpha, freq.floor)                       # (U,)
        self.uniform = torch.full_like(self.target, 1.0 / len(self.target))                # (U,)
        self.is_tail = torch.tensor([b == "tail" for b in assign_buckets(counts.tolist(), freq.head_share,
                                                                          freq.torso_share)])  # (U,)
        self.guard = TailGuard(freq.tail_guard, freq.tail_guard_boost)
        by_sample = self.mode == "sample"
        self.sampler = PromptSampler(self.target if by_sample else self.uniform, batch_size, seed=seed,
                                     target=None if by_sample else self.target)

    def sample(self) -> torch.Tensor:
        """B unique prompt indices.  # (B,)"""
        return self.sampler.sample()

    def loss_weights(self, idx: torch.Tensor) -> torch.Tensor:
        """Per-prompt loss weights of the sampled ``idx`` (1 in mode 'sample' without capping).  # (B,)"""
        return self.sampler.loss_weights(idx)

    def guard_tail(self, rare_metric: float | None) -> Any:
        """Feed the guard the validation metric of the rare prompts; reweight the tail when it acts.
        Returns the guard's ``GuardDecision``, or None without a metric."""
        from rlft.data.buckets import apply_tail_boost

        if rare_metric is None:
            return None
        decision = self.guard.update(rare_metric)
        p = apply_tail_boost(self.target, self.is_tail, decision.multiplier)
        if self.mode == "sample":
            self.sampler.set_probs(p)
        else:
            self.sampler.set_probs(self.uniform, target=p)
        return decision

    def stateful(self) -> dict[str, Any]:
        """The parts a checkpoint saves (``state_dict``) and a resume restores."""
        return {"prompt_sampler": self.sampler, "tail_guard": self.guard}
