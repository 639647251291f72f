"""Advantage estimators against hand-computed tensors, and the registry adapters."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rlft.algorithms import ALGORITHMS, grpo, reinforce, rloo, scst


# --- RLOO -------------------------------------------------------------------------------

def test_rloo_hand_example():
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    # Row 0: 1 - (2+6)/2, 2 - (1+6)/2, 6 - (1+2)/2; row 1: 0 - 3/2, 0 - 3/2, 3 - 0.
    expected = torch.tensor([[-3.0, -1.5, 4.5], [-1.5, -1.5, 3.0]])
    torch.testing.assert_close(rloo.advantages(rewards), expected)


def test_rloo_matches_explicit_leave_one_out_loop():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(5, 4, generator=gen, dtype=torch.float64)
    expected = torch.empty_like(rewards)
    for b in range(5):
        for i in range(4):
            others = [rewards[b, j].item() for j in range(4) if j != i]
            expected[b, i] = rewards[b, i] - sum(others) / len(others)
    torch.testing.assert_close(rloo.advantages(rewards), expected)
    # A leave-one-out baseline centres each group exactly.
    torch.testing.assert_close(rloo.advantages(rewards).sum(1), torch.zeros(5, dtype=torch.float64))


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        rloo.advantages(torch.ones(3, 1))


# --- GRPO -------------------------------------------------------------------------------

def test_grpo_hand_example_uses_unbiased_std():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    # Row 0: mean 2, unbiased std sqrt(2/2) = 1.  Row 1: mean 4/3, unbiased std
    # sqrt((16/9 + 16/9 + 64/9) / 2) = 4/sqrt(3)  (the population std would be sqrt(32/9)).
    s3 = math.sqrt(3.0)
    expected = torch.tensor([[-1.0, 0.0, 1.0], [-s3 / 3, -s3 / 3, 2 / s3]], dtype=torch.float64)
    torch.testing.assert_close(grpo.advantages(rewards, eps=0.0), expected)
    # eps sits in the denominator: (R - mean) / (std + eps).
    torch.testing.assert_close(grpo.advantages(rewards[:1], eps=0.5),
                               torch.tensor([[-1 / 1.5, 0.0, 1 / 1.5]], dtype=torch.float64))


def test_grpo_without_scaling_only_centres():
    rewards = torch.tensor([[1.0, 2.0, 6.0]])
    torch.testing.assert_close(grpo.advantages(rewards, scale=False), torch.tensor([[-2.0, -1.0, 3.0]]))


def test_grpo_zero_variance_group_gives_zeros():
    rewards = torch.tensor([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7], [0.0, 1.0, 0.5]])
    adv = grpo.advantages(rewards)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[:2], torch.zeros(2, 3))
    assert adv[2].abs().sum() > 0  # the group with spread still gets a signal
    # Here the float32 mean differs from 12.84 by a rounding step; without care that step
    # divided by eps becomes an advantage of about 0.02.
    assert torch.equal(grpo.advantages(torch.full((1, 7), 12.84)), torch.zeros(1, 7))


def test_grpo_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        grpo.advantages(torch.ones(3, 1))


# --- SCST -------------------------------------------------------------------------------

def test_scst_subtracts_greedy_reward_per_prompt():
    rewards = torch.tensor([[0.5, 1.0], [0.25, 0.0]])
    greedy = torch.tensor([0.75, 0.125])
    expected = torch.tensor([[-0.25, 0.25], [0.125, -0.125]])
    torch.testing.assert_close(scst.advantages(rewards, greedy), expected)


def test_scst_rejects_wrong_greedy_shape():
    with pytest.raises(ValueError, match="greedy_rewards"):
        scst.advantages(torch.ones(2, 3), torch.ones(3))


# --- REINFORCE --------------------------------------------------------------------------

def test_reinforce_baseline_sequence_by_hand():
    m = 0.5
    # Call 1: no baseline yet -> b = 0 (A = R), then b starts at the batch mean 2.
    adv, b = reinforce.advantages(torch.tensor([[1.0, 3.0]]), None, m)
    torch.testing.assert_close(adv, torch.tensor([[1.0, 3.0]]))
    assert b == pytest.approx(2.0)
    # Call 2: A = R - 2, then b = 0.5 * 2 + 0.5 * 5 = 3.5 (updated after A).
    adv, b = reinforce.advantages(torch.tensor([[4.0, 6.0]]), b, m)
    torch.testing.assert_close(adv, torch.tensor([[2.0, 4.0]]))
    assert b == pytest.approx(3.5)
    # Call 3: A = R - 3.5, then b = 0.5 * 3.5 + 0.5 * 0.5 = 2.
    adv, b = reinforce.advantages(torch.tensor([[0.0, 1.0]]), b, m)
    torch.testing.assert_close(adv, torch.tensor([[-3.5, -2.5]]))
    assert b == pytest.approx(2.0)


def test_reinforce_momentum_zero_means_no_baseline():
    rewards = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    adv, b = reinforce.advantages(rewards, 10.0, 0.0)
    torch.testing.assert_close(adv, rewards)
    assert b is None


def test_reinforce_rejects_bad_momentum():
    with pytest.raises(ValueError, match="momentum"):
        reinforce.advantages(torch.ones(1, 2), None, 1.0)


# --- registry ---------------------------------------------------------------------------

def _call(name, rewards, state, greedy=None, momentum=0.5, scale=True):
    return ALGORITHMS[name].advantages(rewards, greedy_rewards=greedy, state=state,
                                       baseline_momentum=momentum, scale_rewards=scale)


def test_registry_names_and_flags():
    assert set(ALGORITHMS) == {"reinforce", "scst", "rloo", "grpo", "ppo"}
    assert {n for n, a in ALGORITHMS.items() if a.clip} == {"grpo", "ppo"}
    assert {n for n, a in ALGORITHMS.items() if a.critic} == {"ppo"}
    assert {n for n, a in ALGORITHMS.items() if a.needs_greedy} == {"scst"}
    assert all(a.name == n for n, a in ALGORITHMS.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        ALGORITHMS["grpo"].clip = False


def test_registry_adapters_dispatch_to_module_functions():
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    torch.testing.assert_close(_call("rloo", rewards, {}), rloo.advantages(rewards))
    torch.testing.assert_close(_call("grpo", rewards, {}), grpo.advantages(rewards))
    torch.testing.assert_close(_call("grpo", rewards, {}, scale=False), grpo.advantages(rewards, scale=False))
    greedy = torch.tensor([2.0, 1.0])
    torch.testing.assert_close(_call("scst", rewards, {}, greedy=greedy), scst.advantages(rewards, greedy))
    with pytest.raises(ValueError, match="greedy_rewards"):
        _call("scst", rewards, {})


def test_registry_reinforce_keeps_baseline_in_state():
    state: dict = {}
    _call("reinforce", torch.tensor([[1.0, 3.0]]), state)
    assert state["baseline"] == pytest.approx(2.0)
    adv = _call("reinforce", torch.tensor([[4.0, 6.0]]), state)
    torch.testing.assert_close(adv, torch.tensor([[2.0, 4.0]]))
    assert state["baseline"] == pytest.approx(3.5)
