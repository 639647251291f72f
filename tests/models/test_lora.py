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
