"""Steps 3-5 of the pretraining recipe (``python -m recipes.pretrain``): the model, pretraining,
multi-task SFT, greedy samples.

3. Model: a small Llama-style decoder (RoPE, RMSNorm, SwiGLU, tied embeddings), dropout 0.
4. Pretraining on packed 256-token rows: AdamW, linear warm-up then cosine decay over a wall
   clock budget (so a busy machine shortens the run rather than overrunning it), held-out loss.
5. Multi-task SFT: each step takes a micro-batch of every task (uniform mixture), loss on the
   reference tokens only. Then greedy completions of validation prompts, scored for the card.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from recipes.pretrain.config import PretrainConfig
from recipes.pretrain.corpus import task_names, task_rows


# ---------------------------------------------------------------------------------------------
# 3-4. Model and pretraining

def build_model(cfg: PretrainConfig, tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True, attention_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def lr_at(step: int, progress: float, warmup: int, warm_progress: float, peak: float, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from peak to peak*min_ratio over the rest
    of ``progress`` (0..1, the larger of the step and wall-clock fractions)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (progress - warm_progress) / max(1e-9, 1.0 - warm_progress))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model: Any, lr: float, weight_decay: float) -> Any:
    import torch

    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]  # RMSNorm gains: no decay
    return torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                              {"params": vectors, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


class Budget:
    """Progress in 0..1 of a phase bounded by steps, minutes, or both (whichever ends first)."""

    def __init__(self, steps: int, minutes: float):
        self.steps, self.seconds, self.start = steps, minutes * 60, time.time()

    def progress(self, step: int) -> float:
        by_steps = step / self.steps if self.steps > 0 else 0.0
        by_time = (time.time() - self.start) / self.seconds if self.seconds > 0 else 0.0
        return max(by_steps, by_time)

    def elapsed(self) -> float:
        return time.time() - self.start


def heldout_loss(model: Any, rows: Any, batch_size: int, autocast: bool) -> float:
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for i in range(0, len(rows), batch_size):
            batch = rows[i:i + batch_size]
            total += float(model(input_ids=batch, labels=batch).loss) * len(batch)
    model.train()
    return total / max(1, len(rows))


def pretrain(model: Any, rows: Any, heldout: Any, cfg: PretrainConfig, log: Any) -> dict[str, Any]:
    """Next-token pretraining on packed rows, one pass in a seeded order (repeated if the
    budget outlasts it). Logs the training loss and the held-out loss."""
    import torch

    autocast = cfg.precision == "bf16"
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed))
    budget, step, warm_progress, window = Budget(cfg.pretrain_steps, cfg.pretrain_minutes), 0, 0.0, []
    model.train()
    while (progress := budget.progress(step)) < 1.0:
        if step == cfg.warmup_steps:
            warm_progress = progress
        lr = lr_at(step, progress, cfg.warmup_steps, warm_progress, cfg.lr, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = [order[(step * cfg.batch_size + j) % len(rows)] for j in range(cfg.batch_size)]
        batch = rows[torch.stack(idx)]  # (B, T)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window.append(loss.item())
        if step % cfg.log_every == 0:
            log({"phase": "pretrain", "step": step, "loss": sum(window) / len(window), "lr": lr,
                 "tokens": step * cfg.batch_size * cfg.seq_len, "elapsed_s": round(budget.elapsed(), 1)})
            window = []
        if cfg.eval_every and step % cfg.eval_every == 0 and len(heldout):
            log({"phase": "pretrain", "step": step, "heldout_loss": heldout_loss(model, heldout, cfg.batch_size, autocast),
                 "elapsed_s": round(budget.elapsed(), 1)})
    final = heldout_loss(model, heldout, cfg.batch_size, autocast) if len(heldout) else float("nan")
    if not (cfg.eval_every and step % cfg.eval_every == 0):
        log({"phase": "pretrain", "step": step, "heldout_loss": final, "elapsed_s": round(budget.elapsed(), 1)})
    return {"steps": step, "tokens": step * cfg.batch_size * cfg.seq_len, "wall_s": round(budget.elapsed(), 1),
            "heldout_loss": final, "epochs": step * cfg.batch_size / max(1, len(rows))}


# ---------------------------------------------------------------------------------------------
# 5. Multi-task SFT

def sft_examples(cfg: PretrainConfig, tokenizer: Any, split: str) -> dict[str, list[tuple[list[int], list[int]]]]:
    """Per task: (prompt ids, reference ids + EOS) for every (prompt, reference) of the split."""
    from rlft.data.templates import render_prompt
    from rlft.tasks import get_task

    out = {}
    for name in task_names(cfg):
        rows = task_rows(cfg, name, split)
        prompts = [render_prompt(get_task(name).template, r["prompt"]) for r in rows for _ in r["references"]]
        refs = [ref for r in rows for ref in r["references"]]
        p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(refs, add_special_tokens=False)["input_ids"]
        out[name] = [(p, r + [tokenizer.eos_token_id]) for p, r in zip(p_ids, r_ids)]
    return out


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int, max_tokens: int) -> tuple[Any, Any, Any]:
    """Right-padded (input_ids, attention_mask, labels), labels -100 except on reference tokens;
    an overlong prompt keeps its end (where the template's cue is)."""
    import torch

    seqs = []
    for prompt, ref in pairs:
        ref = ref[: max_tokens // 2]
        prompt = prompt[-(max_tokens - len(ref)):]
        seqs.append((prompt + ref, [-100] * len(prompt) + ref))
    T = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, (s, lab) in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)], labels[i, : len(s)] = torch.tensor(s), 1, torch.tensor(lab)
    return ids, mask, labels


