"""The pretraining recipe (`python -m recipes.pretrain`), shrunk: a tiny model on a few KB of text, a few steps."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from recipes.pretrain import LeakFilter, capped_chunks, chunks, main, parse_config
from rlft.errors import RlftError

EN = ["open the file", "close the window", "save the document", "print the page", "copy the text"]
ZH = ["打开文件", "关闭窗口", "保存文档", "打印页面", "复制文本"]


def _rows(name: str, n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        en, zh = EN[i % 5], ZH[i % 5]
        prompt = {"translation": f"{en} number {i}", "summarization": f"This tool will {en} for user {i}.",
                  "dialogue": f"A: can you {en}? ({i})", "code_summary": f"def f{i}(path):\n    return {i}"}[name]
        ref = {"translation": f"{zh} {i}"}.get(name, f"{en.capitalize()} {i}.")
        rows.append({"id": f"{name}-{i}", "prompt": prompt, "references": [ref], "count": 1})
    return rows


@pytest.fixture
def tasks_dir(tmp_path) -> Path:
    """Snapshots of the four bundled tasks with 40 train and 3+3 held-out rows each."""
    root = tmp_path / "tasks"
    for name in ("translation", "summarization", "dialogue", "code_summary"):
        (root / name).mkdir(parents=True)
        for split, n, offset in (("train", 40, 0), ("validation", 3, 100), ("test", 3, 200)):
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(name, n, offset))
            (root / name / f"{split}.jsonl.gz").write_bytes(gzip.compress(lines.encode("utf-8")))
    return root


def test_tiny_pretrain_builds_a_loadable_model(tmp_path, tasks_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "base-model"
    args = [f"output_dir={out}", f"tasks_dir={tasks_dir}", "doc_mb=0.01", "license_mb=0.005", "code_mb=0.01",
            "zh_mb=0.01", "heldout_fraction=0.2", "vocab_size=320", "tokenizer_sample_mb=0.05",
            "hidden_size=32", "num_layers=2", "num_heads=2", "intermediate_size=64", "seq_len=32",
            "batch_size=4", "lr=3e-3", "warmup_steps=3", "pretrain_minutes=0", "pretrain_steps=40",
            "eval_every=20", "log_every=5", "sft_minutes=0", "sft_steps=3", "sft_max_tokens=64",
            "eval_examples=2", f"threads={torch.get_num_threads()}"]
    assert main(args) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "README.md", "loss_curves.png", "training_log.jsonl"):
        assert (out / name).is_file(), name
    assert not (tmp_path / "base-model.tmp").exists()

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "left"
    assert model.config.pad_token_id == tok.pad_token_id and model.config.vocab_size == len(tok)
    for text in ("Copy the file to /tmp, then exit(0).", "无法打开文件 %s：权限不够", "混合 mixed 文本\n  indented"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok("hello", add_special_tokens=False)["input_ids"] == tok("hello")["input_ids"]  # no BOS added

    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["phase"] == "pretrain" and "loss" in r]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5
    assert [r["step"] for r in log if r["phase"] == "sft"] == [1, 2, 3]
    card = (out / "README.md").read_text()
    assert "python -m recipes.pretrain output_dir=" in card and "loss_curves.png" in card and "translation" in card
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())
    assert model.dtype == torch.float32  # stored in bf16, upcast on load (fast on CPU)
    with torch.no_grad():
        logits = model(**tok(["打开文件"], return_tensors="pt")).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_leak_filter_long_needles_anywhere_short_ones_as_lines():
    leak = LeakFilter(["Memory exhausted while reading the archive", "OK", "打开文件失败：%s"])
    assert leak.leaks("Errors:\n  error: memory  exhausted while   reading the archive.\n")  # whitespace-insensitive
    assert not leak.leaks("Memory exhausted")
    assert leak.leaks("first\nOK\nlast") and not leak.leaks("It is OK to go")
    assert leak.leaks("日志\n打开文件失败：%s\n") and not leak.leaks("打开文件")


def test_held_out_text_is_dropped_from_general_sources(tmp_path):
    from collections import Counter

    leaky, clean = tmp_path / "README.txt", tmp_path / "NEWS.txt"
    leaky.write_text("Intro.\n\nThis one quotes a test reference: copy memory\n  area safely.\n")
    clean.write_text("Nothing held out here.\n")
    dropped: Counter = Counter()
    docs = capped_chunks("doc", [leaky, clean], 1.0, LeakFilter(["copy memory area safely"]), dropped)
    assert dropped["doc"] == 1 and [d.text for d in docs] == ["Nothing held out here."]
    assert list(chunks("a\n\nb\n\n" + "c" * 10, limit=6)) == ["a\n\nb", "c" * 6, "c" * 4]


def test_overrides_are_typed_and_unknown_keys_named():
    cfg = parse_config(["vocab_size=512", "pretrain_minutes=1.5", "precision=bf16"])
    assert (cfg.vocab_size, cfg.pretrain_minutes, cfg.precision) == (512, 1.5, "bf16")
    with pytest.raises(RlftError, match="did you mean 'vocab_size'"):
        parse_config(["vocab_sise=512"])
    with pytest.raises(RlftError, match="pretrain_minutes or pretrain_steps"):
        parse_config(["pretrain_minutes=0"])


def test_help_lists_the_pretrain_settings_not_the_rl_ones(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m recipes.pretrain" in out and "pretrain_minutes=" in out and "vocab_size=" in out
    assert "algo.kl_coef" not in out


def test_the_default_output_is_where_rlft_base_is_loaded_from():
    from rlft.models.loading import BUNDLED_DIR

    assert parse_config(["pretrain_steps=1"]).output_dir == str(BUNDLED_DIR)


def test_rlft_has_no_pretrain_command():
    from rlft.cli import COMMANDS

    assert "pretrain" not in COMMANDS
