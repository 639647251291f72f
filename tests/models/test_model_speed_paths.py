"""Exactness of the speed paths in rlft.models: prompt-shared log-probs (shared_prompt), bf16 emulation
(bf16_emulation), fused GELU (fused_activations).

Each fast path must give the numbers of the plain computation it replaces; these tests compare
the two directly (and check that the fast path really ran, so a silent fallback cannot pass).
"""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from tests.tiny import EOS, PAD, grouped_batch, logprobs_and_grads, tiny_causal

from rlft.models import bf16_emulation, shared_prompt
from rlft.models import logprobs as logprobs_module
from rlft.models.fused_activations import fuse_activations
from rlft.models.loading import disable_dropout

def _grouped_batch():
    """N = B * G rows, G = 3 per prompt, as in a Rollout: prompts of unequal length (left padding, plus
    one column that is padding in every row); completions ending in EOS at different columns."""
    return grouped_batch(extra_width=1)


_logprobs_and_grads = logprobs_and_grads


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prompt_shared_logprobs_and_gradients_equal_one_pass(arch, policies, monkeypatch):
    model = disable_dropout(policies[arch].model).train()   # the update runs in train mode
    batch = _grouped_batch()
    weights = torch.randn(batch.completion_ids.shape, generator=torch.Generator().manual_seed(0))

    calls = []
    shared_fn = logprobs_module.shared_prompt_logits
    monkeypatch.setattr(logprobs_module, "shared_prompt_logits",
                        lambda *a, **k: calls.append(1) or shared_fn(*a, **k))
    shared = _logprobs_and_grads(model, batch, weights)
    # chunk=4 splits groups of 3 across micro-batches (rows 0-3, 4-7, 8): groups are found per
    # chunk, and the last chunk (one row) takes the one-pass path.
    chunked = _logprobs_and_grads(model, batch, weights, chunk=4)
    assert len(calls) == 3, "the prompt-shared path did not run"

    monkeypatch.setattr(logprobs_module, "prefix_cache", lambda model: None)  # force one pass
    one_pass = _logprobs_and_grads(model, batch, weights)
    assert len(calls) == 3, "the one-pass fallback was not taken"
    model.eval()

    real = batch.completion_mask > 0
    for got in (shared, chunked):
        torch.testing.assert_close(got[0][real], one_pass[0][real], atol=1e-5, rtol=0)
        torch.testing.assert_close(got[1][real], one_pass[1][real], atol=1e-5, rtol=0)
        assert got[2].keys() == one_pass[2].keys() and len(one_pass[2]) > 0
        for name, want in one_pass[2].items():
            err = (got[2][name] - want).norm() / want.norm().clamp(min=1e-12)
            assert err < 2e-5, f"{arch} {name}: relative gradient error {err:.2e}"
    # the prompt's forward gets gradient through the shared cache (embeddings of prompt tokens)
    embed = next(g for n, g in shared[2].items() if "embed_tokens" in n or n.endswith("wte.weight"))
    assert embed[40].abs().sum() > 0 and embed[50].abs().sum() > 0


def test_prompt_groups_only_join_identical_neighbours():
    batch = _grouped_batch()
    group, starts = shared_prompt.prompt_groups(batch.prompt_ids, batch.prompt_mask)
    assert group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert starts.tolist() == [True, False, False] * 3
    # same ids but a different mask (a real PAD token in the prompt) is a different prompt
    mask = batch.prompt_mask.clone()
    mask[1, 0] = 1
    assert shared_prompt.prompt_groups(batch.prompt_ids, mask)[0].tolist() == [0, 1, 2, 3, 3, 3, 4, 4, 4]
    assert shared_prompt.prompt_groups(batch.prompt_ids[::3], batch.prompt_mask[::3]) is None


def test_prompt_shared_path_declined_under_gradient_checkpointing(policies, monkeypatch):
    model = policies["llama"].model
    assert shared_prompt.prefix_cache(model) is not None
    monkeypatch.setattr(shared_prompt, "_checkpointing", lambda model: True)
    assert shared_prompt.prefix_cache(model) is None


# -- bf16 emulation on CPUs without bf16 matmul kernels ---------------------------------------

def _linear_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, generator=g)
    w = torch.randn(48, 64, generator=g) / 8
    b = torch.randn(48, generator=g)
    return x, w, b


