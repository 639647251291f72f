"""Chat models: SFT targets end with the chat template's end-of-turn token, and decoding stops at it."""

from __future__ import annotations

import torch

from rlft.config import ModelConfig, load_config
from rlft.models import load_policy
from rlft.rollout import PlainSampler
from rlft.training import sft as sft_module
from tests.conftest import tiny_overrides
from tests.tiny import EOS, tiny_causal, tiny_chat_tokenizer


def test_encode_pairs_ends_targets_with_the_given_token():
    tok = tiny_chat_tokenizer()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    kw = dict(is_seq2seq=False, max_prompt_tokens=32, overlong="truncate", max_target_tokens=8)
    chat = sft_module.encode_pairs(tok, ["the cat", "hello"], ["the mat", "a dog ran"], end_id=im_end, **kw)
    plain = sft_module.encode_pairs(tok, ["the cat", "hello"], ["the mat", "a dog ran"], **kw)
    for enc, end in ((chat, im_end), (plain, EOS)):
        last = enc.completion_mask.sum(1).long() - 1
        assert enc.completion_ids[torch.arange(2), last].tolist() == [end, end]
    assert torch.equal(chat.completion_ids[chat.completion_ids != im_end], plain.completion_ids[plain.completion_ids != EOS])


def test_sft_with_chat_template_targets_end_with_im_end(tmp_path, tiny_dataset, monkeypatch):
    seen = []
    real = sft_module.encode_pairs

    def spy(tokenizer, prompts, targets, **kw):
        enc = real(tokenizer, prompts, targets, **kw)
        seen.append((prompts, enc))
        return enc

    monkeypatch.setattr(sft_module, "encode_pairs", spy)
    model_dir = tiny_causal(tmp_path, chat=True)
    cfg = load_config(None, tiny_overrides(model_dir, tiny_dataset, tmp_path / "sft", **{
        "data.template": "chat", "data.instruction": "reverse: {prompt}", "run.steps": 1, "sft.batch_size": 4}))
    sft_module.sft(cfg)
    im_end = tiny_chat_tokenizer().convert_tokens_to_ids("<|im_end|>")
    prompts, enc = seen[0]
    assert all(p.startswith("<|im_start|>user\nreverse: ") and p.endswith("<|im_start|>assistant\n") for p in prompts)
    last = enc.completion_mask.sum(1).long() - 1
    assert (enc.completion_ids[torch.arange(len(prompts)), last] == im_end).all()
    assert not (enc.completion_ids == EOS).any()  # eos_token alone is not the chat model's stop


def test_decoding_stops_at_the_end_of_turn_token(tmp_path):
    policy = load_policy(ModelConfig(name_or_path=str(tiny_causal(tmp_path, chat=True))), device="cpu")
    im_end = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    head = policy.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[im_end] = 100.0  # the model always ends its turn at once
    policy.model.lm_head = biased
    prompt = policy.tokenizer.apply_chat_template([{"role": "user", "content": "the cat"}], tokenize=False,
                                                  add_generation_prompt=True)
    r = PlainSampler(policy, max_prompt_tokens=64).greedy([prompt, prompt], max_new_tokens=6)
    assert r.completion_ids[:, 0].tolist() == [im_end, im_end]
    assert r.lengths.tolist() == [1, 1] and not r.truncated.any() and r.texts == ["", ""]


def test_sft_cuts_an_overlong_prompt_inside_its_field(tmp_path, monkeypatch):
    from tests.conftest import write_jsonl

    seen = []
    real = sft_module.encode_pairs

    def spy(tok, prompts, targets, **kw):
        enc = real(tok, prompts, targets, **kw)
        seen.append(enc)
        return enc

    monkeypatch.setattr(sft_module, "encode_pairs", spy)
    long = " ".join(["the cat sat on a mat"] * 30)
    data = {k: str(write_jsonl(tmp_path / f"{k}.jsonl", [{"prompt": f"{k} {i} {long}", "reference": "a mat"}
                                                         for i in range(4)])) for k in ("train", "validation", "test")}
    cfg = load_config(None, tiny_overrides(tiny_causal(tmp_path, chat=True), data, tmp_path / "sft", **{
        "data.template": "chat", "data.instruction": "reverse: {prompt}", "run.steps": 1, "sft.batch_size": 4,
        "data.max_prompt_tokens": 40}))
    sft_module.sft(cfg)
    tok = tiny_chat_tokenizer()
    enc = seen[0]
    for ids, mask in zip(enc.prompt_ids, enc.prompt_mask):
        text = tok.decode(ids[mask.bool()]).removeprefix(tok.bos_token or "")
        # the model sees the whole chat frame and the instruction; the cut is inside the prompt text
        assert text.startswith("<|im_start|>user") and "reverse:" in text and len(ids[mask.bool()]) <= 40
