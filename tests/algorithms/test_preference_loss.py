"""The preference losses against hand-computed values (rlft.algorithms.preference)."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.preference import (TIE_MODELS, bradley_terry_nll, davidson_nll, pair_accuracy, preference_loss,
                                        rao_kupper_nll)
from rlft.config import choices

LN2 = math.log(2.0)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_bradley_terry_with_and_without_margin():
    # -log sigmoid(2) = log(1 + e^-2); with d = 1 and margin 1, -log sigmoid(0) = log 2
    assert bradley_terry_nll(t(2.0), t(0.0)).item() == pytest.approx(math.log1p(math.exp(-2)))
    assert bradley_terry_nll(t(1.0), t(0.0), t(1.0)).item() == pytest.approx(LN2)
    # the rejected winning costs more than the chosen winning
    assert bradley_terry_nll(t(0.0), t(2.0)).item() == pytest.approx(math.log1p(math.exp(2)))


def test_davidson_hand_values():
    # nu = 1, d = 0: Z = 1 + 1 + 1, so P(win) = P(tie) = 1/3
    nll = davidson_nll(t(0.0, 0.0), t(0.0, 0.0), torch.tensor([False, True]), t(0.0))
    assert nll.tolist() == pytest.approx([math.log(3), math.log(3)])
    # nu = 1, d = 2 ln 2: e^(d/2) = 2, e^(-d/2) = 1/2, Z = 3.5; P(win) = 4/7, P(tie) = 2/7
    nll = davidson_nll(t(2 * LN2, 2 * LN2), t(0.0, 0.0), torch.tensor([False, True]), t(0.0))
    assert nll.tolist() == pytest.approx([-math.log(4 / 7), -math.log(2 / 7)])
    # nu = 0 is Bradley-Terry for a won pair, margin included
    no_ties = davidson_nll(t(1.5), t(0.2), torch.tensor([False]), t(-math.inf), t(0.3))
    assert no_ties.item() == pytest.approx(bradley_terry_nll(t(1.5), t(0.2), t(0.3)).item())


def test_davidson_margin_shifts_won_pairs_only():
    tie = torch.tensor([False, True])
    with_margin = davidson_nll(t(1.0, 1.0), t(0.0, 0.0), tie, t(0.0), t(0.5, 0.5))
    shifted = davidson_nll(t(0.5, 1.0), t(0.0, 0.0), tie, t(0.0))
    assert with_margin.tolist() == pytest.approx(shifted.tolist())


def test_rao_kupper_hand_values():
    # theta = 2, d = 0: P(win) = 1/3, P(tie) = 3 / (3 * 3) = 1/3
    a = t(LN2)
    nll = rao_kupper_nll(t(0.0, 0.0), t(0.0, 0.0), torch.tensor([False, True]), a)
    assert nll.tolist() == pytest.approx([math.log(3), math.log(3)])
    # theta = 2, pi_c = 2, pi_j = 1: P(win) = 2/4, P(loss) = 1/5, P(tie) = 3 * 2 / (4 * 5) = 3/10
    nll = rao_kupper_nll(t(LN2, LN2), t(0.0, 0.0), torch.tensor([False, True]), a)
    assert nll.tolist() == pytest.approx([math.log(2), -math.log(0.3)])
    # the three outcomes sum to one
    loss = rao_kupper_nll(t(0.0), t(LN2), torch.tensor([False]), a)  # the other one wins
    assert math.exp(-loss.item()) == pytest.approx(0.2)


def test_preference_loss_means_and_maps_the_free_parameter():
    c, r = t(0.0, 2 * LN2), t(0.0, 0.0)
    tie = torch.tensor([True, True])
    # Davidson's free number is log nu: 0 -> nu = 1
    assert preference_loss(c, r, tie=tie, ties="davidson", tie_free=t(0.0)).item() == \
        pytest.approx((math.log(3) - math.log(2 / 7)) / 2)
    # Rao-Kupper's is log(theta - 1): 0 -> theta = 2
    assert preference_loss(t(0.0), t(0.0), tie=torch.tensor([True]), ties="rao_kupper",
                           tie_free=t(0.0)).item() == pytest.approx(math.log(3))
    # no tie column at all: Bradley-Terry
    assert preference_loss(t(1.0), t(0.0), margin=t(1.0)).item() == pytest.approx(LN2)


def test_the_tie_parameter_gets_its_maximum_likelihood_gradient():
    # Davidson, a tie at d = 0: nll = log(2 + nu) - log nu; d/d(log nu) at nu = 1 is 1/3 - 1
    free = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    preference_loss(t(0.0), t(0.0), tie=torch.tensor([True]), ties="davidson", tie_free=free).backward()
    assert free.grad.item() == pytest.approx(-2 / 3)


def test_every_tie_choice_has_a_model_and_accuracy_counts_score_ties_half():
    assert set(choices("rm.ties")) == set(TIE_MODELS)
    assert pair_accuracy(t(1.0, 0.0, 0.5), t(0.0, 1.0, 0.5)).tolist() == [1.0, 0.0, 0.5]
