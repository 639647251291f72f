"""Policy-gradient algorithms as small pure tensor functions (imports only torch).

An algorithm is the way it turns rewards into advantages, plus what it needs from the run
(``registry.Algorithm``); the loss (``rl_loss``) is shared. The loop looks algorithms up in
``ALGORITHMS``:

    algo = ALGORITHMS[cfg.algo.name]
    adv = algo.advantages(rewards, greedy_rewards=g, state=state,
                          baseline_momentum=cfg.algo.baseline_momentum,
                          scale_rewards=cfg.algo.scale_rewards)          # (B, G)
    loss, stats = rl_loss(logprobs, old_logprobs, adv.flatten(), mask,
                          clip_eps=cfg.algo.clip_eps if algo.clip else None, ...)

A user adds an algorithm by putting another ``Algorithm`` into the dict.

Importing this package is cheap (config and ``rlft --help`` read the registry); the tensor
functions import torch on first use.
"""

from __future__ import annotations

from typing import Any

from rlft.algorithms.registry import (ALGORITHMS, KL_MODE_ESTIMATORS, Algorithm, KlEstimator, KlMode, LossNorm,
                                      setting_range)

_TENSOR_FUNCTIONS = ("aggregate", "kl_penalty", "kl_reward", "masked_mean", "masked_sum", "rl_loss")
__all__ = ["ALGORITHMS", "Algorithm", "KL_MODE_ESTIMATORS", "KlEstimator", "KlMode", "LossNorm", "setting_range",
           *_TENSOR_FUNCTIONS]


def __getattr__(name: str) -> Any:
    if name in _TENSOR_FUNCTIONS:
        from rlft.algorithms import common

        return getattr(common, name)
    raise AttributeError(f"module 'rlft.algorithms' has no attribute {name!r}")
