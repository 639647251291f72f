"""GGUF model sources: a .gguf file, or a directory + model.gguf_file, load like the model they hold."""

from __future__ import annotations

import pytest
import torch

from rlft.config import ModelConfig
from rlft.errors import RlftError
from rlft.models import load_policy
from tests.tiny import EOS, tiny_causal, tiny_gguf

TEXTS = ["the cat sat on the mat", "hello world, 12 numbers"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The tiny Llama as a safetensors directory and as ``gguf/tiny.gguf``."""
    root = tmp_path_factory.mktemp("gguf")
    model_dir = tiny_causal(root)
    (root / "gguf").mkdir()
    return model_dir, tiny_gguf(model_dir, root / "gguf" / "tiny.gguf")


def _logits(policy, texts=TEXTS):
    batch = policy.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return policy.model(**batch).logits, batch.input_ids


@pytest.mark.parametrize("form", ["file", "dir+gguf_file"])
def test_gguf_loads_the_same_model_and_tokenizer_as_its_source(source, form):
    model_dir, gguf_path = source
    cfg = (ModelConfig(name_or_path=str(gguf_path)) if form == "file"
           else ModelConfig(name_or_path=str(gguf_path.parent), gguf_file=gguf_path.name))
    ref, got = load_policy(ModelConfig(name_or_path=str(model_dir))), load_policy(cfg)
    (ref_logits, ref_ids), (got_logits, got_ids) = _logits(ref), _logits(got)
    assert torch.equal(got_ids, ref_ids)  # same vocabulary, merges, BOS and left padding
    torch.testing.assert_close(got_logits, ref_logits, rtol=0, atol=1e-5)  # F32 tensors: exact up to fp order
    assert not got.is_seq2seq and got.tokenizer.padding_side == "left"
    assert got.model.generation_config.eos_token_id == EOS and got.tokenizer.eos_token == "</s>"
    chat = got.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_gguf_loaded_model_saves_and_reloads_as_safetensors(source, tmp_path):
    # transformers' own GGUF-loaded model refuses save_pretrained; checkpoints need a plain one.
    _, gguf_path = source
    policy = load_policy(ModelConfig(name_or_path=str(gguf_path)))
    assert getattr(policy.model, "hf_quantizer", None) is None
    policy.model.save_pretrained(tmp_path / "saved")
    policy.tokenizer.save_pretrained(tmp_path / "saved")
    again = load_policy(ModelConfig(name_or_path=str(tmp_path / "saved")))
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    torch.testing.assert_close(_logits(again)[0], _logits(policy)[0], rtol=0, atol=0)
    assert again.tokenizer.chat_template == policy.tokenizer.chat_template


def test_gguf_settings_errors_name_the_setting(source, tmp_path):
    _, gguf_path = source
    with pytest.raises(RlftError, match=r"^model\.gguf_file: no file 'other\.gguf'"):
        load_policy(ModelConfig(name_or_path=str(gguf_path.parent), gguf_file="other.gguf"))
    with pytest.raises(RlftError, match=r"^model\.name_or_path: '.*missing\.gguf' does not exist"):
        load_policy(ModelConfig(name_or_path=str(tmp_path / "missing.gguf")))
    with pytest.raises(RlftError, match=r"^model\.kind: a GGUF file holds a decoder-only model"):
        load_policy(ModelConfig(name_or_path=str(gguf_path), kind="seq2seq"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(RlftError, match=r"^model\.name_or_path: cannot load"):
        load_policy(ModelConfig(name_or_path=str(tmp_path / "junk.gguf")))


def test_a_gguf_file_can_be_the_tokenizer(source):
    model_dir, gguf_path = source
    policy = load_policy(ModelConfig(name_or_path=str(model_dir), tokenizer=str(gguf_path)))
    assert policy.tokenizer.chat_template is not None  # only the GGUF has one
    assert policy.tokenizer(TEXTS[0]).input_ids == load_policy(
        ModelConfig(name_or_path=str(model_dir))).tokenizer(TEXTS[0]).input_ids
