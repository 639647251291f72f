"""The KL penalty's expected gradient, enumerated exactly over every sequence of a tiny policy.

The "model" is a table of logits: step 1 draws y1 ~ softmax(theta1) (V,), step 2 draws
y2 ~ softmax(theta2[y1]) (V, V). Every one of the V**2 sequences is a row of the batch, weighted
by its probability pi(y) (held constant), so  sum_y pi(y) grad loss(y) = E_{y~pi}[grad loss(y)]
is the estimator's expected gradient, with no sampling noise, and it is compared with autograd
of the exact divergence.
"""

from __future__ import annotations

import pytest
import torch

from rlft.algorithms import kl_reward, rl_loss

F64 = torch.float64
V = 4


def tables(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(V, generator=gen, dtype=F64), torch.randn(V, V, generator=gen, dtype=F64)


def enumerate_sequences(theta1, theta2, steps: int):
    """Every sequence: per-token log-probs (S, steps) and the sequence probabilities (S,)."""
    l1, l2 = torch.log_softmax(theta1, -1), torch.log_softmax(theta2, -1)   # (V,), (V, V)
    if steps == 1:
        lp = l1[:, None]                                                    # (V, 1)
    else:
        y1 = torch.arange(V).repeat_interleave(V)                           # (V*V,)
        y2 = torch.arange(V).repeat(V)
        lp = torch.stack([l1[y1], l2[y1, y2]], 1)                           # (V*V, 2)
    return lp, lp.sum(1).exp()


def exact_kl(theta1, theta2, ref1, ref2, steps: int, reverse: bool = False):
    lp, p = enumerate_sequences(theta1, theta2, steps)
    lq, q = enumerate_sequences(ref1, ref2, steps)
    if reverse:
        return (q * (lq.sum(1) - lp.sum(1))).sum()
    return (p * (lp.sum(1) - lq.sum(1))).sum()


def per_position_kl(theta1, theta2, ref1, ref2, reverse: bool = False):
    """sum_t E_{y<t}[KL_t(. | y<t)] with the prefix distribution held constant."""
    def kl(a, b):  # rows of logits -> KL(softmax a || softmax b), (...)
        la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        return (la.exp() * (la - lb)).sum(-1)
    first = kl(ref1, theta1) if reverse else kl(theta1, ref1)
    second = kl(ref2, theta2) if reverse else kl(theta2, ref2)             # (V,) one per prefix
    return first + (torch.softmax(theta1, -1).detach() * second).sum()


def expected_grad(loss_fn, theta1, theta2, steps):
    lp, p = enumerate_sequences(theta1, theta2, steps)
    loss = loss_fn(lp, p.detach())
    return torch.autograd.grad(loss, (theta1, theta2), allow_unused=True)


def _grads(*tensors):
    return [g if g is not None else torch.zeros_like(t) for g, t in tensors]


def reward_mode_loss(ref1, ref2, steps, baseline=0.0):
    def loss_fn(lp, p):
        lq, _ = enumerate_sequences(ref1, ref2, steps)
        mask = torch.ones_like(lp)
        kl = kl_reward(lp, lq, mask)                        # (S,) detached
        advantages = (0.0 - kl) - baseline                  # task reward 0: R - kl_coef * KL, kl_coef = 1
        loss, _ = rl_loss(lp, lp.detach(), advantages, mask, weights=p, normalizer=1.0)
        return loss
    return loss_fn


def loss_mode_loss(ref1, ref2, steps, estimator):
    def loss_fn(lp, p):
        lq, _ = enumerate_sequences(ref1, ref2, steps)
        mask = torch.ones_like(lp)
        loss, _ = rl_loss(lp, lp.detach(), torch.zeros(lp.shape[0], dtype=F64), mask, ref_logprobs=lq,
                          kl_coef=1.0, kl_estimator=estimator, weights=p, normalizer=1.0)
        return loss
    return loss_fn


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("baseline", [0.0, 0.7])
def test_reward_penalty_gives_the_gradient_of_kl_pi_ref(steps, baseline):
    theta1, theta2 = (t.requires_grad_() for t in tables(0))
    ref1, ref2 = tables(1)
    got = expected_grad(reward_mode_loss(ref1, ref2, steps, baseline), theta1, theta2, steps)
    want = torch.autograd.grad(exact_kl(theta1, theta2, ref1, ref2, steps), (theta1, theta2), allow_unused=True)
    got, want = _grads(*zip(got, (theta1, theta2))), _grads(*zip(want, (theta1, theta2)))
    assert want[0].abs().max() > 1e-2
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_k2_loss_term_gives_the_gradient_of_kl_pi_ref_per_position():
    theta1, theta2 = (t.requires_grad_() for t in tables(2))
    ref1, ref2 = tables(3)
    # one step: exactly grad KL(pi || pi_ref)
    (g1, _) = expected_grad(loss_mode_loss(ref1, ref2, 1, "k2"), theta1, theta2, 1)
    (w1,) = torch.autograd.grad(exact_kl(theta1, theta2, ref1, ref2, 1), theta1)
    torch.testing.assert_close(g1, w1)
    # two steps: each position's KL given its prefix (not the prefix's effect on later positions)
    got = expected_grad(loss_mode_loss(ref1, ref2, 2, "k2"), theta1, theta2, 2)
    want = torch.autograd.grad(per_position_kl(theta1, theta2, ref1, ref2), (theta1, theta2))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    full = torch.autograd.grad(exact_kl(theta1, theta2, ref1, ref2, 2), theta1)[0]
    assert (full - got[0]).abs().max() > 1e-3  # what the docs say the loss term leaves out


def test_k3_loss_term_gives_the_gradient_of_the_reverse_kl():
    theta1, theta2 = (t.requires_grad_() for t in tables(4))
    ref1, ref2 = tables(5)
    (got,) = expected_grad(loss_mode_loss(ref1, ref2, 1, "k3"), theta1, theta2, 1)[:1]
    (reverse,) = torch.autograd.grad(exact_kl(theta1, theta2, ref1, ref2, 1, reverse=True), theta1)
    (forward,) = torch.autograd.grad(exact_kl(theta1, theta2, ref1, ref2, 1), theta1)
    torch.testing.assert_close(got, reverse)
    assert (got - forward).abs().max() > 1e-2


def test_k1_loss_term_has_zero_expected_gradient_and_is_refused():
    theta1, theta2 = (t.requires_grad_() for t in tables(6))
    ref1, ref2 = tables(7)
    lp, p = enumerate_sequences(theta1, theta2, 1)
    lq, _ = enumerate_sequences(ref1, ref2, 1)
    # sum_y pi(y) grad (log pi(y) - log pi_ref(y)) = grad sum_y pi(y) = 0
    (g,) = torch.autograd.grad((p.detach() * (lp - lq).sum(1)).sum(), theta1)
    torch.testing.assert_close(g, torch.zeros_like(g))
    with pytest.raises(ValueError, match="zero expected gradient"):
        rl_loss(lp, lp.detach(), torch.zeros(V, dtype=F64), torch.ones_like(lp), ref_logprobs=lq,
                kl_coef=1.0, kl_estimator="k1")
