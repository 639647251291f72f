"""LoRA through PEFT: target modules per architecture, the settings' checks, the merged export."""

from __future__ import annotations

import pytest
import torch

from rlft.config import LoraConfig, ModelConfig, load_config
from rlft.errors import RlftError
from rlft.models import load_policy
from rlft.models.lora import apply_lora, is_adapter, target_modules
from tests.tiny import tiny_causal, tiny_seq2seq


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return {"llama": tiny_causal(root), "gpt2": tiny_causal(root, arch="gpt2"), "seq2seq": tiny_seq2seq(root)}


def _fresh(dirs, name):
    return load_policy(ModelConfig(name_or_path=str(dirs[name])))


@pytest.mark.parametrize("name, expected", [
    ("llama", ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]),
    ("gpt2", ["c_attn", "c_fc", "c_proj"]),
    ("seq2seq", ["k", "o", "q", "v", "wi", "wo"]),
])
def test_auto_targets_are_the_attention_and_mlp_projections(dirs, name, expected):
    assert target_modules(_fresh(dirs, name).model, "auto") == expected


def test_a_comma_list_is_checked_against_the_model(dirs):
    model = _fresh(dirs, "llama").model
    assert target_modules(model, " q_proj, v_proj ") == ["q_proj", "v_proj"]
    with pytest.raises(RlftError, match=r"lora.target_modules: no linear layer named 'qkv'.*q_proj"):
        target_modules(model, "q_proj,qkv")
    with pytest.raises(RlftError, match="no linear layer named 'lm_head'"):  # the output head is never a target
        target_modules(model, "lm_head")


@pytest.mark.parametrize("override, message", [
    ("lora.r=-1", "lora.r must be >= 0"),
    ("lora.alpha=0", "lora.alpha must be > 0"),
    ("lora.dropout=1", r"lora.dropout must be in \[0, 1\)"),
    ("lora.target_modules=' , '", "lora.target_modules must be"),
])
def test_settings_are_checked_at_config_time(override, message):
    with pytest.raises(RlftError, match=message):
        load_config(None, [override])
    assert load_config(None, ["lora.r=8", "lora.dropout=0.05"]).lora.r == 8


@pytest.mark.parametrize("name", ["llama", "gpt2", "seq2seq"])
def test_only_adapter_weights_train_and_the_fresh_adapter_changes_nothing(dirs, name):
    policy = _fresh(dirs, name)
    x = torch.tensor([[5, 6, 7, 8, 9]])
    kw = {"decoder_input_ids": x} if policy.is_seq2seq else {}
    with torch.no_grad():
        before = policy.model(input_ids=x, **kw).logits
    model = policy.model
    apply_lora(policy, LoraConfig(r=4))
    assert policy.model is model and is_adapter(policy.trainable) and not is_adapter(policy.model)
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    with torch.no_grad():  # B = 0 at the start: the adapted policy is the base policy
        torch.testing.assert_close(policy.model(input_ids=x, **kw).logits, before, atol=0, rtol=0)
    adapter = policy.adapter
    apply_lora(policy, LoraConfig(r=4))  # idempotent: reused parts keep their adapter
    assert policy.adapter is adapter


@pytest.mark.parametrize("name", ["llama", "gpt2", "seq2seq"])
def test_final_is_a_merged_model_with_the_adapter_beside_it(dirs, name, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from rlft.training.checkpoint import export_final

    policy = _fresh(dirs, name)
    apply_lora(policy, LoraConfig(r=4, alpha=8))
    with torch.no_grad():  # a trained adapter: B != 0
        g = torch.Generator().manual_seed(0)
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    base_before = {k: v.clone() for k, v in policy.model.state_dict().items() if "base_layer" in k}
    out = export_final(tmp_path, policy.trainable, policy.tokenizer)
    auto = AutoModelForSeq2SeqLM if policy.is_seq2seq else AutoModelForCausalLM
    x = torch.tensor([[5, 6, 7, 8, 9]])
    kw = {"decoder_input_ids": x} if policy.is_seq2seq else {}
    with torch.no_grad():
        adapted = policy.model(input_ids=x, **kw).logits
        merged = auto.from_pretrained(out).eval()(input_ids=x, **kw).logits
        base = auto.from_pretrained(dirs[name]).eval()
        plain = base(input_ids=x, **kw).logits
        reloaded = PeftModel.from_pretrained(base, out / "adapter").eval()(input_ids=x, **kw).logits
    assert (adapted - plain).abs().max() > 1e-3  # the adapter does change the outputs
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reloaded, adapted, atol=1e-5, rtol=1e-5)
    for k, v in policy.model.state_dict().items():  # exporting leaves the policy's base weights as they were
        if k in base_before:
            assert torch.equal(v, base_before[k]), k


def _trained_adapter(policy, seed=1):
    with torch.no_grad():  # B != 0: the adapter changes the numbers
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) / 4)


