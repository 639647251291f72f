"""The inputs every system shares: the prompt pool and the model directories, built once under
the scratch directory and loaded by every run. A model is one of ``GPT2_SIZES`` (random weights,
the pool's tokenizer), ``rlft-base``, or a model rlft obtains offline by name (``rlft models``:
``smollm2-135m``, the real SmolLM2-135M-Instruct, loaded from its cached checkpoint)."""

from __future__ import annotations

import gzip
import json
import statistics
import sys
from pathlib import Path

TEMPLATE = "Translate to Chinese: {prompt}\nChinese:"
FALLBACK_PROMPTS = [  # used when the translation snapshot is not there
    ("could not close data file", "无法关闭数据文件"),
    ("name commits with their object names", "以对象名字命名提交"),
    ("ELF file OS ABI invalid", "ELF 文件 OS ABI 无效"),
    ("show the working tree status", "显示工作区状态"),
    ("cannot open file for writing", "无法打开文件进行写入"),
    ("print version information and exit", "打印版本信息并退出"),
    ("the network connection was lost", "网络连接已断开"),
    ("invalid option to the command", "命令的选项无效"),
]
# name -> GPT2Config fields (the vocabulary comes from the tokenizer)
GPT2_SIZES = {"gpt2-10m": dict(n_embd=256, n_layer=10, n_head=4), "gpt2-30m": dict(n_embd=512, n_layer=8, n_head=8)}


def prepare(work: Path, models: list[str], pool: int) -> dict[str, str]:
    """Write the prompt pool and every model directory under ``work``; returns name -> directory."""
    from rlft.models import registry
    from rlft.models.loading import BUNDLED_DIR, BUNDLED_NAME

    rows = _prompt_rows(pool)
    with open(work / "prompts.jsonl", "w", encoding="utf-8") as f:
        for i, (prompt, ref) in enumerate(rows):
            f.write(json.dumps({"id": f"p{i}", "prompt": TEMPLATE.format(prompt=prompt), "reference": ref},
                               ensure_ascii=False) + "\n")
    tokenizer = _tokenizer([p + " " + r for p, r in rows])
    dirs = {}
    for name in models:
        if name == BUNDLED_NAME:
            if (BUNDLED_DIR / "config.json").is_file():
                dirs[name] = str(BUNDLED_DIR)
            else:
                print(f"skipping rlft-base: {BUNDLED_DIR} is not built", file=sys.stderr)
            continue
        if registry.known(name):  # a real model rlft obtains offline (smollm2-135m): its cached checkpoint
            dirs[name] = str(registry.resolve(name))
            continue
        dirs[name] = str(_gpt2(work / name, tokenizer, GPT2_SIZES[name]))
    return dirs


def _prompt_rows(pool: int) -> list[tuple[str, str]]:
    from rlft.tasks import task_dir

    train = task_dir("translation") / "train.jsonl.gz"
    if not train.is_file():
        return FALLBACK_PROMPTS
    rows = []
    with gzip.open(train, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if 20 <= len(r["prompt"]) <= 90 and "\n" not in r["prompt"]:
                rows.append((r["prompt"], r["references"][0]))
            if len(rows) == pool:
                break
    return rows


def _tokenizer(texts: list[str]):
    """The bundled model's tokenizer when it exists, else an 8k byte-level BPE trained on the pool
    by the pretraining recipe's trainer (the bundled tokenizer was made by it too)."""
    from transformers import AutoTokenizer

    from rlft.models.loading import BUNDLED_DIR

    if (BUNDLED_DIR / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(BUNDLED_DIR)
    from recipes.pretrain.tokenizer import train_tokenizer

    return train_tokenizer(texts * 4, vocab_size=8192)


def _gpt2(out: Path, tokenizer, size: dict) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **size)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def prompt_tokens(model_dir: str, work: Path) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line)["prompt"] for line in (work / "prompts.jsonl").read_text().splitlines()]
    return statistics.mean(len(tok(r, add_special_tokens=True)["input_ids"]) for r in rows)
