"""``rollout.compile``: decode steps through torch.compile over a static cache give the eager loop's
tokens and log-probabilities (``rlft.rollout.compiled_decode``).

Most tests compile with the 'aot_eager' backend: the same traced graph (dynamo, static cache,
full-width mask) without generating C++, so they take seconds; one test runs inductor, the
backend ``rollout.compile`` uses.
"""

import logging

import pytest
import torch
from tests.tiny import TEXT_PROMPTS as PROMPTS, stop_early

from rlft.rollout import PlainSampler
from rlft.rollout.compiled_decode import CompiledStep

def _samplers(policy, backend="aot_eager"):
    eager = PlainSampler(policy, max_prompt_tokens=64, device="cpu")
    compiled = PlainSampler(policy, max_prompt_tokens=64, device="cpu", compile=True)
    compiled._compiled = CountingStep(policy.model, backend=backend)
    return eager, compiled


class CountingStep(CompiledStep):
    """The compiled step, counting its calls (0 would mean the test compared the eager loop with itself)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_compiled_sampling_equals_eager(arch, policies, monkeypatch):
    policy = policies[arch]
    eager, compiled = _samplers(policy)

    def draw(sampler):
        return sampler.sample(PROMPTS, 3, temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=14,
                              generator=torch.Generator().manual_seed(3))

    stop_early(policy, draw(eager), monkeypatch)
    want, got = draw(eager), draw(compiled)
    assert compiled._compiled.calls > 0 and compiled.compile
    assert len(set(want.lengths.tolist())) > 1        # rows ended at different steps
    assert torch.equal(got.completion_ids, want.completion_ids)
    assert got.texts == want.texts
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_compiled_greedy_equals_eager_and_does_not_recompile(arch, policies):
    policy = policies[arch]
    eager, compiled = _samplers(policy)
    want = eager.greedy(PROMPTS, max_new_tokens=10)
    first = compiled.greedy(PROMPTS, max_new_tokens=10)
    # the same shapes again (a new static cache, new prompts of the same width): no new graph
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = compiled.greedy(PROMPTS, max_new_tokens=10)
    assert torch.equal(first.completion_ids, want.completion_ids)
    assert torch.equal(again.completion_ids, want.completion_ids)
    torch.testing.assert_close(first.logprobs, want.logprobs, atol=1e-5, rtol=0)


def test_compiled_with_inductor_equals_eager(policies):
    policy = policies["llama"]
    eager, compiled = _samplers(policy, backend="inductor")
    want = eager.greedy(PROMPTS[:2], max_new_tokens=6)
    got = compiled.greedy(PROMPTS[:2], max_new_tokens=6)
    assert compiled._compiled.calls == 5
    assert torch.equal(got.completion_ids, want.completion_ids)
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)


def test_model_without_a_static_cache_falls_back_with_a_warning(policies, monkeypatch, caplog):
    policy = policies["llama"]
    eager, compiled = _samplers(policy)
    monkeypatch.setattr(type(policy.model), "_can_compile_fullgraph", False)
    with caplog.at_level(logging.WARNING, logger="rlft.rollout.plain"):
        got = compiled.greedy(PROMPTS, max_new_tokens=8)
    assert "cannot be made static" in caplog.text
    assert not compiled.compile and compiled._compiled.calls == 0
    assert torch.equal(got.completion_ids, eager.greedy(PROMPTS, max_new_tokens=8).completion_ids)


def test_rollout_compile_reaches_the_sampler(tmp_path):
    from rlft.config import load_config
    from rlft.training.setup import prepare_parts
    from tests.tiny import tiny_causal

    model = tiny_causal(tmp_path)
    parts = prepare_parts(load_config(None, [f"model.name_or_path={model}", "data.task=summarization",
                                             "rollout.compile=true", "run.device=cpu"]))
    assert parts.sampler.compile
