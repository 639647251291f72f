"""PPO's pure functions against hand-computed tensors: per-token rewards, GAE, whitening, the clipped
value loss, per-token advantages in the shared loss, and the adaptive KL coefficient."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms import ALGORITHMS, rl_loss
from rlft.algorithms import ppo
from rlft.algorithms.kl_control import adaptive_kl_coef

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 1 ends after 2 tokens


def test_token_rewards_put_the_kl_on_every_token_and_r_on_the_last():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, -0.1, 9.0]])  # 9.0 sits on padding
    out = ppo.token_rewards(torch.tensor([1.0, 2.0]), MASK, kl, kl_coef=0.5)
    torch.testing.assert_close(out, torch.tensor([[-0.05, -0.1, 0.85], [-0.25, 2.05, 0.0]]))
    torch.testing.assert_close(ppo.token_rewards(torch.tensor([1.0, 2.0]), MASK),
                               torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]]))
    # an empty completion gets no reward anywhere (there is no token to put it on)
    assert ppo.token_rewards(torch.tensor([3.0]), torch.zeros(1, 2)).abs().sum() == 0


def test_gae_by_hand():
    rewards = torch.tensor([[-0.05, -0.1, 0.85], [-0.25, 2.05, 0.0]])
    values = torch.tensor([[0.5, 1.0, 2.0], [1.0, 0.0, 7.0]])  # 7.0 sits on padding: ignored
    adv, ret = ppo.gae(rewards, values, MASK, gamma=0.9, lam=0.5)
    # row 0: delta = (-0.05 + 0.9*1 - 0.5, -0.1 + 0.9*2 - 1, 0.85 - 2) = (0.35, 0.7, -1.15)
    #        A2 = -1.15;  A1 = 0.7 + 0.45 * -1.15 = 0.1825;  A0 = 0.35 + 0.45 * 0.1825 = 0.432125
    # row 1: delta = (-0.25 + 0.9*0 - 1, 2.05 + 0 - 0) = (-1.25, 2.05)
    #        A1 = 2.05;  A0 = -1.25 + 0.45 * 2.05 = -0.3275
    want = torch.tensor([[0.432125, 0.1825, -1.15], [-0.3275, 2.05, 0.0]])
    torch.testing.assert_close(adv, want)
    torch.testing.assert_close(ret, want + torch.tensor([[0.5, 1.0, 2.0], [1.0, 0.0, 0.0]]))


def test_gae_limits_lambda_one_is_the_return_minus_v_and_lambda_zero_the_td_error():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.25, 4.0]])
    mask = torch.ones(1, 3)
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # discounted returns: G2 = 3, G1 = 2 + 0.5 * 3 = 3.5, G0 = 1 + 0.5 * 3.5 = 2.75
    torch.testing.assert_close(ret, torch.tensor([[2.75, 3.5, 3.0]]))
    torch.testing.assert_close(adv, torch.tensor([[2.25, 3.25, -1.0]]))
    adv, _ = ppo.gae(rewards, values, mask, gamma=0.5, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([[1.0 + 0.125 - 0.5, 2.0 + 2.0 - 0.25, 3.0 - 4.0]]))


def test_whiten_uses_the_masked_tokens_and_the_unbiased_variance():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    out = ppo.whiten(x, MASK)
    # tokens 1..5: mean 3, unbiased variance (4 + 1 + 0 + 1 + 4) / 4 = 2.5
    want = (torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 3.0]]) - 3.0) / math.sqrt(2.5 + 1e-8)
    torch.testing.assert_close(out, want * MASK)


def test_value_loss_by_hand_with_its_gradient():
    values = torch.tensor([[1.0, 2.0, 1.5]], requires_grad=True)
    old = torch.tensor([[0.95, 1.0, 1.0]])
    returns = torch.tensor([[2.0, 0.0, 1.4]])
    loss, stats = ppo.value_loss(values, old, returns, torch.ones(1, 3), clip=0.2)
    # t0: inside the clip range, both branches (1 - 2)^2 = 1
    # t1: clipped to 1.2: max((2 - 0)^2, (1.2 - 0)^2) = 4, the unclipped branch
    # t2: clipped to 1.2: max((1.5 - 1.4)^2, (1.2 - 1.4)^2) = 0.04, the clipped branch: no gradient
    assert loss.item() == pytest.approx(0.5 * (1 + 4 + 0.04) / 3)
    assert stats["value_clip_frac"].item() == pytest.approx(1 / 3)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[-1.0, 2.0, 0.0]]) / 3)


def test_rl_loss_takes_per_token_advantages():
    lp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.5, 0.25, 0.5], [0.5, 0.5, 0.5]]))  # row 0, token 1: ratio 2
    adv = torch.tensor([[1.0, 1.0, -2.0], [3.0, -1.0, 5.0]])
    loss, stats = rl_loss(lp, old, adv, MASK, clip_eps=0.2)
    # per token -min(r A, clip(r) A): (-1, -1.2 (clipped), 2, -3, 1) over 5 tokens
    assert loss.item() == pytest.approx((-1 - 1.2 + 2 - 3 + 1) / 5)
    assert stats["clip_frac"].item() == pytest.approx(1 / 5)
    # constant per-token advantages are the per-sequence ones
    seq = torch.tensor([0.7, -0.4])
    a, _ = rl_loss(lp, old, seq, MASK, clip_eps=0.2)
    b, _ = rl_loss(lp, old, seq[:, None].expand(2, 3), MASK, clip_eps=0.2)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        rl_loss(lp, old, torch.zeros(2, 2), MASK)


def test_the_registered_critic_is_gae_of_the_token_rewards_whitened():
    algo = ALGORITHMS["ppo"]
    assert algo.clip and algo.critic is not None and algo.min_group_size == 1
    rewards = torch.tensor([[1.0], [2.0]])  # (B, G) = (2, 1): the sequence rewards pass through
    seq = algo.advantages(rewards, greedy_rewards=None, state={}, baseline_momentum=0.9, scale_rewards=True)
    torch.testing.assert_close(seq, rewards)
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, -0.1, 9.0]])
    values = torch.tensor([[0.5, 1.0, 2.0], [1.0, 0.0, 7.0]])
    adv, ret = algo.critic(seq.reshape(-1), mask=MASK, kl=kl, kl_coef=0.5, values=values, gamma=0.9, lam=0.5)
    raw, want_ret = ppo.gae(torch.tensor([[-0.05, -0.1, 0.85], [-0.25, 2.05, 0.0]]), values, MASK, 0.9, 0.5)
    torch.testing.assert_close(ret, want_ret)
    torch.testing.assert_close(adv, ppo.whiten(raw, MASK))


def test_adaptive_kl_coefficient_by_hand():
    # above the target by 50%: the error is clipped to 0.2; K_beta = n / horizon = 256 / 10000
    assert adaptive_kl_coef(0.1, 9.0, target=6.0, horizon=10000, n=256) == pytest.approx(0.1 * (1 + 0.2 * 0.0256))
    # 10% below: the coefficient falls by 10% of K_beta
    assert adaptive_kl_coef(0.1, 5.4, target=6.0, horizon=10000, n=256) == pytest.approx(0.1 * (1 - 0.1 * 0.0256))
    assert adaptive_kl_coef(0.1, 0.0, target=6.0, horizon=100, n=100) == pytest.approx(0.08)  # clipped at -0.2
    assert adaptive_kl_coef(0.1, 50.0, target=0.0, horizon=100, n=100) == 0.1  # target 0: fixed
    with pytest.raises(ValueError, match="horizon"):
        adaptive_kl_coef(0.1, 1.0, target=1.0, horizon=0, n=4)
