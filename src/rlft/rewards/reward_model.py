"""A trained reward model as a reward: the spec term ``rm:PATH`` (``0.5*rm:runs/rm/final + 0.5*rouge_l``).

The model loads once, on the policy's device, and scores the (prompt, completion) pairs in batches
of ``rm.score_batch_size`` exactly as ``rlft rm train`` saw them (``rlft.models.reward_model.encode``).

Its scores have no fixed scale, so by default (``rm.normalize``) they are standardized by the
running mean and standard deviation of every training batch scored so far (Welford's counts,
merged per batch as in Chan et al. 1979): ``(r - mean) / (std + 1e-8)``. Only calls made with
``training=True`` (the RL loop's sampled batch, step 3) update the statistics, first, then
normalize with them; evaluations and SCST's greedy baseline read them unchanged, so an
evaluation's timing never moves the training signal. Before the first training batch (the step-0
evaluation) there are no statistics and scores are raw. The statistics are part of the loop's
checkpoint (``state_dict``) and come back on resume, so a resumed run sees the rewards of an
uninterrupted one. Unlike the metric rewards, the values are not confined to 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

PREFIX = "rm:"


class RunningMoments:
    """Count, mean and sum of squared deviations of every value added, in float64."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Sequence[float]) -> None:
        n = len(values)
        if n == 0:
            return
        mean = math.fsum(values) / n
        m2 = math.fsum((v - mean) ** 2 for v in values)
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total

    @property
    def std(self) -> float:
        """The population standard deviation (0 for fewer than two values)."""
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


class RewardModelReward:
    """The reward ``rm:PATH``: ``fn(prompts, completions, references, *, training=False, **meta)``."""

    def __init__(self, path: str, *, device: Any = "cpu", batch_size: int = 16, max_length: int = 512,
                 normalize: bool = True) -> None:
        from rlft.models.reward_model import load_reward_model

        self.__name__ = f"{PREFIX}{path}"
        self.rm = load_reward_model(path, device=device, field="reward.spec")
        self.rm.model.requires_grad_(False)
        self.batch_size, self.max_length, self.normalize = batch_size, max_length, normalize
        self.moments = RunningMoments()

    def __call__(self, prompts: list[str], completions: list[str], references: Any, *,
                 training: bool = False, **meta: Any) -> list[float]:
        from rlft.models.reward_model import score_texts

        raw = score_texts(self.rm, list(prompts), list(completions), batch_size=self.batch_size,
                          max_length=self.max_length).double().tolist()
        if not self.normalize:
            return raw
        if training:
            self.moments.update(raw)
        if self.moments.count < 2:
            return raw
        mean, std = self.moments.mean, self.moments.std
        return [(r - mean) / (std + 1e-8) for r in raw]

    def state_dict(self) -> dict[str, Any]:
        return {"moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments.load_state_dict(state["moments"])


def reward_model_term(name: str, options: dict[str, Any]) -> RewardModelReward:
    """The reward of the spec term ``rm:PATH``; ``options`` may hold ``device``, ``rm_batch_size``,
    ``rm_max_length`` and ``rm_normalize``."""
    return RewardModelReward(name[len(PREFIX):], device=options.get("device", "cpu"),
                             batch_size=options.get("rm_batch_size", 16),
                             max_length=options.get("rm_max_length", 512),
                             normalize=options.get("rm_normalize", True))
