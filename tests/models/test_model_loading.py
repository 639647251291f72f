"""load_policy (kinds, errors, tokenizer fix-ups), disable_dropout, load_reference."""

import shutil

import pytest
import torch
from tests.tiny import EOS, tiny_causal, tiny_seq2seq

from rlft.config import ModelConfig
from rlft.errors import RlftError
from rlft.models import disable_dropout, load_policy, load_reference
from rlft.models import loading


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("m")
    return {"causal": tiny_causal(root), "seq2seq": tiny_seq2seq(root)}


def test_auto_kind_and_padding_side(dirs):
    causal = load_policy(ModelConfig(name_or_path=str(dirs["causal"])))
    seq2seq = load_policy(ModelConfig(name_or_path=str(dirs["seq2seq"])))
    assert not causal.is_seq2seq and type(causal.model).__name__ == "LlamaForCausalLM"
    assert seq2seq.is_seq2seq and type(seq2seq.model).__name__ == "T5ForConditionalGeneration"
    assert causal.tokenizer.padding_side == "left" and seq2seq.tokenizer.padding_side == "right"
    assert causal.name == str(dirs["causal"])
    assert next(causal.model.parameters()).dtype == torch.float32


def test_explicit_kind_mismatch_is_one_line_error(dirs):
    with pytest.raises(RlftError, match="model.name_or_path: cannot load") as err:
        load_policy(ModelConfig(name_or_path=str(dirs["causal"]), kind="seq2seq"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["./no-such-model", "/no/such/model", "~/no-such-model-xyz", "a/b/c"])
def test_missing_local_path(name):
    with pytest.raises(RlftError, match=r"model.name_or_path: '.*' does not exist \(no such directory; "
                                        r"hub names look like org/name\)"):
        load_policy(ModelConfig(name_or_path=name))


def test_hub_failure_is_one_line_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no retries
    with pytest.raises(RlftError, match="cannot load 'no-such-org-rlft/no-such-model'") as err:
        load_policy(ModelConfig(name_or_path="no-such-org-rlft/no-such-model"))
    assert "\n" not in str(err.value)


def test_bundled_model(dirs, monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "BUNDLED_DIR", tmp_path / "assets" / "base-model")
    with pytest.raises(RlftError, match="python -m recipes.pretrain"):
        load_policy(ModelConfig())
    shutil.copytree(dirs["causal"], tmp_path / "assets" / "base-model")
    policy = load_policy(ModelConfig())
    assert policy.name == "rlft-base" and not policy.is_seq2seq


def test_pad_token_falls_back_to_eos_and_tokenizer_override(dirs, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dirs["causal"])
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "nopad")
    policy = load_policy(ModelConfig(name_or_path=str(dirs["causal"]), tokenizer=str(tmp_path / "nopad")))
    assert policy.tokenizer.pad_token_id == EOS
    assert policy.tokenizer.padding_side == "left"


def test_disable_dropout_makes_training_forward_deterministic(dirs):
    model = load_policy(ModelConfig(name_or_path=str(dirs["seq2seq"]))).model
    assert model.config.dropout_rate == pytest.approx(0.1)
    model.train()
    x = torch.tensor([[5, 6, 7, EOS]])
    y = torch.tensor([[8, 9, EOS]])
    torch.manual_seed(0)
    a, b = model(input_ids=x, labels=y).logits, model(input_ids=x, labels=y).logits
    assert not torch.allclose(a, b)  # dropout is active before
    disable_dropout(model)
    assert model.config.dropout_rate == 0.0
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    a, b = model(input_ids=x, labels=y).logits, model(input_ids=x, labels=y).logits
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_reference_is_a_frozen_independent_copy(dirs):
    policy = load_policy(ModelConfig(name_or_path=str(dirs["causal"])))
    policy.model.train()
    reference = load_reference(policy, ModelConfig()).model
    assert not reference.training
    assert not any(p.requires_grad for p in reference.parameters())
    assert all(p.requires_grad for p in policy.model.parameters())
    before = reference.lm_head.weight.clone()
    with torch.no_grad():
        policy.model.lm_head.weight.add_(1.0)
    torch.testing.assert_close(reference.lm_head.weight, before, atol=0, rtol=0)