def test_bf16_emulation_matches_native_bf16_linear(monkeypatch):
    monkeypatch.setattr(bf16_emulation, "native_cpu_bf16", lambda: False)    # emulate even on AMX CPUs
    x, w, b = _linear_case()
    native = F.linear(x.bfloat16(), w.bfloat16(), b.bfloat16())      # PyTorch's bf16 kernel
    w_leaf = w.clone().requires_grad_(True)
    with bf16_emulation.autocast("cpu", torch.bfloat16):
        emulated = F.linear(x, w_leaf, b)
    assert emulated.dtype == torch.bfloat16
    torch.testing.assert_close(emulated.float(), native.float(), atol=1e-2, rtol=1e-2)
    # it is bf16 arithmetic, not fp32 relabelled: the fp32 result is further from the bf16 kernel
    fp32 = F.linear(x, w, b)
    assert (emulated.float() - native.float()).abs().max() < (fp32 - native.float()).abs().max()
    # the backward pass runs (fp32 GEMMs) and is the bf16 backward within bf16 tolerance
    emulated.float().sum().backward()
    w_native = w.bfloat16().requires_grad_(True)
    F.linear(x.bfloat16(), w_native, b.bfloat16()).float().sum().backward()
    torch.testing.assert_close(w_leaf.grad, w_native.grad.float(), atol=2e-2, rtol=1e-2)


def test_bf16_emulation_matches_native_bf16_model(policies, monkeypatch):
    model = policies["llama"].model.eval()
    batch = _grouped_batch()
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.completion_mask.long()], 1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            native = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        monkeypatch.setattr(bf16_emulation, "native_cpu_bf16", lambda: False)
        with bf16_emulation.autocast("cpu", torch.bfloat16):
            emulated = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
        fp32 = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    real = mask.bool()
    diff = (emulated.float() - native.float())[real].abs()
    assert diff.max() < 0.1 and diff.mean() < 1e-2
    assert diff.mean() < (fp32 - native.float())[real].abs().mean()


def test_autocast_is_plain_torch_autocast_with_native_bf16(monkeypatch):
    x, w, b = _linear_case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.linear(x, w, b)
    if bf16_emulation.native_cpu_bf16():
        with bf16_emulation.autocast("cpu", torch.bfloat16):
            got = F.linear(x, w, b)
        assert torch.equal(got, want)
    # whatever this CPU has: when it reports native bf16, autocast adds nothing of its own
    monkeypatch.setattr(bf16_emulation, "native_cpu_bf16", lambda: True)
    ctx = bf16_emulation.autocast("cpu", torch.bfloat16)
    assert isinstance(ctx, torch.autocast)
    with ctx:
        got = F.linear(x, w, b)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert isinstance(bf16_emulation.autocast("cpu", None), contextlib.nullcontext)
    with bf16_emulation.autocast("cpu", None):
        assert F.linear(x, w, b).dtype == torch.float32


# -- fused GELU ----------------------------------------------------------------------------------

def test_fuse_activations_keeps_gpt2_outputs(tmp_path):
    from transformers import AutoModelForCausalLM, activations

    model = AutoModelForCausalLM.from_pretrained(tiny_causal(tmp_path, arch="gpt2")).eval()
    slow = [m for m in model.modules() if isinstance(m, activations.NewGELUActivation)]
    assert len(slow) == 2          # one per MLP: from_pretrained alone does not fuse
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 50, 60], [PAD, PAD, 1, 50, 60, 61, 62, 70]])
    mask = (ids != PAD).long()
    before = model(input_ids=ids, attention_mask=mask).logits
    before.sum().backward()
    grad_before = model.transformer.wte.weight.grad.clone()
    model.zero_grad(set_to_none=True)

    assert fuse_activations(model) is model
    assert not any(isinstance(m, activations.NewGELUActivation) for m in model.modules())
    fused = [m for m in model.modules() if type(m).__name__ in ("GELUTanh", "PytorchGELUTanh")]
    assert len(fused) == 2
    after = model(input_ids=ids, attention_mask=mask).logits
    after.sum().backward()
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    grad_after = model.transformer.wte.weight.grad
    assert (grad_after - grad_before).norm() / grad_before.norm() < 1e-5
    # and the activation itself, over a wide range (where tanh saturates and where it does not)
    x = torch.linspace(-12, 12, 10001)
    torch.testing.assert_close(fused[0](x), activations.NewGELUActivation()(x), atol=1e-6, rtol=0)


