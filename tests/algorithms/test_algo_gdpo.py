"""Per-component reward normalization (GDPO-style) against hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms.gdpo import decoupled_rewards

EPS = 1e-4  # grpo.advantages' eps


def test_each_component_standardized_within_its_group_then_weighted():
    chrf = torch.tensor([[0.2, 0.5, 0.8], [0.4, 0.4, 0.4]])   # (B=2, G=3)
    ph = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    out = decoupled_rewards(torch.stack([chrf, ph]), torch.tensor([0.8, 0.2]))
    # group 0: chrf mean 0.5, unbiased std sqrt((0.09 + 0 + 0.09) / 2) = 0.3
    #          ph mean 2/3, centred (1/3, 1/3, -2/3), std sqrt((1/9 + 1/9 + 4/9) / 2) = sqrt(1/3)
    s = math.sqrt(1 / 3)
    row0 = [0.8 * c / (0.3 + EPS) + 0.2 * p / (s + EPS) for c, p in ((-0.3, 1 / 3), (0.0, 1 / 3), (0.3, -2 / 3))]
    # group 1: chrf is flat -> 0 from it; ph centred (-2/3, 1/3, 1/3), same std
    row1 = [0.2 * p / (s + EPS) for p in (-2 / 3, 1 / 3, 1 / 3)]
    torch.testing.assert_close(out, torch.tensor([row0, row1]))


def test_small_spread_component_is_not_drowned():
    # chrF spreads by 0.6, the placeholder score by 0.1 in the opposite order. The plain sum
    # follows chrF; standardized, each moves the reward by its weight and here they cancel.
    chrf = torch.tensor([[0.8, 0.2, 0.5]])
    ph = torch.tensor([[0.9, 1.0, 0.95]])
    plain = 0.5 * chrf + 0.5 * ph
    assert plain[0, 0] - plain[0, 1] == pytest.approx(0.25)
    out = decoupled_rewards(torch.stack([chrf, ph]), torch.tensor([0.5, 0.5]))
    # chrf -> (1, -1, 0) * 0.3 / (0.3 + eps); ph -> (-1, 1, 0) * 0.05 / (0.05 + eps)
    d = 0.5 * (0.3 / (0.3 + EPS) - 0.05 / (0.05 + EPS))
    torch.testing.assert_close(out, torch.tensor([[d, -d, 0.0]]))
    assert abs(d) < 1e-3


def test_one_sample_per_prompt_standardizes_over_the_batch():
    c = torch.tensor([[[1.0], [2.0], [3.0]]])  # (K=1, B=3, G=1)
    out = decoupled_rewards(c, torch.tensor([2.0]))
    torch.testing.assert_close(out, torch.tensor([[-2.0], [0.0], [2.0]]) / (1.0 + EPS))


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="K, B, G"):
        decoupled_rewards(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="K, B, G"):
        decoupled_rewards(torch.ones(2, 3, 4), torch.ones(3))
