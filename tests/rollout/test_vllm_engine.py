"""The vLLM engine's weight sync and log-probability check, without a GPU or vLLM: a fake engine
with the real one's two methods holds its own copy of the model, loads what the sync pushes and
decodes with it."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from rlft.config import LoraConfig, ModelConfig
from rlft.errors import RlftError
from rlft.models import load_policy
from rlft.rollout.plain import PlainSampler
from rlft.rollout.vllm_engine import Completion, VLLMSampler, checkpoint_names, logprob_mismatch

PROMPTS = ["reverse: the cat =>", "reverse: a dog ran =>"]


class FakeEngine:
    """Greedy or sampled decoding with its own model, which changes only through load_weights."""

    def __init__(self, model_dir):
        self.policy = load_policy(ModelConfig(name_or_path=str(model_dir)), device="cpu")
        self.loaded: list[list[str]] = []   # the names of each push
        self.adapters: list[object] = []    # the adapter of each generate call

    def load_weights(self, weights):
        weights = dict(weights)
        self.loaded.append(sorted(weights))
        self.policy.model.load_state_dict(weights)

    @torch.no_grad()
    def generate(self, prompt_ids, settings, adapter):
        self.adapters.append(adapter)
        gen = torch.Generator().manual_seed(settings.seed or 0)
        out = []
        for ids in prompt_ids:
            completions = []
            for _ in range(settings.n):
                tokens, lps = [], []
                for _ in range(settings.max_tokens):
                    logits = self.policy.model(input_ids=torch.tensor([ids + tokens])).logits[0, -1].float()
                    t = settings.temperature if settings.temperature > 0 else 1.0
                    logp = torch.log_softmax(logits / t, -1)
                    tok = int(logp.argmax()) if settings.temperature == 0 else int(torch.multinomial(logp.exp(), 1, generator=gen))
                    tokens.append(tok)
                    lps.append(float(logp[tok]))
                    if tok in settings.stop_token_ids:
                        break
                completions.append(Completion(tokens, lps, tokens[-1] not in settings.stop_token_ids))
            out.append(completions)
        return out


def _step(policy, lr=0.5):
    """One optimizer step that changes every trainable weight."""
    params = [p for p in policy.trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    enc = policy.tokenizer(PROMPTS[0], return_tensors="pt")
    policy.model(**enc).logits.float().pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def test_weights_are_pushed_after_each_update_and_the_engine_then_samples_the_policy(tiny_causal_dir):
    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal_dir)), device="cpu")
    engine = FakeEngine(tiny_causal_dir)
    sampler = VLLMSampler(policy, engine=engine)
    plain = PlainSampler(policy)
    first = sampler.greedy(PROMPTS, max_new_tokens=6)
    assert len(engine.loaded) == 1 and engine.loaded[0] == sorted(policy.model.state_dict())
    sampler.greedy(PROMPTS, max_new_tokens=6)
    assert len(engine.loaded) == 1  # nothing changed: nothing pushed
    _step(policy)
    rollout = sampler.sample(PROMPTS, 2, temperature=1.0, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    assert len(engine.loaded) == 2
    for name, tensor in policy.model.state_dict().items():  # the engine holds the updated policy
        assert torch.equal(engine.policy.model.state_dict()[name], tensor), name
    greedy = sampler.greedy(PROMPTS, max_new_tokens=6)
    assert greedy.texts == plain.greedy(PROMPTS, max_new_tokens=6).texts != first.texts
    # the trainer re-scores the engine's tokens: the same numbers up to the two forward paths
    stats = logprob_mismatch(rollout.engine_logprobs, rollout.logprobs, rollout.completion_mask)
    assert stats["engine_logprob_max_diff"] < 1e-4 and rollout.logprobs.shape == rollout.completion_ids.shape
    assert rollout.prompt_ids.shape[0] == 4 and len(rollout.texts) == 4


def test_a_stale_engine_shows_in_the_logged_mismatch(tiny_causal_dir):
    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal_dir)), device="cpu")
    sampler = VLLMSampler(policy, engine=FakeEngine(tiny_causal_dir))
    sampler.sync.push(sampler.engine)
    _step(policy)
    sampler.sync.push = lambda engine, force=False: False  # the update never reaches the engine
    rollout = sampler.sample(PROMPTS, 2, temperature=1.0, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    stats = logprob_mismatch(rollout.engine_logprobs, rollout.logprobs, rollout.completion_mask)
    assert stats["engine_logprob_abs_diff"] > 1e-2


def test_lora_pushes_only_the_adapter_as_a_new_version(tiny_causal_dir):
    from safetensors.torch import load_file

    from rlft.models.lora import apply_lora

    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal_dir)), device="cpu")
    apply_lora(policy, LoraConfig(r=4))
    engine = FakeEngine(tiny_causal_dir)
    sampler = VLLMSampler(policy, engine=engine)
    sampler.greedy(PROMPTS, max_new_tokens=3)
    sampler.greedy(PROMPTS, max_new_tokens=3)
    _step(policy)
    sampler.greedy(PROMPTS, max_new_tokens=3)
    assert engine.loaded == []  # the base weights never travel
    versions = [a.version for a in engine.adapters]
    assert versions == [1, 1, 2]
    saved = load_file(str(engine.adapters[-1].path / "adapter_model.safetensors"))
    lora = {n: p for n, p in policy.adapter.named_parameters() if "lora_" in n}
    assert len(saved) == len(lora) > 0
    for name, tensor in saved.items():  # peft drops the adapter name from the saved keys
        match = [p for n, p in lora.items() if n.replace(".default", "") == name]
        assert len(match) == 1 and torch.equal(match[0], tensor), name
    assert any(not torch.equal(t, load_file(str(engine.adapters[0].path / "adapter_model.safetensors"))[n])
               for n, t in saved.items())


def test_checkpoint_names_are_the_saved_checkpoints(tiny_causal_dir):
    from safetensors.torch import load_file

    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal_dir)), device="cpu")
    names = dict(checkpoint_names(policy.model))
    saved = load_file(str(tiny_causal_dir / "model.safetensors"))
    assert set(saved) <= set(names) and all(torch.equal(saved[k], names[k]) for k in saved)


def test_the_cpu_path_needs_no_vllm(tiny_causal_dir, tiny_seq2seq_dir):
    import rlft.rollout  # noqa: F401  (registers the engine)

    assert "vllm" not in sys.modules
    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal_dir)), device="cpu")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(RlftError, match=r"pip install 'rlft\[vllm\]'"):
            VLLMSampler(policy)
    seq2seq = load_policy(ModelConfig(name_or_path=str(tiny_seq2seq_dir)), device="cpu")
    with pytest.raises(RlftError, match="decoder-only"):
        VLLMSampler(seq2seq, engine=FakeEngine(tiny_causal_dir))
