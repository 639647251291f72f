"""Traffic-weighted sampling: weights by hand, the floor, reproducibility, capping and loss weights."""

from collections import Counter

import pytest
import torch

from rlft.config import DataConfig
from rlft.data.loading import rows_to_examples
from rlft.data.sampling import PromptSampler, inclusion_probs, loss_weights, traffic_weights
from rlft.errors import RlftError
from tests.data.traffic_fixtures import assert_close, r, rows


def test_traffic_weights_by_hand():
    counts = torch.tensor([1.0, 4.0, 16.0])
    assert_close(traffic_weights(counts, 0.0, 0.0), torch.full((3,), 1 / 3, dtype=torch.float64))
    assert_close(traffic_weights(counts, 1.0, 0.0), torch.tensor([1, 4, 16], dtype=torch.float64) / 21)
    assert_close(traffic_weights(counts, 0.5, 0.0), torch.tensor([1, 2, 4], dtype=torch.float64) / 7)
    # floor 0.3: p = 0.3/3 + 0.7 * q
    assert_close(traffic_weights(counts, 1.0, 0.3),
                               0.1 + 0.7 * torch.tensor([1, 4, 16], dtype=torch.float64) / 21)
    assert_close(traffic_weights(counts, 1.0, 1.0), torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("floor", [0.0, 0.05, 0.5, 1.0])
def test_floor_guarantees_a_minimum_share(floor):
    counts = torch.tensor([1e9, 1e6, 30.0, 1.0, 1.0, 2.0, 1.0])
    p = traffic_weights(counts, 1.0, floor)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(p.min()) >= floor / 7 - 1e-15
    assert bool((p[:-1] >= p[-1]).all())  # the order of the counts survives the floor
    assert torch.isfinite(traffic_weights(counts, 40.0, floor)).all()  # 1e9**40 overflows float64


@pytest.mark.parametrize("alpha, floor", [(-0.5, 0.0), (1.0, -0.1), (1.0, 1.5)])
def test_traffic_weights_reject_bad_settings(alpha, floor):
    with pytest.raises(RlftError, match="frequency.(alpha|floor)"):
        traffic_weights(torch.tensor([1.0, 2.0]), alpha, floor)


def test_sampler_is_reproducible_and_resumes():
    p = traffic_weights(torch.tensor([100.0, 50, 20, 10, 5, 1, 1, 1]), 1.0, 0.1)
    a, b, c = PromptSampler(p, 3, seed=7), PromptSampler(p, 3, seed=7), PromptSampler(p, 3, seed=8)
    draws_a = [a.sample() for _ in range(20)]
    assert all(torch.equal(x, b.sample()) for x in draws_a)
    assert not all(torch.equal(x, c.sample()) for x in draws_a)
    state = a.state_dict()
    expected = [a.sample() for _ in range(5)]
    resumed = PromptSampler(p, 3, seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(x, resumed.sample()) for x in expected)
    with pytest.raises(RlftError, match="saved with 8 unique prompts"):
        PromptSampler(p[:4], 3).load_state_dict(state)


def test_no_duplicates_within_a_step_even_with_a_dominant_head():
    p = traffic_weights(torch.tensor([1e6, 10, 5, 3, 1, 1]), 1.0, 0.0)  # the head has p ~ 1
    sampler = PromptSampler(p, 5, seed=0)
    for _ in range(300):
        idx = sampler.sample()
        assert idx.shape == (5,) and len(set(idx.tolist())) == 5


def test_more_slots_than_prompts_repeat_in_proportion():
    sampler = PromptSampler(torch.tensor([0.5, 0.25, 0.25]), 8, seed=0)
    idx = sampler.sample()
    assert idx.shape == (8,) and sorted(Counter(idx.tolist()).values()) == [2, 2, 4]


def test_sampling_frequency_matches_p():
    p = torch.tensor([0.3, 0.2, 0.15, 0.15, 0.1, 0.05, 0.05], dtype=torch.float64)  # B * p <= 1 for B = 3
    sampler = PromptSampler(p, 3, seed=1)
    steps = 2500
    hits = torch.zeros(7, dtype=torch.float64)
    for _ in range(steps):
        hits += torch.bincount(sampler.sample(), minlength=7)
    assert_close(hits / (3 * steps), p, atol=0.01, rtol=0)
    assert bool((sampler.loss_weights(sampler.sample()) == 1).all())  # nothing capped: plain batch mean


def test_capped_head_is_corrected_by_loss_weights():
    """With B * p_i > 1 the head can be drawn once per step; the weights restore sum_i p_i L_i."""
    p = torch.tensor([0.6, 0.2, 0.1, 0.05, 0.05], dtype=torch.float64)
    sampler = PromptSampler(p, 3, seed=2)
    pi = sampler.inclusion
    assert float(pi[0]) == 1.0 and float(pi.sum()) == pytest.approx(3.0)
    assert_close(pi[1:], 2 * p[1:] / p[1:].sum())  # the excess spread proportionally
    steps = 2500
    weighted = torch.zeros(5, dtype=torch.float64)
    for _ in range(steps):
        idx = sampler.sample()
        weighted.index_add_(0, idx, sampler.loss_weights(idx) / 3)
    assert_close(weighted / steps, p, atol=0.01, rtol=0)


def test_inclusion_probs_sum_to_batch_and_stay_in_unit_interval():
    p = traffic_weights(torch.tensor([1e5, 1e4, 1e3, 100, 10, 1, 1, 1, 1, 1]), 1.0, 0.0)
    pi = inclusion_probs(p, 4)
    assert float(pi.sum()) == pytest.approx(4.0) and float(pi.max()) <= 1.0
    assert bool((pi[:-1] >= pi[1:] - 1e-12).all())


def test_loss_mode_weights_uniform_draws_by_traffic():
    p = traffic_weights(torch.tensor([6.0, 3.0, 1.0]), 1.0, 0.0)
    idx = torch.tensor([2, 0])
    assert_close(loss_weights(p, idx), torch.tensor([0.3, 1.8], dtype=torch.float64))
    sampler = PromptSampler(torch.full((3,), 1 / 3), 2, seed=0, target=p)
    assert_close(sampler.loss_weights(idx), 3 * p[idx])
    assert float((loss_weights(p, torch.arange(3))).mean()) == pytest.approx(1.0)  # mean 1 over prompts
    with pytest.raises(RlftError, match="never sampled"):
        PromptSampler(torch.tensor([1.0, 0.0, 1.0]), 2, target=p)


def test_a_repeated_prompt_costs_one_rollout_per_draw():
    log = rows(*([r("hot")] * 10_000 + [r(f"rare {i}") for i in range(9)]))
    examples = rows_to_examples(log, DataConfig(), "log")  # a traffic log, as the loader counts it
    assert len(examples) == 10 and examples[0].count == 10_000
    p = traffic_weights(torch.tensor([e.count for e in examples]), 1.0, 0.0)
    sampler = PromptSampler(p, 4, seed=0)
    for _ in range(100):
        idx = sampler.sample()
        assert len(set(idx.tolist())) == 4  # B distinct unique prompts, so B * G rollouts per step
        assert int((idx == 0).sum()) == 1  # p ~ 0.999: drawn every step, but once
