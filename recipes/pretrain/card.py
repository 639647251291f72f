"""Step 6 of the pretraining recipe (``python -m recipes.pretrain``): save bf16 safetensors +
tokenizer + loss curves + model card, atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from recipes.pretrain.corpus import ANCHOR, CHUNK_CHARS, squash


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if r["phase"] == "pretrain" and "loss" in r]
    held = [r for r in records if r["phase"] == "pretrain" and "heldout_loss" in r]
    left.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (mean of log window)")
    left.plot([r["step"] for r in held], [r["heldout_loss"] for r in held], "o-", label="held-out")
    left.set(title="pretraining", xlabel="step", ylabel="loss (nats/token)")
    left.legend()
    sft = [r for r in records if r["phase"] == "sft"]
    for name in sorted({k for r in sft for k in r["task_loss"]}):
        ys = [r["task_loss"][name] for r in sft]
        smooth = [sum(ys[max(0, i - 19):i + 1]) / len(ys[max(0, i - 19):i + 1]) for i in range(len(ys))]
        right.plot([r["step"] for r in sft], smooth, label=name)
    right.set(title="multi-task SFT (reference tokens, 20-step mean)", xlabel="step", ylabel="loss")
    if sft:
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_atomic(out_dir: Path, write: Any) -> None:
    """Call ``write(tmp_dir)`` and then swap ``tmp_dir`` into ``out_dir``, so a crash never leaves
    a half-written model where ``rlft-base`` is looked up."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _clip(text: str, n: int = 160) -> str:
    text = squash(text).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 3] + "..."


def _budget(minutes: float, steps: int) -> str:
    parts = ([f"a {minutes:g}-minute wall-clock budget"] if minutes > 0 else []) + ([f"{steps} steps"] if steps > 0 else [])
    return " or ".join(parts) + (" (whichever ends first)" if len(parts) == 2 else "")


def model_card(s: dict[str, Any]) -> str:
    """The README.md of the bundled model, from the statistics the build collected."""
    cfg, m = s["config"], s["model"]
    comp = _table(["source", "documents", "characters", "UTF-8 MB", "tokens", "chars/token", "dropped (leak)"],
                  [[k, v["docs"], v["chars"], f"{v['bytes'] / 1e6:.2f}", v["tokens"], f"{v['chars'] / max(1, v['tokens']):.2f}",
                    s["corpus"]["leak_dropped"].get(k, 0)] for k, v in s["corpus"]["sources"].items()])
    return f"""# rlft-base

The small base model bundled with rlft (`model.name_or_path=rlft-base`), built on a CPU by the
project's own recipe (`recipes/pretrain/`) from local text only. It exists so that every bundled
task's RL run starts from a model that already knows the task formats; it is far too small and
briefly trained to be useful on its own. Everything below was written by the build itself.

Built with: `{s['command']}` ({s['started']}, torch {s['torch']}, transformers {s['transformers']},
{cfg['threads']} CPU threads, {cfg['precision']} training, weights saved in bf16).

## Architecture

`LlamaForCausalLM`: {m['params']:,} parameters ({m['params_no_embed']:,} without the tied embedding),
hidden size {cfg['hidden_size']}, {cfg['num_layers']} layers, {cfg['num_heads']} heads (head dim
{cfg['hidden_size'] // cfg['num_heads']}), SwiGLU inner size {cfg['intermediate_size']}, RMSNorm, RoPE (theta
10000, `max_position_embeddings` {cfg['max_positions']}), tied input/output embeddings, no dropout.

## Tokenizer

Byte-level BPE (GPT-2 pre-tokenization, `tokenizers`), {s['tokenizer']['vocab']} tokens, trained on
{cfg['tokenizer_sample_mb']}M characters of the corpus of which {cfg['tokenizer_zh_share']:.0%} Chinese. Special tokens:
`<|endoftext|>` (id {s['tokenizer']['eos_id']}: EOS, also set as BOS) and `<|pad|>` (id {s['tokenizer']['pad_id']}: padding, distinct
from EOS so batched RL can tell padding from a finished completion). No BOS is prepended to text
(documents are separated by EOS); padding side is left. {s['tokenizer']['single_cjk_tokens']} CJK characters have a
token of their own (plus {s['tokenizer']['multi_cjk_tokens']} multi-character Chinese tokens); they cover
{s['tokenizer']['validation_cjk_covered']:.1%} of the CJK characters in the translation validation references.

## Corpus

{comp}

- `task:*`: the train split of each bundled task, each (prompt, reference) pair rendered as the
  task template applied to the prompt, then the reference, then EOS, tokenized as prompt ids +
  reference ids (the boundary RL samples at). All references are used.
- `doc`: README/NEWS/FAQ/TODO/*.txt/*.md/*.rst under /usr/share/doc (no changelogs, no
  copyright files), `license`: /usr/share/common-licenses, `code`: the Python standard library
  outside its test suites, `zh`: the msgstr side of /usr/share/locale/zh_CN and zh_TW catalogs.
  Text is cut at blank lines (code: before a `def`/`class`/decorator) into chunks of at most {CHUNK_CHARS} characters; files are taken in a
  hash order until each source's cap.
- Leak filter: the {s['corpus']['leak_needles']:,} distinct validation and test prompts and references of
  all tasks (whitespace collapsed, case folded). A chunk is dropped when it contains one of at least {ANCHOR}
  characters anywhere or has a line equal to a shorter one; a catalog message is dropped when its
  English msgid is a held-out translation prompt or its Chinese text leaks. The train splits are
  used as they are.
- {cfg['heldout_fraction']:.0%} of the documents (by hash) are held out for the held-out loss ({s['heldout_rows']} rows).
- Task snapshots read (sha256 prefix; the leak filter holds for exactly these splits, so a rebuilt
  snapshot calls for a rebuilt model): {", ".join(f"`{k}` {v}" for k, v in s['snapshots'].items())}.

""" + _training_card(s)