def reference_loss(model: Any, examples: dict[str, list], cfg: PretrainConfig, pad_id: int, n: int = 32) -> dict[str, float]:
    """Mean per-token loss on the references of the first ``n`` examples of each task."""
    import torch

    model.eval()
    out = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        for name, pairs in examples.items():
            losses = []
            for i in range(0, min(n, len(pairs)), 8):
                ids, mask, labels = collate(pairs[i:i + 8], pad_id, cfg.sft_max_tokens)
                losses.append(float(model(input_ids=ids, attention_mask=mask, labels=labels).loss))
            out[name] = sum(losses) / max(1, len(losses))
    model.train()
    return out


def multitask_sft(model: Any, train: dict[str, list], cfg: PretrainConfig, pad_id: int, log: Any) -> dict[str, Any]:
    """Each step: one micro-batch of ``sft_batch_per_task`` random examples from every task;
    the step's loss is the mean of the task losses, so each task weighs the same whatever its
    size or length. Warm-up 10 steps, then cosine to 10% over the budget."""
    import torch

    autocast = cfg.precision == "bf16"
    optimizer = make_optimizer(model, cfg.sft_lr, cfg.weight_decay)
    rng = random.Random(cfg.seed)
    budget, step, warm_progress = Budget(cfg.sft_steps, cfg.sft_minutes), 0, 0.0
    model.train()
    while (progress := budget.progress(step)) < 1.0:
        warm_progress = progress if step == 10 else warm_progress
        lr = lr_at(step, progress, 10, warm_progress, cfg.sft_lr, 0.1)
        for group in optimizer.param_groups:
            group["lr"] = lr
        task_losses = {}
        for name, pairs in train.items():
            ids, mask, labels = collate(rng.sample(pairs, min(cfg.sft_batch_per_task, len(pairs))), pad_id, cfg.sft_max_tokens)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / len(train)
            loss.backward()
            task_losses[name] = loss.item() * len(train)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        log({"phase": "sft", "step": step, "loss": sum(task_losses.values()) / len(task_losses), "lr": lr,
             "task_loss": task_losses, "elapsed_s": round(budget.elapsed(), 1)})
    return {"steps": step, "wall_s": round(budget.elapsed(), 1)}


# ---------------------------------------------------------------------------------------------
# Greedy samples (scored for the model card)

def greedy_samples(model: Any, tokenizer: Any, cfg: PretrainConfig) -> dict[str, dict[str, Any]]:
    """Greedy completions of the first ``eval_examples`` validation prompts of each task, scored
    with the task's metric (the same prompts the RL runs evaluate on first)."""
    import torch

    from rlft.data.templates import render_prompt
    from rlft.rewards.metrics import METRICS
    from rlft.tasks import get_task

    model.eval()
    out = {}
    for name in task_names(cfg):
        task, rows = get_task(name), task_rows(cfg, name, "validation")[: cfg.eval_examples]
        hyps = []
        for i in range(0, len(rows), 8):
            prompts = [render_prompt(task.template, r["prompt"]) for r in rows[i:i + 8]]
            keep = cfg.sft_max_tokens - task.max_new_tokens  # prompts keep their end, like fit_prompt
            ids = [p[-keep:] for p in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
            batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")  # left padding
            with torch.no_grad():
                gen = model.generate(**batch, max_new_tokens=task.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            hyps += tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        refs = [r["references"] for r in rows]
        score = METRICS[task.metric].corpus(hyps, refs) if rows else float("nan")
        out[name] = {"metric": task.metric, "score": score, "n": len(rows), "template": task.template,
                     "samples": [(r["prompt"], h, r["references"][0]) for r, h in zip(rows[:3], hyps)]}
    model.train()
    return out
