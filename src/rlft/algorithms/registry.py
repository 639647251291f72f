"""The algorithms and the loss settings as data: the single source that config, its checks,
``rlft --help``, the docs and the training loop read.

Each algorithm declares what it needs from the run (ratio clipping, a greedy decode, a minimum
group size, a value head) and the ranges of its own ``algo.*`` settings; config checks a run against these
declarations instead of naming algorithms. Nothing here imports torch, so that config and
``rlft --help`` can read it cheaply: an algorithm's tensor code loads on its first call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

# The loss settings of rlft.algorithms.common (config types its fields with them), declared in a leaf
# module that the loss code imports too; re-exported here.
from rlft.algorithms.loss_settings import KL_MODE_ESTIMATORS, KlEstimator, KlMode, LossNorm  # noqa: F401

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Algorithm:
    """A registered policy-gradient estimator and what it needs from the run.

    ``advantages(rewards (B, G), *, greedy_rewards (B,) | None, state, baseline_momentum,
    scale_rewards) -> (B, G)``. ``state`` is a dict the training loop keeps across steps and
    saves in checkpoints (REINFORCE keeps its running baseline under 'baseline'); the function
    may update it, so call it exactly once per batch of rollouts.

    ``critic``: an algorithm with a learned value (PPO). Its ``advantages`` gives the sequence
    rewards the critic sees (PPO: R itself, its baseline is the value); ``critic(rewards (N,), *,
    mask, kl (N, T) | None, kl_coef, values (N, T), gamma, lam) -> (advantages (N, T), returns
    (N, T))`` turns them into per-token advantages and the value head's targets, and the loop
    then trains a value head on the policy's trunk.
    """

    name: str
    advantages: Callable[..., Tensor]
    clip: bool = False            # use ratio clipping (algo.clip_eps) in rl_loss
    needs_greedy: bool = False    # the loop must decode greedily and pass greedy_rewards
    min_group_size: int = 1       # its baseline compares the samples of one prompt: rollout.group_size >= this
    bounds: dict[str, str] = field(default_factory=dict)  # its own algo.* settings -> allowed interval
    critic: Optional[Callable[..., tuple[Tensor, Tensor]]] = None  # per-token advantages from a value head


def _reinforce(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
               baseline_momentum: float, scale_rewards: bool) -> Tensor:
    from rlft.algorithms import reinforce  # torch loads here, not when config reads the registry

    adv, state["baseline"] = reinforce.advantages(rewards, state.get("baseline"), baseline_momentum)
    return adv


def _scst(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
          baseline_momentum: float, scale_rewards: bool) -> Tensor:
    from rlft.algorithms import scst

    if greedy_rewards is None:
        raise ValueError("SCST needs greedy_rewards: the rewards of the greedy decodes of the B prompts")
    return scst.advantages(rewards, greedy_rewards)


def _rloo(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
          baseline_momentum: float, scale_rewards: bool) -> Tensor:
    from rlft.algorithms import rloo

    return rloo.advantages(rewards)


def _grpo(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
          baseline_momentum: float, scale_rewards: bool) -> Tensor:
    from rlft.algorithms import grpo

    return grpo.advantages(rewards, scale=scale_rewards)


def _ppo(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
         baseline_momentum: float, scale_rewards: bool) -> Tensor:
    # PPO's baseline is its learned value, per token (_gae): the sequence rewards pass through.
    return rewards


def _gae(rewards: Tensor, *, mask: Tensor, kl: Optional[Tensor], kl_coef: float, values: Tensor,
         gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    from rlft.algorithms import ppo

    token_rewards = ppo.token_rewards(rewards, mask, kl, kl_coef)                      # (N, T)
    advantages, returns = ppo.gae(token_rewards, values, mask, gamma, lam)             # (N, T) each
    return ppo.whiten(advantages, mask), returns


# The keys are the choices of algo.name. The bounds are the algorithms' own preconditions
# (reinforce.advantages refuses a momentum of 1; the clipped ratio needs 0 < eps <= 1).
ALGORITHMS: dict[str, Algorithm] = {
    "reinforce": Algorithm("reinforce", _reinforce, bounds={"baseline_momentum": "[0, 1)"}),
    "scst": Algorithm("scst", _scst, needs_greedy=True),
    "rloo": Algorithm("rloo", _rloo, min_group_size=2),
    "grpo": Algorithm("grpo", _grpo, clip=True, min_group_size=2, bounds={"clip_eps": "(0, 1]"}),
    "ppo": Algorithm("ppo", _ppo, clip=True, critic=_gae,
                     bounds={"clip_eps": "(0, 1]", "gamma": "[0, 1]", "lam": "[0, 1]", "vf_coef": "[0, inf)",
                             "cliprange_value": "(0, inf)"}),
}


def setting_range(name: str) -> str:
    """The interval of the ``algo.<name>`` setting, as declared by the one algorithm it belongs to."""
    declared = {a.bounds[name] for a in ALGORITHMS.values() if name in a.bounds}
    if len(declared) != 1:
        raise ValueError(f"algo.{name}: {len(declared)} ranges declared in ALGORITHMS, expected one")
    return declared.pop()
