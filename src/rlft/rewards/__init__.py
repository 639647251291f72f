"""Rewards (0..1, for training) and metrics (0..100, for evaluation) computed against references.

    reward = build_reward("0.8*chrf + 0.2*length_penalty", cjk="auto")
    result = score(reward, prompts, completions, references, truncated=flags)
    if result.error: skip the step (never train on it)
    result.components: each term's name, weight and values

Importing this package is cheap: sacrebleu, rouge-score and sentence-transformers are
imported on first use.
"""

from rlft.rewards.metrics import METRICS, Metric
from rlft.rewards.registry import REWARDS, Component, Reward, RewardFn, RewardResult, build_reward, score

__all__ = ["METRICS", "REWARDS", "Component", "Metric", "Reward", "RewardFn", "RewardResult", "build_reward", "score"]
