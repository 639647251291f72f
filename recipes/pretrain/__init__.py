"""Build the bundled base model (``rlft-base``) from local text, on a CPU.

    python -m recipes.pretrain [key=value ...]     # from the repository root
    python -m recipes.pretrain --help              # the settings
    scripts/pretrain.sh [key=value ...]            # the same in the background, as the bundled model was built

The recipe, in order (``main`` runs the steps; each is one function of the module named):

1. Corpus (``corpus``): the train splits of the bundled tasks, rendered as RL and SFT feed them,
   and other local text (docs, licences, stdlib source, Chinese catalogs) minus any chunk that
   leaks a validation or test string.
2. Tokenizer (``tokenizer``): byte-level BPE with a fixed Chinese share of its sample; the
   documents are then packed into fixed-length rows.
3. Model (``train``): a small Llama-style decoder.
4. Pretraining (``train``) on the packed rows over a wall-clock budget, with a held-out loss.
5. Multi-task SFT (``train``): a micro-batch of every task each step, loss on references only.
6. Save (``card``): bf16 safetensors + tokenizer + loss curves + model card, atomically.

Settings are ``PretrainConfig`` (``config``). The model is written where ``rlft`` looks up
``rlft-base`` (``rlft.models.loading.BUNDLED_DIR``) unless ``output_dir`` says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from recipes.pretrain.card import save_model
from recipes.pretrain.config import PretrainConfig, parse_config
from recipes.pretrain.corpus import (LeakFilter, build_corpus, capped_chunks, chunks, corpus_stats, snapshot_hashes,
                                     split_heldout, task_names, task_rows)
from recipes.pretrain.tokenizer import cjk_coverage, encode_documents, pack, tokenizer_sample, train_tokenizer
from recipes.pretrain.train import build_model, greedy_samples, multitask_sft, pretrain, reference_loss, sft_examples

COMMAND = "recipes.pretrain"

__all__ = ["LeakFilter", "PretrainConfig", "capped_chunks", "chunks", "main", "parse_config"]


def main(args: list[str]) -> int:
    """``python -m recipes.pretrain [key=value ...]``: build the base model as PretrainConfig describes."""
    if {"-h", "--help"} & set(args):
        from rlft.config import help_text

        print(f"usage: python -m {COMMAND} [key=value ...]\n\n{__doc__.splitlines()[0]}\n\n"
              f"settings (key=value):\n{help_text(PretrainConfig)}")
        return 0
    import torch
    import transformers

    cfg = parse_config(args)
    torch.set_num_threads(cfg.threads)
    records: list[dict[str, Any]] = []

    def log(record: dict[str, Any]) -> None:
        records.append(record)
        if "heldout_loss" in record or record["step"] % (cfg.log_every * (5 if record["phase"] == "sft" else 1)) == 0:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()
                              if k != "task_loss"}), flush=True)

    t0 = time.time()
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY",) if k in os.environ)
    stats: dict[str, Any] = {"config": dataclasses.asdict(cfg), "command": " ".join([env, "python -m", COMMAND, *args]).strip(),
                             "started": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
                             "transformers": transformers.__version__}
    docs, stats["corpus"] = build_corpus(cfg)
    stats["snapshots"] = snapshot_hashes(cfg)
    print(f"corpus: {len(docs)} documents ({time.time() - t0:.0f}s)", flush=True)
    tokenizer = train_tokenizer(tokenizer_sample(docs, cfg), cfg.vocab_size, cfg.max_positions)
    token_docs = encode_documents(tokenizer, docs)
    stats["corpus"]["sources"] = corpus_stats(docs, token_docs)
    zh_refs = [r for name in task_names(cfg) if name == "translation"
               for row in task_rows(cfg, name, "validation") for r in row["references"]]
    stats["tokenizer"] = {"vocab": len(tokenizer), "eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id,
                          **cjk_coverage(tokenizer, zh_refs)}
    train_docs, held_docs = split_heldout(docs, token_docs, cfg)
    rows, heldout = pack(train_docs, cfg.seq_len), pack(held_docs, cfg.seq_len)[:32]
    stats.update(train_rows=len(rows), heldout_rows=len(heldout), prep_s=time.time() - t0)
    print(f"tokenizer + packing: {len(rows)} rows, {len(heldout)} held out ({time.time() - t0:.0f}s)", flush=True)

    model = build_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    stats["model"] = {"params": n_params, "params_no_embed": n_params - model.get_input_embeddings().weight.numel()}
    stats["pretrain"] = pretrain(model, rows, heldout, cfg, log)
    window = [r["loss"] for r in records if r["phase"] == "pretrain" and "loss" in r][-3:]
    stats["final_train_loss"] = sum(window) / len(window) if window else float("nan")
    val = sft_examples(cfg, tokenizer, "validation")
    stats["ref_loss_pretrain"] = reference_loss(model, val, cfg, tokenizer.pad_token_id)
    if cfg.sft_minutes > 0 or cfg.sft_steps > 0:
        stats["sft"] = multitask_sft(model, sft_examples(cfg, tokenizer, "train"), cfg, tokenizer.pad_token_id, log)
    else:
        stats["sft"] = {"steps": 0, "wall_s": 0.0}
    stats["ref_loss_sft"] = reference_loss(model, val, cfg, tokenizer.pad_token_id)
    stats["samples"] = greedy_samples(model, tokenizer, cfg) if cfg.eval_examples > 0 else {}
    save_model(model, tokenizer, stats, records, Path(cfg.output_dir))
    summary = {k: stats[k] for k in ("pretrain", "sft", "ref_loss_pretrain", "ref_loss_sft", "tokenizer")}
    print(json.dumps(summary, indent=1, default=str), flush=True)
    print(f"saved {cfg.output_dir} ({time.time() - t0:.0f}s in all)", flush=True)
    return 0