@pytest.mark.parametrize("name", ["llama", "gpt2", "seq2seq"])
@pytest.mark.parametrize("native", [True, False])
def test_a_bf16_base_gives_the_numbers_of_bf16_autocast_on_the_fp32_base(dirs, name, native, monkeypatch):
    """keep_base_in_bf16: under bf16 autocast, logits and adapter gradients bit for bit those of the
    fp32 base (native kernels and the emulation), half the base's bytes, model.dtype unchanged; the
    merged export is fp32: the rounded base plus the adapter's delta."""
    from rlft.models import bf16_emulation
    from rlft.models.lora import keep_base_in_bf16, merged_state_dict

    if native and not bf16_emulation.native_cpu_bf16():
        pytest.skip("this CPU has no native bf16 matmuls")
    monkeypatch.setattr(bf16_emulation, "native_cpu_bf16", lambda: native)
    policy = _fresh(dirs, name)
    apply_lora(policy, LoraConfig(r=4, dropout=0.0))
    _trained_adapter(policy)
    model = policy.model.eval()  # no dropout: the two runs see the same network
    ids = torch.tensor([[5, 9, 12, 7, 3, 30], [8, 8, 2, 41, 17, 6]])
    inputs = {"input_ids": ids, "labels": ids} if policy.is_seq2seq else {"input_ids": ids}

    def run():
        model.zero_grad(set_to_none=True)
        with bf16_emulation.autocast("cpu", torch.bfloat16):
            logits = model(**inputs).logits
        (logits.float() * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    def base_bytes():
        return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "base_layer" in n)

    fp32_logits, fp32_grads = run()
    before, dtype = base_bytes(), model.dtype
    assert keep_base_in_bf16(policy) > 0
    assert keep_base_in_bf16(policy) == 0  # done once
    assert base_bytes() < 0.6 * before and model.dtype == dtype == torch.float32
    bf16_logits, bf16_grads = run()
    assert torch.equal(bf16_logits, fp32_logits)
    assert fp32_grads.keys() == bf16_grads.keys() and len(fp32_grads) > 0
    for n, g in fp32_grads.items():
        assert torch.equal(bf16_grads[n], g), n
    merged = merged_state_dict(policy.adapter)
    assert all(t.dtype == torch.float32 for t in merged.values() if t.is_floating_point())
    from peft.tuners.lora import LoraLayer
    prefix, layer = next((n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer))
    want = layer.get_base_layer().weight.float() + layer.get_delta_weight("default").float()
    assert torch.equal(merged[f"{prefix}.weight"], want)


@pytest.mark.parametrize("name", ["llama", "gpt2", "seq2seq"])
def test_init_adapter_starts_from_the_saved_adapter_and_the_reference_stays_there(dirs, name, tmp_path):
    """lora.init_adapter: the policy starts as the saved run's policy; the KL reference is that
    policy (not the base model) while the trained adapter moves; only the trained adapter has
    gradients and is saved; the reference switch leaves every requires_grad flag as it was."""
    from rlft.models import load_reference
    from rlft.training.checkpoint import export_final

    saved = _fresh(dirs, name)
    apply_lora(saved, LoraConfig(r=4, alpha=8))
    _trained_adapter(saved)
    first = export_final(tmp_path / "first", saved.trainable, saved.tokenizer)
    x = torch.tensor([[5, 6, 7, 8, 9]])
    kw = {"decoder_input_ids": x} if saved.is_seq2seq else {}

    def logits(model):
        with torch.no_grad():
            return model(input_ids=x, **kw).logits

    want, base = logits(saved.model), logits(_fresh(dirs, name).model)
    assert (want - base).abs().max() > 1e-2  # the saved adapter does change the outputs

    policy = _fresh(dirs, name)
    apply_lora(policy, LoraConfig(r=4, alpha=8, init_adapter=str(first)))  # a run's final/: its adapter/ is read
    torch.testing.assert_close(logits(policy.model), want, atol=1e-6, rtol=1e-6)
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)
    reference = load_reference(policy)
    with torch.no_grad():  # a training step moves the trained adapter
        for n, p in policy.model.named_parameters():
            if "lora_B.default" in n:
                p.add_(0.5)
    moved = logits(policy.model)
    assert (moved - want).abs().max() > 1e-2
    with reference.active() as ref:
        torch.testing.assert_close(logits(ref), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits(policy.model), moved, atol=0, rtol=0)  # the trained adapter is back
    assert {n for n, p in policy.model.named_parameters() if p.requires_grad} == trainable

    out = export_final(tmp_path / "second", policy.trainable, policy.tokenizer)
    assert not [p for p in (out / "adapter").iterdir() if p.is_dir()]  # peft puts other adapters in subfolders
    again = _fresh(dirs, name)  # the second run's adapter, loaded the same way, is the moved policy
    apply_lora(again, LoraConfig(r=4, alpha=8, init_adapter=str(out / "adapter")))
    torch.testing.assert_close(logits(again.model), moved, atol=1e-6, rtol=1e-6)


def test_init_adapter_errors_name_the_setting_and_the_difference(dirs, tmp_path):
    from rlft.training.checkpoint import export_final

    saved = _fresh(dirs, "llama")
    apply_lora(saved, LoraConfig(r=4, alpha=8, target_modules="q_proj,v_proj"))
    first = export_final(tmp_path / "first", saved.trainable, saved.tokenizer)
    with pytest.raises(RlftError, match=r"lora.init_adapter: .*adapter_config.json was saved with r 4 \(this run: 8\); "
                                        r"lora_alpha 8 \(this run: 16.0\); target_modules"):
        apply_lora(_fresh(dirs, "llama"), LoraConfig(r=8, init_adapter=str(first)))
    with pytest.raises(RlftError, match=r"lora.init_adapter: no adapter_model.safetensors in .*nowhere"):
        apply_lora(_fresh(dirs, "llama"), LoraConfig(r=4, init_adapter=str(tmp_path / "nowhere")))
    with pytest.raises(RlftError, match=r"lora.init_adapter needs lora.r > 0"):
        load_config(None, [f"lora.init_adapter={first}"])
    other = tiny_causal(tmp_path, arch="gpt2")  # the same settings on another model: its shapes do not fit
    (first / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(RlftError, match=r"adapter_model.safetensors: adapter weights do not fit this (model|run)"):
        apply_lora(load_policy(ModelConfig(name_or_path=str(other))),
                   LoraConfig(r=4, alpha=8, target_modules="c_attn", init_adapter=str(first)))
