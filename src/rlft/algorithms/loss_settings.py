"""The loss settings of ``rlft.algorithms.common``, declared once: config types its fields with
them, ``common`` and ``ppo`` check against them. A leaf module (no torch, nothing from rlft), so
that the loss code and the registry, which loads an algorithm's code on its first call, both
import it without importing each other."""

from __future__ import annotations

from typing import Literal

KlEstimator = Literal["k1", "k2", "k3"]   # per-token KL estimate, see common.kl_penalty
KlMode = Literal["reward", "loss"]        # the KL penalty in the reward (kl_reward) or in the loss (rl_loss)
LossNorm = Literal["token", "sequence"]   # see common.aggregate
# The estimators each kl_mode takes: the reward penalty sums k1; as a loss term k1 has zero expected
# gradient (common.kl_penalty), so the loss takes k2 (KL(pi || pi_ref)) or k3 (GRPO's, the reverse KL).
KL_MODE_ESTIMATORS: dict[str, tuple[str, ...]] = {"reward": ("k1",), "loss": ("k2", "k3")}
