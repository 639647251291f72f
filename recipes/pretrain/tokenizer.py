"""Step 2 of the pretraining recipe (``python -m recipes.pretrain``): the tokenizer, and the
packed rows pretraining reads.

Byte-level BPE (``tokenizers``), trained on a sample with a fixed Chinese share so that common CJK
characters get tokens of their own. ``<|endoftext|>`` is EOS and BOS, and ``<|pad|>`` a separate
pad token; nothing is prepended to a text (no BOS), documents are separated by EOS.
"""

from __future__ import annotations

import random
import re
from typing import Any

from recipes.pretrain.config import PretrainConfig
from recipes.pretrain.corpus import Document

EOS, PAD = "<|endoftext|>", "<|pad|>"


def tokenizer_sample(docs: list[Document], cfg: PretrainConfig) -> list[str]:
    """A seeded sample of ``tokenizer_sample_mb`` million characters, ``tokenizer_zh_share``
    of them from Chinese sources (the zh catalogs and the translation references)."""
    rng = random.Random(cfg.seed)
    zh, other = [], []
    for d in docs:
        for text in (d.text, d.completion):
            if text:
                (zh if d.source == "zh" or (d.completion is text and d.source == "task:translation") else other).append(text)
    budget = int(cfg.tokenizer_sample_mb * 1e6)
    sample = []
    for pool, share in ((zh, cfg.tokenizer_zh_share), (other, 1 - cfg.tokenizer_zh_share)):
        rng.shuffle(pool)
        used = 0
        for text in pool:
            if used >= share * budget:
                break
            sample.append(text)
            used += len(text)
    return sample


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int = 1024) -> Any:
    """Byte-level BPE (GPT-2 pre-tokenization), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # No BOS is prepended: documents are separated by EOS in pretraining, and prompts start
    # the context as they do in SFT/RL; bos_token is set (to EOS) only for code that asks for one.
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   padding_side="left", model_max_length=max_length,
                                   clean_up_tokenization_spaces=False)


def encode_documents(tokenizer: Any, docs: list[Document]) -> list[list[int]]:
    """Token ids of each document, EOS-terminated; a task document is ids(prompt) + ids(reference)."""
    def ids(texts: list[str]) -> list[list[int]]:  # the Rust tokenizer: batched, no length warning
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]

    texts = ids([d.text for d in docs])
    with_completion = [i for i, d in enumerate(docs) if d.completion is not None]
    completions = dict(zip(with_completion, ids([docs[i].completion for i in with_completion])))
    eos = tokenizer.eos_token_id
    return [t + completions.get(i, []) + [eos] for i, t in enumerate(texts)]


def cjk_coverage(tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """How many CJK characters are single tokens, and the share of CJK occurrences in ``texts``
    that such characters cover."""
    vocab = tokenizer.get_vocab()
    singles = set()
    for token in vocab:
        text = tokenizer.convert_tokens_to_string([token])
        if len(text) == 1 and "\u3400" <= text <= "\u9fff":
            singles.add(text)
    seen = [ch for t in texts for ch in t if "\u3400" <= ch <= "\u9fff"]
    covered = sum(ch in singles for ch in seen) / len(seen) if seen else 0.0
    multi_char = sum(1 for token in vocab if len(re.findall(r"[\u3400-\u9fff]", tokenizer.convert_tokens_to_string([token]))) > 1)
    return {"single_cjk_tokens": len(singles), "multi_cjk_tokens": multi_char, "validation_cjk_covered": covered}


def pack(token_docs: list[list[int]], seq_len: int) -> Any:
    """Concatenate EOS-terminated documents and cut into rows of ``seq_len`` (the tail is dropped).
    Attention crosses document boundaries, as in GPT-2-style packing; EOS marks them."""
    import torch

    flat = [t for doc_ids in token_docs for t in doc_ids]
    n = len(flat) // seq_len
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (N, T)