def _training_card(s: dict[str, Any]) -> str:
    """The model card's second half: training phases and settings, per-task scores, greedy samples."""
    cfg, pre, sft = s["config"], s["pretrain"], s["sft"]
    tasks = _table(["task", "val. ref. loss after pretraining", "after SFT", f"greedy {cfg['eval_examples']} val.: metric", "score"],
                   [[k, f"{s['ref_loss_pretrain'][k]:.3f}", f"{s['ref_loss_sft'][k]:.3f}", v["metric"], f"{v['score']:.1f}"]
                    for k, v in s["samples"].items()])
    samples = "\n\n".join(f"**{k}** (template `{json.dumps(v['template'])[1:-1]}`)\n\n" + _table(
        ["prompt", "greedy output", "reference"], [[_clip(p), _clip(h) or "(empty)", _clip(r)] for p, h, r in v["samples"]])
        for k, v in s["samples"].items())
    return f"""## Training

| phase | wall seconds | steps | tokens | notes |
| --- | ---: | ---: | ---: | --- |
| corpus + tokenizer | {s['prep_s']:.0f} | | | leak filtering, BPE training, tokenization |
| pretraining | {pre['wall_s']:.0f} | {pre['steps']} | {pre['tokens']:,} | {pre['epochs']:.2f} passes over {s['train_rows']} rows of {cfg['seq_len']} tokens |
| multi-task SFT | {sft['wall_s']:.0f} | {sft['steps']} | | {cfg['sft_batch_per_task']} examples x {len(s['samples'])} tasks per step |

Pretraining: packed rows of {cfg['seq_len']} tokens, batch {cfg['batch_size']} rows, AdamW (betas 0.9/0.95,
weight decay {cfg['weight_decay']} on matrices), peak lr {cfg['lr']}, {cfg['warmup_steps']} warm-up steps then cosine to
{cfg['min_lr_ratio']:.0%} over {_budget(cfg['pretrain_minutes'], cfg['pretrain_steps'])}, gradient clipping 1.0, fp32 master
weights. Final training loss {s['final_train_loss']:.3f}, held-out loss {pre['heldout_loss']:.3f} (nats/token).
SFT: every step one micro-batch of each task (uniform mixture), loss on reference tokens only
(prompt masked), peak lr {cfg['sft_lr']}, cosine over {_budget(cfg['sft_minutes'], cfg['sft_steps'])}, sequences up to
{cfg['sft_max_tokens']} tokens (prompts keep their end).

![loss curves](loss_curves.png)

The log is in `training_log.jsonl` (one JSON object per logged step).

## Per task

{tasks}

## Greedy samples (validation prompts, first {len(next(iter(s['samples'].values()))['samples'])} per task)

{samples}
"""


def save_model(model: Any, tokenizer: Any, stats: dict[str, Any], records: list[dict[str, Any]], out_dir: Path) -> None:
    import torch
    from transformers import GenerationConfig

    def write(tmp: Path) -> None:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        model.to(torch.float32)
        # Stored in bf16 (half the size), but loaded in fp32 by default (`dtype="auto"` reads this
        # field): bf16 matmuls are many times slower than fp32 on CPUs without AVX512-BF16.
        config = json.loads((tmp / "config.json").read_text())
        (tmp / "config.json").write_text(json.dumps({**config, "dtype": "float32"}, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=64).save_pretrained(tmp)
        (tmp / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        plot_curves(records, tmp / "loss_curves.png")
        (tmp / "README.md").write_text(model_card(stats), encoding="utf-8")

    save_atomic(out_dir, write)
