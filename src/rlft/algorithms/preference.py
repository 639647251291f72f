"""Preference losses for reward models: Bradley-Terry, and ties as Davidson or Rao-Kupper.

A reward model gives each completion a scalar ``r``; read as a log-strength, ``pi = exp(r)``, a
labelled pair compares the chosen ``c`` with the rejected ``j`` through ``d = r_c - r_j`` (B,).

Bradley-Terry (1952), with the Llama 2 margin ``m`` (Touvron et al. 2023, eq. 2):

    P(c > j) = sigmoid(d - m)                       nll = -log sigmoid(d - m)

Davidson (1970) adds ties with a propensity ``nu >= 0`` (``nu = 0`` is Bradley-Terry). Dividing
``pi_c + pi_j + nu sqrt(pi_c pi_j)`` by ``sqrt(pi_c pi_j)``:

    Z = e^(d/2) + e^(-d/2) + nu       P(c > j) = e^(d/2) / Z        P(tie) = nu / Z

Rao and Kupper (1967) make a win need a lead: ``theta >= 1`` (``theta = 1`` is Bradley-Terry):

    P(c > j) = pi_c / (pi_c + theta pi_j) = sigmoid(d - log theta)
    P(tie)   = (theta^2 - 1) pi_c pi_j / ((pi_c + theta pi_j) (theta pi_c + pi_j))

The margin of a won pair shifts ``d`` to ``d - m`` in every model; a tie has no margin (the data
loader refuses one). Each function returns the per-pair negative log-likelihood (B,); the tie
parameter comes in as a log (``log nu``, ``log theta``) so a learned one is a free real number.
Imports only torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry_nll(chosen: Tensor, rejected: Tensor, margin: Optional[Tensor] = None) -> Tensor:
    """-log sigmoid(r_c - r_j - m) per pair (B,)."""
    d = chosen - rejected                                                   # (B,)
    if margin is not None:
        d = d - margin
    return -F.logsigmoid(d)


def davidson_nll(chosen: Tensor, rejected: Tensor, tie: Tensor, log_nu: Tensor,
                 margin: Optional[Tensor] = None) -> Tensor:
    """Davidson's -log P(c > j) for won pairs and -log P(tie) for ties (B,); ``tie`` (B,) bool."""
    d = chosen - rejected                                                   # (B,)
    if margin is not None:
        d = d - torch.where(tie, torch.zeros_like(margin), margin)
    log_nu = log_nu.to(d.dtype).expand_as(d)                                # (B,)
    log_z = torch.logsumexp(torch.stack([d / 2, -d / 2, log_nu]), dim=0)    # (B,)
    return log_z - torch.where(tie, log_nu, d / 2)


def rao_kupper_nll(chosen: Tensor, rejected: Tensor, tie: Tensor, log_theta: Tensor,
                   margin: Optional[Tensor] = None) -> Tensor:
    """Rao-Kupper's -log P(c > j) for won pairs and -log P(tie) for ties (B,); ``log_theta > 0``."""
    d = chosen - rejected                                                   # (B,)
    a = log_theta.to(d.dtype).expand_as(d)                                  # (B,) log theta
    won = F.softplus(a - (d if margin is None else d - margin))             # -log sigmoid(d - m - a)
    # log P(tie) = log(theta^2 - 1) + d - log(e^d + theta) - log(theta e^d + 1)
    log_tie = torch.log(torch.expm1(2 * a)) + d - torch.logaddexp(d, a) - F.softplus(d + a)
    return torch.where(tie, -log_tie, won)


@dataclass(frozen=True)
class TieModel:
    """A way to model ties: its per-pair NLL, its parameter's default, and the map between the
    parameter (``nu``, ``theta``) and the free real number a learned one is stored as."""

    nll: Callable[..., Tensor]
    default: float
    low: float                                     # the parameter must exceed this
    to_log: Callable[[Tensor], Tensor]             # free number -> log nu / log theta
    from_param: Callable[[float], float]           # nu / theta -> the free number


# rm.ties -> its model (the choices are declared in config.schema.TieModelName).
TIE_MODELS: dict[str, TieModel] = {
    # nu = exp(u): the free number u is log nu.
    "davidson": TieModel(davidson_nll, 1.0, 0.0, lambda u: u, math.log),
    # theta = 1 + exp(u) keeps theta > 1, so log theta = log1p(exp(u)) = softplus(u) > 0.
    "rao_kupper": TieModel(rao_kupper_nll, 2.0, 1.0, F.softplus, lambda theta: math.log(theta - 1.0)),
}


def preference_loss(chosen: Tensor, rejected: Tensor, *, tie: Optional[Tensor] = None,
                    margin: Optional[Tensor] = None, ties: str = "davidson",
                    tie_free: Optional[Tensor] = None) -> Tensor:
    """The mean NLL of a batch of pairs (scalar). Without ties in the batch's data (``tie`` None)
    it is Bradley-Terry; with them, ``TIE_MODELS[ties]`` with its parameter's free number ``tie_free``."""
    if tie is None:
        return bradley_terry_nll(chosen, rejected, margin).mean()
    model = TIE_MODELS[ties]
    return model.nll(chosen, rejected, tie, model.to_log(tie_free), margin).mean()


def pair_accuracy(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Per pair (B,): 1 when the chosen scores higher, 1/2 for equal scores, 0 otherwise."""
    return (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
