"""The sampler's preallocated decode cache gives the numbers of transformers' DynamicCache.

``rlft.rollout.growing_cache.use_growing_layers`` (called by the sampler) swaps the cache's
DynamicLayers for layers that write each new token into spare room; patching the sampler's call to
a no-op gives the stock cache, which is the reference here.
"""

import pytest
import torch
from tests.tiny import EOS, PAD, TEXT_PROMPTS as PROMPTS, stop_early

from rlft.models import completion_logprobs
from rlft.rollout import PlainSampler
from rlft.rollout import growing_cache, plain


def _layer_pair(reserve):
    from transformers.cache_utils import DynamicLayer

    return growing_cache.growing_layer_class()(reserve), DynamicLayer()


def _kv(rows, tokens, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, tokens, 4, generator=g), torch.randn(rows, 2, tokens, 4, generator=g)


def test_growing_layer_equals_dynamic_layer():
    growing, stock = _layer_pair(reserve=3)
    steps = [("update", 5), ("repeat", 2), ("update", 1), ("update", 1), ("update", 1),
             ("update", 1), ("select", torch.tensor([3, 0, 2])), ("update", 1), ("update", 2)]
    rows = 2
    for i, (op, arg) in enumerate(steps):
        if op == "update":
            k, v = _kv(rows, arg, seed=i)
            got, want = growing.update(k, v), stock.update(k, v)
            for g, w in zip(got, want):
                assert torch.equal(g, w)
        elif op == "repeat":
            growing.batch_repeat_interleave(arg)
            stock.batch_repeat_interleave(arg)
            rows *= arg
        else:
            growing.batch_select_indices(arg)
            stock.batch_select_indices(arg)
            rows = len(arg)
        assert torch.equal(growing.keys, stock.keys) and torch.equal(growing.values, stock.values)
        assert growing.get_seq_length() == stock.get_seq_length()
    assert growing.get_seq_length() == 12


def test_growing_layer_writes_in_place_within_its_reserve():
    growing, _ = _layer_pair(reserve=4)
    growing.update(*_kv(2, 3, seed=0))
    storage = growing.keys.untyped_storage().data_ptr()
    for i in range(4):                   # exactly the reserve: no reallocation, no copy
        k, v = _kv(2, 1, seed=i + 1)
        keys, values = growing.update(k, v)
        assert keys.untyped_storage().data_ptr() == storage
        assert torch.equal(keys[..., -1:, :], k) and torch.equal(values[..., -1:, :], v)
    growing.update(*_kv(2, 1, seed=9))  # one past the reserve: a larger buffer, same contents
    assert growing.keys.untyped_storage().data_ptr() != storage
    assert growing.get_seq_length() == 8


def _spy_reserve(monkeypatch):
    """Count the layers the sampler swaps for growing ones (0 would mean the test compares the
    stock cache with itself)."""
    swapped = []
    reserve = plain.use_growing_layers

    def spy(cache, tokens):
        reserve(cache, tokens)
        swapped.extend(layer for layer in cache.layers if isinstance(layer, growing_cache.growing_layer_class()))

    monkeypatch.setattr(plain, "use_growing_layers", spy)
    return swapped


def _stock(monkeypatch):
    monkeypatch.setattr(plain, "use_growing_layers", lambda cache, tokens: None)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_equals_stock_cache_and_generate(arch, policies, monkeypatch):
    policy = policies[arch]
    sampler = PlainSampler(policy, max_prompt_tokens=64, device="cpu")
    stop = stop_early(policy, sampler.greedy(PROMPTS, max_new_tokens=12), monkeypatch)
    swapped = _spy_reserve(monkeypatch)
    greedy = sampler.greedy(PROMPTS, max_new_tokens=12)
    assert len(swapped) == 2
    assert len(set(greedy.lengths.tolist())) > 1

    _stock(monkeypatch)
    stock = sampler.greedy(PROMPTS, max_new_tokens=12)
    assert torch.equal(greedy.completion_ids, stock.completion_ids)
    torch.testing.assert_close(greedy.logprobs, stock.logprobs, atol=1e-6, rtol=0)

    batch = policy.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = policy.model.generate(**batch, do_sample=False, max_new_tokens=12,
                                    eos_token_id=[EOS, stop], pad_token_id=PAD)
    generated = out[:, batch["input_ids"].shape[1]:]
    t = greedy.completion_ids.shape[1]
    assert torch.equal(greedy.completion_ids, generated[:, :t])
    assert (generated[:, t:] == PAD).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sampling_equals_stock_cache_and_completion_logprobs(arch, policies, monkeypatch):
    policy = policies[arch]
    sampler = PlainSampler(policy, max_prompt_tokens=64, device="cpu")

    def draw():
        return sampler.sample(PROMPTS, 3, temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=16,
                              generator=torch.Generator().manual_seed(7))

    stop_early(policy, draw(), monkeypatch)
    swapped = _spy_reserve(monkeypatch)
    growing = draw()
    assert len(swapped) == 2
    _stock(monkeypatch)
    stock = draw()
    assert torch.equal(growing.completion_ids, stock.completion_ids)
    assert growing.texts == stock.texts
    torch.testing.assert_close(growing.logprobs, stock.logprobs, atol=1e-6, rtol=0)
    # rows of different lengths, so decoding went on past some rows' EOS
    assert len(set(growing.lengths.tolist())) > 1
    with torch.no_grad():
        want, _ = completion_logprobs(policy.model, growing, is_seq2seq=False)
    torch.testing.assert_close(growing.logprobs, want * growing.completion_mask, atol=1e-4, rtol=0)
