"""The decode step (rlft.rollout.plain.draw) gives the tokens and log-probabilities of the step it
replaced, bit for bit, for a fixed seed: one tempered copy of the logits instead of two, no division
at T = 1, and the search for the last token with mass only when a row ran past it."""

import pytest
import torch

from rlft.models.logprobs import token_logprobs
from rlft.rollout import plain
from rlft.rollout.plain import PlainSampler, _nucleus

PROMPTS = ["the cat sat on the mat", "hello world", "a dog ran in the park and the cat ran after it"]


def previous_step(logits, temperature, top_p, top_k, generator):
    """The step before draw(): choose() on the logits, then the log-probability at logits / scale."""
    if temperature == 0:
        token = logits.argmax(-1)
    else:
        scores = logits.float() / temperature
        vocab = scores.shape[-1]
        if 0 < top_k < vocab:
            kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if top_p < 1:
            probs = _nucleus(probs, top_p)
        cdf = probs.cumsum(-1)
        device = generator.device if generator is not None else probs.device
        u = torch.rand((probs.shape[0], 1), generator=generator, device=device).to(probs.device)
        token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
        last = vocab - 1 - (probs > 0).flip(-1).int().argmax(-1)
        token = torch.minimum(token, last)
    scale = temperature if temperature > 0 else 1.0
    return token, token_logprobs(logits.float() / scale, token)[0]


SETTINGS = [(1.0, 1.0, 0), (0.7, 1.0, 0), (1.3, 1.0, 50), (1.0, 0.9, 0), (0.0, 1.0, 0)]  # T, top_p, top_k


@pytest.mark.parametrize("temperature, top_p, top_k", SETTINGS)
def test_draw_equals_the_previous_step(temperature, top_p, top_k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 3000, generator=g) * 4
    logits[:, ::7] = float("-inf")          # tokens without mass, as after a model's own masking
    for seed in range(5):
        got = plain.draw(logits, temperature, top_p, top_k, torch.Generator().manual_seed(seed))
        want = previous_step(logits, temperature, top_p, top_k, torch.Generator().manual_seed(seed))
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.isfinite(got[1]).all()


def test_draw_clamps_a_search_that_ran_past_the_last_token_with_mass(monkeypatch):
    # u = 1: the search runs past the end; the clamp (now taken only then) still lands on token 3
    logits = torch.tensor([[0.0, 1.0, float("-inf"), 2.0, float("-inf"), float("-inf")]] * 2)
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.ones(shape))
    token, logprob = plain.draw(logits, 1.0, 1.0, 0, None)
    assert token.tolist() == [3, 3]
    torch.testing.assert_close(logprob, torch.log_softmax(logits, -1)[:, 3])


@pytest.mark.parametrize("temperature, top_p, top_k", SETTINGS)
def test_sampler_outputs_equal_the_previous_step_for_a_fixed_seed(temperature, top_p, top_k, policies, monkeypatch):
    sampler = PlainSampler(policies["llama"], max_prompt_tokens=64, device="cpu")

    def sample():
        return sampler.sample(PROMPTS, 4, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=12,
                              generator=torch.Generator().manual_seed(11))

    now = sample()
    monkeypatch.setattr(plain, "draw", previous_step)
    before = sample()
    assert torch.equal(now.completion_ids, before.completion_ids)
    assert torch.equal(now.logprobs, before.logprobs)
    assert now.texts == before.texts
    if temperature > 0:   # a real draw: the G samples of a prompt differ
        assert len({tuple(row) for row in now.completion_ids[:4].tolist()}) > 1