def test_load_policy_fuses_gpt2_and_leaves_llama(policies):
    from transformers import activations

    gpt2, llama = policies["gpt2"].model, policies["llama"].model
    assert not any(isinstance(m, activations.NewGELUActivation) for m in gpt2.modules())
    assert any(type(m).__name__ in ("GELUTanh", "PytorchGELUTanh") for m in gpt2.modules())
    assert not any(type(m).__name__ in ("GELUTanh", "PytorchGELUTanh") for m in llama.modules())


@pytest.mark.parametrize("native", [True, False])
def test_cast_frozen_once_samples_the_same_tokens_with_lora(tmp_path, monkeypatch, native):
    """LoRA sampling in bf16 with the frozen base weights cast once per block gives the tokens and
    log-probabilities of casting them at every call, bit for bit (native autocast and the emulation),
    and leaves the base frozen afterwards."""
    from rlft.config import LoraConfig, ModelConfig
    from rlft.models import load_policy
    from rlft.models.lora import apply_lora
    from rlft.rollout import plain

    if native and not bf16_emulation.native_cpu_bf16():
        pytest.skip("this CPU has no native bf16 matmuls")
    monkeypatch.setattr(bf16_emulation, "native_cpu_bf16", lambda: native)
    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal(tmp_path))), device="cpu")
    apply_lora(policy, LoraConfig(r=4))
    with torch.no_grad():  # a trained adapter: B != 0, so the adapter's path changes the numbers
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) / 4)
    sampler = plain.PlainSampler(policy, autocast=torch.bfloat16)
    base = [p for p in policy.model.parameters() if not p.requires_grad]
    seen = []
    hook = policy.model.get_input_embeddings().register_forward_hook(
        lambda *_: seen.append(all(p.requires_grad for p in base)))

    def sample():
        return sampler.sample(["the cat sat", "a dog ran in the park"], 3, temperature=1.0, max_new_tokens=6,
                              generator=torch.Generator().manual_seed(0))

    once = sample()
    assert seen and all(seen), "the frozen weights were not flagged inside the sampling block"
    assert not any(p.requires_grad for p in base)
    seen.clear()
    monkeypatch.setattr(plain, "cast_frozen_once", lambda model, enabled=True: contextlib.nullcontext())
    every_call = sample()
    hook.remove()
    assert seen and not any(seen)
    assert torch.equal(once.completion_ids, every_call.completion_ids)
    assert torch.equal(once.logprobs, every_call.logprobs)
    with pytest.raises(RuntimeError, match="no-grad"):
        with bf16_emulation.cast_frozen_once(policy.model):
            pass


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("native", [True, False])
def test_a_bf16_reference_copy_gives_the_numbers_of_the_fp32_copy_under_autocast(tmp_path, arch, native,
                                                                                  monkeypatch):
    """load_reference(bf16=True): linear weights stored in bf16 (a head tied to the embeddings is
    not), the logits under bf16 autocast bit for bit those of the fp32 copy, the policy untouched."""
    from rlft.config import ModelConfig
    from rlft.models import load_policy, load_reference

    if native and not bf16_emulation.native_cpu_bf16():
        pytest.skip("this CPU has no native bf16 matmuls")
    monkeypatch.setattr(bf16_emulation, "native_cpu_bf16", lambda: native)
    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal(tmp_path, arch=arch))), device="cpu")
    fp32, bf16 = load_reference(policy).model, load_reference(policy, bf16=True).model
    dtypes = {n: p.dtype for n, p in bf16.named_parameters()}
    assert torch.bfloat16 in dtypes.values() and bf16.dtype == torch.float32
    assert dtypes[next(n for n in dtypes if "embed_tokens" in n or n.endswith("wte.weight"))] == torch.float32
    assert all(p.dtype == torch.float32 and p.requires_grad for p in policy.model.parameters())
    ids = torch.tensor([[5, 9, 12, 7, 3, 30], [8, 8, 2, 41, 17, 6]])
    with torch.no_grad(), bf16_emulation.autocast("cpu", torch.bfloat16):
        want, got = fp32(input_ids=ids).logits, bf16(input_ids=ids).logits
    assert torch.equal(got, want)
