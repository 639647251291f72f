"""Settings of the pretraining recipe (``python -m recipes.pretrain [key=value ...]``): one frozen
dataclass, parsed from ``key=value`` overrides."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from rlft.config import doc
from rlft.errors import RlftError
from rlft.models.loading import BUNDLED_DIR

TASK_NAMES = "translation,summarization,dialogue,code_summary"


@dataclass(frozen=True)
class PretrainConfig:
    output_dir: str = doc(str(BUNDLED_DIR), "Where the model, tokenizer, curves and card are written (replaced atomically).")
    tasks: str = doc(TASK_NAMES, "Comma-separated bundled tasks whose train splits enter the corpus and the SFT phase.")
    tasks_dir: str = doc("", "Directory holding <task>/{train,validation,test}.jsonl.gz; empty: the bundled snapshots.")
    task_mb: float = doc(3.0, "Cap per task on its train split in the pretraining corpus, in MB (all of it in SFT).")
    doc_mb: float = doc(4.0, "Cap on English text from /usr/share/doc, in MB of UTF-8.")
    license_mb: float = doc(0.3, "Cap on /usr/share/common-licenses, in MB.")
    code_mb: float = doc(3.0, "Cap on Python standard-library source, in MB.")
    zh_mb: float = doc(4.0, "Cap on Chinese msgstr text from the zh_CN/zh_TW catalogs, in MB.")
    heldout_fraction: float = doc(0.01, "Share of corpus documents (by hash) kept out of training for the held-out loss.")
    vocab_size: int = doc(8192, "BPE vocabulary size, special tokens included.")
    tokenizer_sample_mb: float = doc(6.0, "Characters (in millions) of the corpus sample the tokenizer is trained on.")
    tokenizer_zh_share: float = doc(0.3, "Share of Chinese text in that sample (common CJK characters need it to become tokens).")
    hidden_size: int = doc(256, "Model width.")
    num_layers: int = doc(6, "Decoder layers.")
    num_heads: int = doc(4, "Attention heads (no grouped-query attention).")
    intermediate_size: int = doc(704, "SwiGLU inner width.")
    max_positions: int = doc(1024, "max_position_embeddings of the saved config (RoPE has no position table).")
    seq_len: int = doc(256, "Tokens per packed pretraining row.")
    batch_size: int = doc(8, "Packed rows per pretraining step (small: on a CPU, more updates beat bigger batches).")
    lr: float = doc(1.5e-3, "Peak pretraining learning rate.")
    min_lr_ratio: float = doc(0.1, "The cosine decays to lr * min_lr_ratio.")
    warmup_steps: int = doc(30, "Linear warm-up steps (pretraining).")
    weight_decay: float = doc(0.1, "AdamW weight decay on matrices (not on norms).")
    pretrain_minutes: float = doc(62.0, "Pretraining wall-clock budget; the cosine runs over it (0: steps only).")
    pretrain_steps: int = doc(0, "Pretraining step cap (0: the minutes budget only).")
    eval_every: int = doc(50, "Held-out loss every N pretraining steps.")
    log_every: int = doc(10, "Log the mean training loss every N steps.")
    sft_minutes: float = doc(12.0, "Multi-task SFT wall-clock budget (0 with sft_steps=0: no SFT).")
    sft_steps: int = doc(0, "SFT step cap (0: the minutes budget only).")
    sft_lr: float = doc(5e-4, "Peak SFT learning rate (10 warm-up steps, cosine to 10%).")
    sft_batch_per_task: int = doc(4, "Examples of each task in one SFT step.")
    sft_max_tokens: int = doc(512, "Longest SFT sequence; longer prompts keep their end.")
    eval_examples: int = doc(24, "Validation prompts per task decoded greedily for the card's metrics (0: skip).")
    precision: str = doc("fp32", "'fp32' or 'bf16' (CPU autocast, fp32 master weights). bf16 matmuls are ~30x slower on CPUs without AVX512-BF16.")
    threads: int = doc(2, "torch CPU threads.")
    seed: int = doc(0, "Seed of initialisation, data order and sampling.")


def parse_config(args: list[str]) -> PretrainConfig:
    """``['vocab_size=512', 'pretrain_minutes=0.1']`` -> PretrainConfig (values parsed as YAML)."""
    import typing

    from rlft.config import _coerce, parse_overrides

    types = typing.get_type_hints(PretrainConfig)
    values = {}
    for key, value in parse_overrides(args).items():
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RlftError(f"command line: unknown pretrain setting '{key}'{hint}")
        values[key] = _coerce(value, types[key], key, "command line")
    config = PretrainConfig(**values)
    if config.precision not in ("fp32", "bf16"):
        raise RlftError(f"command line: precision must be 'fp32' or 'bf16', got {config.precision!r}")
    if config.pretrain_minutes <= 0 and config.pretrain_steps <= 0:
        raise RlftError("command line: set pretrain_minutes or pretrain_steps above 0")
    return config
