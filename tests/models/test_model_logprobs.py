"""completion_logprobs against an unpadded, one-row-at-a-time transformers forward."""

from types import SimpleNamespace

import pytest
import torch
from tests.tiny import EOS, PAD

from rlft.models import completion_logprobs
from rlft.models import logprobs as logprobs_module


# Unequal prompt lengths and completions that end (EOS + padding) at different columns.
PROMPTS = [[1, 40, 41, 42, 43, 44], [1, 50], [1, 60, 61, 62]]
COMPLETIONS = [[70, 71, EOS, PAD, PAD], [80, 81, 82, 83, 84], [90, EOS, PAD, PAD, PAD]]


def _batch(prompts, completions, left: bool):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), PAD)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        cols = slice(width - len(p), width) if left else slice(0, len(p))
        ids[i, cols], mask[i, cols] = torch.tensor(p), 1
    comp = torch.tensor(completions)
    comp_mask = torch.ones(comp.shape)
    for i, row in enumerate(completions):
        if EOS in row:
            comp_mask[i, row.index(EOS) + 1:] = 0
    return SimpleNamespace(prompt_ids=ids, prompt_mask=mask, completion_ids=comp, completion_mask=comp_mask)


def _reference_causal(model, prompt, completion):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]   # (L, V)
    cols = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logp[cols, torch.tensor(completion)], logp[cols]


def _reference_seq2seq(model, prompt, completion):
    decoder = torch.tensor([[model.config.decoder_start_token_id] + completion[:-1]])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=decoder).logits
    logp = torch.log_softmax(logits.float(), -1)[0]
    return logp[torch.arange(len(completion)), torch.tensor(completion)], logp


def _real(completion):
    return completion[:completion.index(EOS) + 1] if EOS in completion else completion


@pytest.mark.parametrize("arch", ["llama", "gpt2", "seq2seq"])
def test_matches_unpadded_forward(arch, policies):
    policy = policies[arch]
    prompts = [p[1:] + [EOS] for p in PROMPTS] if policy.is_seq2seq else PROMPTS
    batch = _batch(prompts, COMPLETIONS, left=not policy.is_seq2seq)
    with torch.no_grad():
        lp, ent = completion_logprobs(policy.model, batch, is_seq2seq=policy.is_seq2seq, with_entropy=True)
    assert lp.shape == ent.shape == (3, 5) and lp.dtype == torch.float32
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    reference = _reference_seq2seq if policy.is_seq2seq else _reference_causal
    for i, (prompt, completion) in enumerate(zip(prompts, COMPLETIONS)):
        real = _real(completion)
        want, full = reference(policy.model, prompt, real)
        torch.testing.assert_close(lp[i, :len(real)], want, atol=1e-5, rtol=0)
        want_entropy = -(full.exp() * full).sum(-1)
        torch.testing.assert_close(ent[i, :len(real)], want_entropy, atol=1e-5, rtol=0)


def test_chunks_full_logits_fallback_and_gradient(causal, monkeypatch):
    batch = _batch(PROMPTS, COMPLETIONS, left=True)
    whole, _ = completion_logprobs(causal.model, batch, is_seq2seq=False)
    chunked, _ = completion_logprobs(causal.model, batch, is_seq2seq=False, chunk=2)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    # Architectures without `logits_to_keep` get full logits, sliced afterwards: same numbers.
    monkeypatch.setattr(logprobs_module, "forward_accepts", lambda model, name: False)
    full, _ = completion_logprobs(causal.model, batch, is_seq2seq=False)
    torch.testing.assert_close(full, whole, atol=1e-6, rtol=0)
    # No hidden no_grad: the loss can backpropagate through it.
    (whole * batch.completion_mask).sum().backward()
    grad = causal.model.lm_head.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    causal.model.zero_grad(set_to_none=True)


def test_single_token_completion(causal):
    batch = _batch(PROMPTS, [[EOS], [70], [EOS]], left=True)
    lp, _ = completion_logprobs(causal.model, batch, is_seq2seq=False)
    want, _ = _reference_causal(causal.model, PROMPTS[1], [70])
    assert lp.shape == (3, 1)
    torch.testing.assert_close(lp[1], want, atol=1e-5, rtol=0)
