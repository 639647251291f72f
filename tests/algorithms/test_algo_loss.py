"""The shared loss: masked reductions, KL estimators, normalization, clipping, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.algorithms import aggregate, kl_penalty, masked_mean, rl_loss
from rlft.algorithms import reinforce

F64 = torch.float64  # the gradient comparisons run in double precision


# --- a tiny linear "policy" -------------------------------------------------------------

N, T, D, V = 6, 5, 4, 7
LENGTHS = [5, 3, 1, 4, 2, 5]


def make_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(N, T, D, generator=gen, dtype=F64)                     # (N, T, D)
    tokens = torch.randint(0, V, (N, T), generator=gen)                        # (N, T)
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).to(F64)  # (N, T)
    adv = torch.randn(N, generator=gen, dtype=F64)                             # (N,)
    weight = torch.randn(V, D, generator=gen, dtype=F64, requires_grad=True)   # the policy's parameters
    return feats, tokens, mask, adv, weight


def policy_logprobs(weight, feats, tokens, rows=slice(None)):
    """log pi(token) and per-token entropy of a softmax-linear policy.  # (n, T), (n, T)"""
    logp = torch.log_softmax(feats[rows] @ weight.T, dim=-1)  # (n, T, V)
    lp = logp.gather(-1, tokens[rows].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return lp, entropy


# --- masked reductions and KL -----------------------------------------------------------

def test_masked_mean_ignores_padding_and_is_safe_on_empty_rows():
    x = torch.tensor([[1.0, 3.0, float("nan")], [5.0, float("inf"), 7.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 0.0]))
    total = masked_mean(x, mask)
    torch.testing.assert_close(total, torch.tensor(2.0))
    total.backward()
    torch.testing.assert_close(x.grad, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_kl_estimators_on_hand_numbers():
    lp = torch.tensor([0.0, -1.0])
    ref = torch.tensor([-1.0, 0.0])
    torch.testing.assert_close(kl_penalty(lp, ref, "k1"), torch.tensor([1.0, -1.0]))
    # k3 = exp(ref - lp) - (ref - lp) - 1: e^-1 + 1 - 1 and e - 1 - 1.
    torch.testing.assert_close(kl_penalty(lp, ref, "k3"), torch.tensor([math.exp(-1), math.e - 2]))
    torch.testing.assert_close(kl_penalty(lp, ref, "k2"), torch.tensor([0.5, 0.5]))


def test_kl_estimators_are_zero_at_reference_and_k3_nonnegative():
    gen = torch.Generator().manual_seed(1)
    lp = -torch.rand(50, 8, generator=gen) * 5
    ref = -torch.rand(50, 8, generator=gen) * 5
    assert (kl_penalty(lp, ref, "k3") >= 0).all()
    assert (kl_penalty(lp, ref, "k1") < 0).any()  # k1 is only non-negative in expectation
    for est in ("k1", "k2", "k3"):
        assert torch.equal(kl_penalty(lp, lp, est), torch.zeros_like(lp))


def test_kl_estimators_are_unbiased_for_kl_pi_ref():
    # The expectation over y ~ pi, enumerated exactly over a 5-token vocabulary, must be
    # KL(pi || pi_ref), not the reverse KL.
    pi = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    ref = torch.tensor([0.1, 0.3, 0.2, 0.2, 0.2])
    kl = (pi * (pi.log() - ref.log())).sum()
    reverse = (ref * (ref.log() - pi.log())).sum()
    assert abs(kl - reverse) > 0.05
    for est in ("k1", "k3"):
        torch.testing.assert_close((pi * kl_penalty(pi.log(), ref.log(), est)).sum(), kl)


def test_kl_unknown_estimator():
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")


# --- normalization ----------------------------------------------------------------------

def test_token_vs_sequence_normalization_with_unequal_lengths():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # token: (1 + 2 + 3 + 4) / 4 tokens; sequence: (mean(1, 2, 3) + 4) / 2 rows.
    torch.testing.assert_close(aggregate(per_token, mask, "token"), torch.tensor(2.5))
    torch.testing.assert_close(aggregate(per_token, mask, "sequence"), torch.tensor(3.0))
    torch.testing.assert_close(aggregate(per_token, mask, "token", normalizer=10), torch.tensor(1.0))
    torch.testing.assert_close(aggregate(per_token, mask, "sequence", normalizer=4), torch.tensor(1.5))
    assert aggregate(per_token, torch.zeros_like(mask), "token").item() == 0.0
    with pytest.raises(ValueError, match="loss_norm"):
        aggregate(per_token, mask, "batch")


# --- gradients --------------------------------------------------------------------------

@pytest.mark.parametrize("clip_eps", [None, 0.2])
@pytest.mark.parametrize("loss_norm", ["token", "sequence"])
def test_on_policy_gradient_is_the_reinforce_gradient(loss_norm, clip_eps):
    feats, tokens, mask, adv, weight = make_batch()
    lp, _ = policy_logprobs(weight, feats, tokens)
    loss, stats = rl_loss(lp, lp.detach(), adv, mask, clip_eps=clip_eps, loss_norm=loss_norm)
    (grad,) = torch.autograd.grad(loss, weight)

    # By hand: grad log softmax(W x)[y] w.r.t. W = (onehot(y) - p) x^T, so the REINFORCE
    # gradient of the loss is -sum_{i,t} c_it A_i (onehot(y_it) - p_it) x_it^T with
    # c_it = m_it / n_tokens ('token') or m_it / (|o_i| N) ('sequence').
    with torch.no_grad():
        probs = torch.softmax(feats @ weight.T, dim=-1)                     # (N, T, V)
        score = torch.nn.functional.one_hot(tokens, V).to(F64) - probs     # (N, T, V)
        if loss_norm == "token":
            c = mask / mask.sum()
        else:
            c = mask / mask.sum(1, keepdim=True) / N
        expected = -torch.einsum("nt,n,ntv,ntd->vd", c, adv, score, feats)
    torch.testing.assert_close(grad, expected)
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["clip_frac"].item() == 0.0


def test_constant_reward_with_matching_baseline_gives_zero_gradient():
    feats, tokens, mask, _, weight = make_batch()
    rewards = torch.full((2, 3), 0.7)  # (B, G), N = 6
    adv, _ = reinforce.advantages(rewards, 0.7, 0.9)
    lp, _ = policy_logprobs(weight, feats, tokens)
    loss, _ = rl_loss(lp, lp.detach(), adv.flatten(), mask)
    (grad,) = torch.autograd.grad(loss, weight)
    assert torch.equal(grad, torch.zeros_like(grad))
    # Without the baseline the same rewards do move the policy.
    adv, _ = reinforce.advantages(rewards, None, 0.9)
    lp, _ = policy_logprobs(weight, feats, tokens)
    (grad,) = torch.autograd.grad(rl_loss(lp, lp.detach(), adv.flatten(), mask)[0], weight)
    assert grad.abs().max() > 1e-3


# --- clipping ---------------------------------------------------------------------------

def clipped_token_grads(ratios, adv, eps=0.2):
    """Per-token loss gradient w.r.t. logprobs (scaled back by n_tokens), loss and stats."""
    old = torch.zeros(len(ratios), len(ratios[0]))
    lp = torch.tensor(ratios).log().requires_grad_(True)
    mask = torch.ones_like(old)
    loss, stats = rl_loss(lp, old, torch.tensor(adv), mask, clip_eps=eps)
    loss.backward()
    return lp.grad * mask.numel(), loss, stats


def test_clip_positive_advantage_caps_ratio_at_one_plus_eps():
    grads, loss, stats = clipped_token_grads([[1.5, 1.0]], [2.0])
    # Token 0: -min(1.5 * 2, 1.2 * 2) = -2.4 and no gradient; token 1: -1 * 2, grad -r A = -2.
    torch.testing.assert_close(loss, torch.tensor((-2.4 - 2.0) / 2))
    torch.testing.assert_close(grads, torch.tensor([[0.0, -2.0]]))
    assert stats["clip_frac"].item() == pytest.approx(0.5)


def test_clip_negative_advantage_caps_ratio_at_one_minus_eps():
    grads, loss, stats = clipped_token_grads([[0.5, 1.1]], [-1.0])
    # Token 0: -min(-0.5, -0.8) = 0.8, no gradient; token 1: -min(-1.1, -1.1) = 1.1, grad 1.1.
    torch.testing.assert_close(loss, torch.tensor((0.8 + 1.1) / 2))
    torch.testing.assert_close(grads, torch.tensor([[0.0, 1.1]]))
    assert stats["clip_frac"].item() == pytest.approx(0.5)


def test_clip_keeps_the_gradient_on_the_pessimistic_side():
    # A > 0 with a small ratio, or A < 0 with a large one: the unclipped term is the minimum,
    # so the token keeps its gradient -r A and does not count as clipped.
    grads, loss, stats = clipped_token_grads([[0.5, 1.0], [1.5, 1.0]], [1.0, -1.0])
    torch.testing.assert_close(grads, torch.tensor([[-0.5, -1.0], [1.5, 1.0]]))
    torch.testing.assert_close(loss, torch.tensor((-0.5 - 1.0 + 1.5 + 1.0) / 4))
    assert stats["clip_frac"].item() == 0.0


def test_clip_frac_counts_only_real_tokens_and_is_zero_without_clipping():
    ratios = torch.tensor([[1.5, 1.5, 1.0], [0.5, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -1.0])
    _, stats = rl_loss(ratios.log(), torch.zeros_like(ratios), adv, mask, clip_eps=0.2)
    assert stats["clip_frac"].item() == pytest.approx(2 / 4)
    _, stats = rl_loss(ratios.log(), torch.zeros_like(ratios), adv, mask, clip_eps=None)
    assert stats["clip_frac"].item() == 0.0
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor((1.5 + 0.5 + 1.0 + 1.0) / 4))


# --- kl / entropy terms and stats -------------------------------------------------------

def test_kl_and_entropy_terms_enter_the_loss_with_their_coefficients():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    ent = torch.tensor([[0.3, 0.9]])
    mask = torch.ones(1, 2)
    adv = torch.tensor([0.5])
    loss, stats = rl_loss(lp, lp, adv, mask, ref_logprobs=ref, kl_coef=0.1, kl_estimator="k2",
                          entropy=ent, entropy_coef=0.01)
    k2 = 0.5 * (lp - ref) ** 2  # [0.125, 0.5]
    expected = ((-0.5 + 0.1 * k2 - 0.01 * ent).sum() / 2)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["kl"], torch.tensor(0.3125))
    torch.testing.assert_close(stats["entropy"], torch.tensor(0.6))
    torch.testing.assert_close(stats["pg_loss"], torch.tensor(-0.5))
    assert all(not v.requires_grad for v in stats.values())
    _, stats = rl_loss(lp, lp, adv, mask)
    assert "kl" not in stats and "entropy" not in stats


# --- micro-batches and weights ----------------------------------------------------------

def full_and_split_grads(loss_norm, splits, seed=0):
    feats, tokens, mask, adv, weight = make_batch(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    ref = torch.log_softmax(torch.randn(N, T, V, generator=gen, dtype=F64), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    row_w = torch.rand(N, generator=gen, dtype=F64) + 0.5
    with torch.no_grad():  # off-policy old log-probs, so that some tokens are clipped
        old = policy_logprobs(weight, feats, tokens)[0] + 0.4 * torch.randn(N, T, generator=gen, dtype=F64)
    kwargs = dict(ref_logprobs=None, kl_coef=0.05, entropy_coef=0.01, clip_eps=0.2, loss_norm=loss_norm)

    def loss_on(rows, normalizer):
        lp, ent = policy_logprobs(weight, feats, tokens, rows)
        return rl_loss(lp, old[rows], adv[rows], mask[rows], entropy=ent, normalizer=normalizer,
                       weights=row_w[rows], **{**kwargs, "ref_logprobs": ref[rows]})

    loss, stats = loss_on(slice(None), None)
    assert 0 < stats["clip_frac"] < 1
    (full,) = torch.autograd.grad(loss, weight)

    normalizer = mask.sum() if loss_norm == "token" else N
    total = 0.0
    bounds = [0, *splits, N]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        total = total + loss_on(slice(lo, hi), normalizer)[0]
    (split,) = torch.autograd.grad(total, weight)
    return loss, total, full, split


@pytest.mark.parametrize("splits", [[3], [2, 3]])
@pytest.mark.parametrize("loss_norm", ["token", "sequence"])
def test_micro_batches_with_batch_normalizer_give_the_batch_gradient(loss_norm, splits):
    loss, total, full, split = full_and_split_grads(loss_norm, splits)
    torch.testing.assert_close(total, loss)
    torch.testing.assert_close(split, full)


def test_micro_batches_without_batch_normalizer_would_differ():
    # Guards the test above: the normalizer is what makes the split exact.
    feats, tokens, mask, adv, weight = make_batch()
    lp, _ = policy_logprobs(weight, feats, tokens)
    whole = rl_loss(lp, lp.detach(), adv, mask)[0]
    parts = sum(rl_loss(lp[s], lp.detach()[s], adv[s], mask[s])[0] for s in (slice(0, 2), slice(2, N)))
    assert abs(whole.item() - parts.item()) > 1e-3


@pytest.mark.parametrize("loss_norm", ["token", "sequence"])
def test_zero_weight_row_contributes_no_gradient(loss_norm):
    feats, tokens, mask, adv, weight = make_batch()
    lp, ent = policy_logprobs(weight, feats, tokens)
    lp.retain_grad()
    ref = lp.detach() - 0.3
    row_w = torch.ones(N)
    row_w[1] = 0.0
    loss, _ = rl_loss(lp, lp.detach(), adv, mask, ref_logprobs=ref, kl_coef=0.1, entropy=ent,
                      entropy_coef=0.01, loss_norm=loss_norm, weights=row_w)
    loss.backward()
    assert torch.equal(lp.grad[1], torch.zeros_like(lp.grad[1]))
    assert lp.grad[0].abs().sum() > 0
    grad_before = weight.grad.clone()

    # Changing the weighted-out row's advantage changes nothing.
    weight.grad = None
    adv2 = adv.clone()
    adv2[1] = 100.0  # would dominate the gradient if the row counted
    lp, ent = policy_logprobs(weight, feats, tokens)
    rl_loss(lp, lp.detach(), adv2, mask, ref_logprobs=ref, kl_coef=0.1, entropy=ent,
            entropy_coef=0.01, loss_norm=loss_norm, weights=row_w)[0].backward()
    torch.testing.assert_close(weight.grad, grad_before)


@pytest.mark.parametrize("loss_norm", ["token", "sequence"])
def test_weights_scale_loss_and_gradient_linearly(loss_norm):
    feats, tokens, mask, adv, weight = make_batch()
    gen = torch.Generator().manual_seed(3)
    row_w = torch.rand(N, generator=gen, dtype=F64)

    def grad_for(w):
        lp, ent = policy_logprobs(weight, feats, tokens)
        loss, _ = rl_loss(lp, lp.detach() + 0.1, adv, mask, ref_logprobs=lp.detach() - 0.2, kl_coef=0.1,
                          entropy=ent, entropy_coef=0.01, loss_norm=loss_norm, weights=w)
        return loss, torch.autograd.grad(loss, weight)[0]

    loss1, g1 = grad_for(row_w)
    loss3, g3 = grad_for(3 * row_w)
    torch.testing.assert_close(loss3, 3 * loss1)
    torch.testing.assert_close(g3, 3 * g1)
    # Unit weights are the same as no weights.
    lp, ent = policy_logprobs(weight, feats, tokens)
    plain, _ = rl_loss(lp, lp.detach() + 0.1, adv, mask, ref_logprobs=lp.detach() - 0.2, kl_coef=0.1,
                       entropy=ent, entropy_coef=0.01, loss_norm=loss_norm)
    torch.testing.assert_close(grad_for(torch.ones(N))[0], plain)


def test_rl_loss_rejects_per_group_advantages():
    lp = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="advantages"):
        rl_loss(lp, lp, torch.zeros(2, 2), torch.ones(4, 3))  # (B, G) not flattened
    with pytest.raises(ValueError, match="weights"):
        rl_loss(lp, lp, torch.zeros(4), torch.ones(4, 3), weights=torch.ones(2))


def test_bf16_logprobs_give_a_float32_loss_with_bf16_gradient():
    lp = torch.tensor([[-1.0, -2.0]], dtype=torch.bfloat16, requires_grad=True)
    loss, _ = rl_loss(lp, lp.detach(), torch.tensor([1.0]), torch.ones(1, 2))
    assert loss.dtype == torch.float32
    loss.backward()
    assert lp.grad.dtype == torch.bfloat16
    torch.testing.assert_close(lp.grad.float(), torch.tensor([[-0.5, -0.5]]))
