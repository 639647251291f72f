"""Policy-gradient algorithms as small pure tensor functions (imports only torch).

An algorithm is the way it turns rewards into advantages, plus two flags for the training
loop; the loss (``rl_loss``) is shared. The loop looks algorithms up in ``ALGORITHMS``:

    algo = ALGORITHMS[cfg.algo.name]
    adv = algo.advantages(rewards, greedy_rewards=g, state=state,
                          baseline_momentum=cfg.algo.baseline_momentum,
                          scale_rewards=cfg.algo.scale_rewards)          # (B, G)
    loss, stats = rl_loss(logprobs, old_logprobs, adv.flatten(), mask,
                          clip_eps=cfg.algo.clip_eps if algo.clip else None, ...)

A user adds an algorithm by putting another ``Algorithm`` into the dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor

from rlft.algorithms import grpo, reinforce, rloo, scst
from rlft.algorithms.common import aggregate, kl_penalty, kl_reward, masked_mean, masked_sum, rl_loss

__all__ = ["Algorithm", "ALGORITHMS", "aggregate", "kl_penalty", "kl_reward", "masked_mean", "masked_sum", "rl_loss"]


@dataclass(frozen=True)
class Algorithm:
    """A registered policy-gradient estimator.

    ``advantages(rewards (B, G), *, greedy_rewards (B,) | None, state, baseline_momentum,
    scale_rewards) -> (B, G)``. ``state`` is a dict the training loop keeps across steps and
    saves in checkpoints (REINFORCE keeps its running baseline under 'baseline'); the function
    may update it, so call it exactly once per batch of rollouts.
    """

    name: str
    clip: bool           # use ratio clipping (clip_eps) in rl_loss
    needs_greedy: bool   # the loop must decode greedily and pass greedy_rewards
    advantages: Callable[..., Tensor]


def _reinforce(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
               baseline_momentum: float, scale_rewards: bool) -> Tensor:
    adv, state["baseline"] = reinforce.advantages(rewards, state.get("baseline"), baseline_momentum)
    return adv


def _scst(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
          baseline_momentum: float, scale_rewards: bool) -> Tensor:
    if greedy_rewards is None:
        raise ValueError("SCST needs greedy_rewards: the rewards of the greedy decodes of the B prompts")
    return scst.advantages(rewards, greedy_rewards)


def _rloo(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
          baseline_momentum: float, scale_rewards: bool) -> Tensor:
    return rloo.advantages(rewards)


def _grpo(rewards: Tensor, *, greedy_rewards: Optional[Tensor], state: dict[str, Any],
          baseline_momentum: float, scale_rewards: bool) -> Tensor:
    return grpo.advantages(rewards, scale=scale_rewards)


ALGORITHMS: dict[str, Algorithm] = {
    "reinforce": Algorithm("reinforce", clip=False, needs_greedy=False, advantages=_reinforce),
    "scst": Algorithm("scst", clip=False, needs_greedy=True, advantages=_scst),
    "rloo": Algorithm("rloo", clip=False, needs_greedy=False, advantages=_rloo),
    "grpo": Algorithm("grpo", clip=True, needs_greedy=False, advantages=_grpo),
}
