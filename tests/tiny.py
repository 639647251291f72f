"""Tiny models and tokenizers built offline, for tests that need a real transformers model.

``tiny_causal(tmp_path)`` and ``tiny_seq2seq(tmp_path)`` save a randomly initialised model and its
tokenizer to a directory and return that directory, so tests load them with ``load_policy`` exactly
as a user's checkpoint would be loaded. Both are seeded and take well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, in this order
PAD, BOS, EOS, UNK = range(4)

_CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park and the cat ran after it",
    "summarize: the meeting is moved to friday at noon",
    "translate to french: good morning, how are you?",
    "hello world, hello there, general kenobi",
    "numbers like 12, 345 and 6789 appear in text too",
    "rewards rise when the policy learns to copy the reference",
]


def tiny_tokenizer(kind: str):
    """A byte-level BPE tokenizer trained on a few sentences (about 300 tokens).

    ``kind='causal'`` prepends ``<s>``; ``kind='seq2seq'`` appends ``</s>`` (T5 style).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if kind == "causal":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS)])
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", EOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left" if kind == "causal" else "right")


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_chat_tokenizer():
    """The causal tokenizer with a ChatML chat template (SmolLM2/Qwen style): turns end with
    ``<|im_end|>``, a special token that is not its eos_token ``</s>``."""
    tokenizer = tiny_tokenizer("causal")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_causal(tmp_path: Path, *, seed: int = 0, arch: str = "llama", chat: bool = False) -> Path:
    """A 2-layer decoder-only model with a byte-level tokenizer, saved under ``tmp_path/tiny-<arch>``.

    ``arch='llama'`` (GQA, rotary positions) or ``'gpt2'`` (learned absolute positions, which is
    what catches wrong position ids under left padding: rotary attention only sees differences).
    ``chat=True``: the ChatML tokenizer of ``tiny_chat_tokenizer``, saved under ``tiny-<arch>-chat``.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_chat_tokenizer() if chat else tiny_tokenizer("causal")
    ids = {"pad_token_id": PAD, "bos_token_id": BOS, "eos_token_id": EOS, "tie_word_embeddings": False}
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, **ids))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32,
                                           n_layer=2, n_head=4, **ids))
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    _spread_logits(model.lm_head.weight)
    out = Path(tmp_path) / (f"tiny-{arch}-chat" if chat else f"tiny-{arch}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_seq2seq(tmp_path: Path, *, seed: int = 0) -> Path:
    """A 2+2-layer T5 with a byte-level tokenizer, saved under ``tmp_path/tiny-seq2seq``."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer("seq2seq")
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                      dropout_rate=0.1, pad_token_id=PAD, eos_token_id=EOS,
                      decoder_start_token_id=PAD, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    _spread_logits(model.lm_head.weight)
    out = Path(tmp_path) / "tiny-seq2seq"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _spread_logits(weight: torch.Tensor) -> None:
    # A freshly initialised head gives near-uniform next-token distributions, which makes argmax
    # ties and "every sample differs" trivially true; larger weights give peaked, realistic ones.
    with torch.no_grad():
        weight.mul_(3.0 / weight.norm(dim=-1, keepdim=True).mean())


GGUF_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                      "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_gguf(model_dir: Path, out: Path) -> Path:
    """Write the tiny Llama in ``model_dir`` (from ``tiny_causal``) as an F32 GGUF file at ``out``.

    transformers reads GGUF but cannot write it, so this follows llama.cpp's ``convert_hf_to_gguf.py``:
    llama.cpp names and hyper-parameter keys, q/k rows permuted for its rotary layout (transformers'
    loader permutes them back), and the byte-level BPE vocabulary, merges and special tokens as
    ``tokenizer.ggml.*`` metadata, with the chat template ``GGUF_CHAT_TEMPLATE``.
    """
    import json

    import gguf
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    rope_theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta") or getattr(c, "rope_theta", 10000.0)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)
    writer.add_chat_template(GGUF_CHAT_TEMPLATE)

    def permute(w: torch.Tensor, heads: int) -> torch.Tensor:  # llama.cpp's LlamaModel.permute
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for key, tensor in model.state_dict().items():
        stem, suffix = key.rsplit(".", 1)
        if stem.startswith("model.layers."):
            _, _, index, rest = stem.split(".", 3)
            name = f"blk.{index}.{layer[rest]}"
        else:
            name = names[stem]
        if name.endswith("attn_q"):
            tensor = permute(tensor, c.num_attention_heads)
        elif name.endswith("attn_k"):
            tensor = permute(tensor, c.num_key_value_heads)
        writer.add_tensor(f"{name}.{suffix}", tensor.float().numpy().copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


# Prompts of different lengths for the sampler's tests (left padding, rows ending apart).
TEXT_PROMPTS = ["the cat sat on the mat", "hello", "translate to french: good morning", "a dog ran"]


def stop_early(policy, rollout, monkeypatch) -> int:
    """A random tiny model rarely emits EOS: make a token it does emit (row 0's fourth) a second EOS,
    so rows end at different columns and finished rows keep decoding padding through the cache."""
    stop = int(rollout.completion_ids[0, 3])
    monkeypatch.setattr(policy.model.generation_config, "eos_token_id", [EOS, stop])
    return stop


# B = 3 prompts of unequal length, G = 3 completions each that end in EOS at different columns, then PAD
GROUPED_PROMPTS = [[1, 40, 41, 42, 43, 44], [1, 50], [1, 60, 61, 62]]
GROUPED_COMPLETIONS = [
    [[70, 71, EOS, PAD, PAD], [72, 73, 74, 75, 76], [EOS, PAD, PAD, PAD, PAD]],
    [[80, 81, 82, 83, 84], [80, EOS, PAD, PAD, PAD], [85, 86, 87, EOS, PAD]],
    [[90, EOS, PAD, PAD, PAD], [91, 92, 93, 94, EOS], [95, 96, 97, 98, 99]],
]


def grouped_batch(prompts: list[list[int]] = GROUPED_PROMPTS,
                  completions: list[list[list[int]]] = GROUPED_COMPLETIONS, *, extra_width: int = 0):
    """A Rollout-shaped batch: N = B * G rows, row i belongs to prompt i // G; prompts left-padded
    with PAD to the longest (plus ``extra_width`` columns that are padding in every row),
    completion masks ending after the first EOS."""
    from types import SimpleNamespace

    width = max(map(len, prompts)) + extra_width
    ids, mask, comp = [], [], []
    for prompt, group in zip(prompts, completions):
        for completion in group:
            ids.append([PAD] * (width - len(prompt)) + prompt)
            mask.append([0] * (width - len(prompt)) + [1] * len(prompt))
            comp.append(completion)
    comp = torch.tensor(comp)
    comp_mask = torch.ones(comp.shape)
    for i, row in enumerate(comp.tolist()):
        if EOS in row:
            comp_mask[i, row.index(EOS) + 1:] = 0
    return SimpleNamespace(prompt_ids=torch.tensor(ids), prompt_mask=torch.tensor(mask),
                           completion_ids=comp, completion_mask=comp_mask)


def logprobs_and_grads(model, batch, weights, **kwargs):
    """Completion log-probabilities, entropies and the gradients of a fixed loss of both."""
    from rlft.models.logprobs import completion_logprobs

    model.zero_grad(set_to_none=True)
    lp, ent = completion_logprobs(model, batch, is_seq2seq=False, with_entropy=True, **kwargs)
    ((lp * weights + 0.1 * ent) * batch.completion_mask).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return lp.detach(), ent.detach(), grads
