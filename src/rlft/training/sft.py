"""Supervised fine-tuning on the same data: maximize log p(reference | prompt).

The traditional fine-tuning RL is compared against, and the usual warm start before RL.
Every (prompt, reference) pair is a training item, so a prompt with three references
contributes three targets. The loop mirrors the RL loop: batch -> loss -> update -> log,
with periodic evaluation (the best validation checkpoint is exported to ``best/``) and
atomic checkpoints that ``run.resume`` continues from.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any

import torch

from rlft.config import Config
from rlft.training.loop import RunResult


def encode_pairs(tokenizer: Any, prompts: list[str], targets: list[str], *, is_seq2seq: bool,
                 max_prompt_tokens: int, overlong: str, max_target_tokens: int,
                 end_id: int | None = None) -> SimpleNamespace:
    """Tokenize rendered prompts (left-padded, exactly as the sampler does) and targets
    (right-padded, ending in ``end_id``: EOS by default, the chat template's end-of-turn token
    for chat prompts) into the layout ``completion_logprobs`` reads."""
    from rlft.data.templates import fit_prompt

    end = tokenizer.eos_token_id if end_id is None else end_id
    pad = tokenizer.pad_token_id
    p_ids = [fit_prompt(p, tokenizer, max_prompt_tokens, overlong, "prompt") for p in prompts]
    t_ids = [tokenizer(t, add_special_tokens=False)["input_ids"][: max_target_tokens - 1] + [end] for t in targets]
    P, T = max(map(len, p_ids)), max(map(len, t_ids))
    prompt_ids = torch.full((len(p_ids), P), pad, dtype=torch.long)
    prompt_mask = torch.zeros((len(p_ids), P), dtype=torch.long)
    for i, ids in enumerate(p_ids):
        if is_seq2seq:  # encoder inputs: right padding is the convention, either works with the mask
            prompt_ids[i, : len(ids)], prompt_mask[i, : len(ids)] = torch.tensor(ids), 1
        else:
            prompt_ids[i, P - len(ids):], prompt_mask[i, P - len(ids):] = torch.tensor(ids), 1
    completion_ids = torch.full((len(t_ids), T), pad, dtype=torch.long)
    completion_mask = torch.zeros((len(t_ids), T), dtype=torch.float32)
    for i, ids in enumerate(t_ids):
        completion_ids[i, : len(ids)], completion_mask[i, : len(ids)] = torch.tensor(ids), 1.0
    return SimpleNamespace(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                           completion_ids=completion_ids, completion_mask=completion_mask)


def sft(config: Config, parts: Any = None) -> RunResult:
    """Supervised fine-tuning as configured; the model is saved to ``run_dir/final``
    (last step) and ``run_dir/best`` (best validation metric)."""
    from rlft.eval.evaluate import evaluate, log_summary
    from rlft.models.logprobs import completion_logprobs
    from rlft.training.checkpoint import export_final, prune_checkpoints, resume_latest, save_checkpoint
    from rlft.training.metrics import MetricsLogger, save_resolved_config
    from rlft.training.optim import build_optimizer, build_scheduler
    from rlft.training.progress import Progress
    from rlft.training.setup import config_dict, prepare_parts
    from rlft.data.templates import CHAT, end_of_turn_id, render
    from pathlib import Path

    parts = prepare_parts(config, parts)
    config, policy, model = parts.config, parts.policy, parts.policy.model  # task defaults applied
    run = config.run
    # A chat model ends its turn with the template's end-of-turn token (ChatML <|im_end|>), which
    # need not be eos_token; the sampler stops at it too.
    end_id = end_of_turn_id(policy.tokenizer) if config.data.template == CHAT else None
    items = [(ex, ref) for ex in parts.splits["train"] for ref in ex.references]
    val_set = parts.splits.get("validation", [])[: config.eval.max_examples]
    steps_per_epoch = math.ceil(len(items) / config.sft.batch_size)
    total = min(run.steps, max(1, math.ceil(config.sft.epochs * steps_per_epoch)))
    run_dir = Path(run.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, total)
    order_gen = torch.Generator().manual_seed(run.seed)
    state: dict[str, Any] = {"best_metric": None, "best_step": None}
    resumed = resume_latest(run_dir, model=policy.trainable, optimizer=optimizer, scheduler=scheduler,
                            generators={"order": order_gen}, state=state) if run.resume else None
    start = resumed or 0
    save_resolved_config(run_dir, config_dict(config))
    logger = MetricsLogger(run_dir, tensorboard=run.tensorboard, resume_step=resumed)
    result = RunResult(run_dir, start, None)
    # The data order is a function of (seed, epoch) only, so a resumed run sees the same batches.
    perms: dict[int, torch.Tensor] = {}

    def batch_at(step: int) -> list[tuple[Any, str]]:
        epoch, pos = divmod((step - 1) * config.sft.batch_size, len(items))
        if epoch not in perms:
            perms[epoch] = torch.randperm(len(items), generator=torch.Generator().manual_seed(run.seed * 1000 + epoch))
        ids = [perms[epoch][(pos + j) % len(items)].item() for j in range(config.sft.batch_size)]
        return [items[i] for i in ids]

    def run_eval(step: int) -> None:
        ev = evaluate(parts, val_set, tag=f"sft-step-{step:08d}", step=step)
        logger.log(step, "validation", log_summary(ev))
        result.evals.append(ev)
        if state["best_metric"] is None or ev["metric"] > state["best_metric"]:
            state["best_metric"], state["best_step"] = ev["metric"], step
            export_final(run_dir, policy.trainable, policy.tokenizer, name="best")
        progress.write(f"step {step}: validation {ev['metric_name']} {ev['metric']:.2f} "
                       f"(best {state['best_metric']:.2f} at step {state['best_step']})")

    progress = Progress(total=total, initial=start, enabled=run.progress, desc="sft")
    model.train()
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        batch = batch_at(step)
        prompts = render(config, policy.tokenizer, [ex for ex, _ in batch], parts.max_prompt_tokens)
        enc = encode_pairs(policy.tokenizer, prompts,
                           [ref for _, ref in batch], is_seq2seq=policy.is_seq2seq,
                           max_prompt_tokens=parts.max_prompt_tokens, overlong=config.data.overlong,
                           max_target_tokens=config.eval.max_new_tokens or config.rollout.max_new_tokens,
                           end_id=end_id)
        n_tokens = enc.completion_mask.sum()
        optimizer.zero_grad(set_to_none=True)
        total_loss = 0.0
        for c in torch.arange(len(batch)).chunk(config.optim.grad_accum):
            rows = SimpleNamespace(**{k: v[c] for k, v in vars(enc).items()})
            with parts.autocast():
                lp, _ = completion_logprobs(model, rows, is_seq2seq=policy.is_seq2seq)
            loss = -(lp.float() * rows.completion_mask).sum() / n_tokens  # token-mean NLL of the whole batch
            loss.backward()
            total_loss += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm) \
            if config.optim.max_grad_norm > 0 else torch.tensor(0.0)
        optimizer.step()
        scheduler.step()
        row = {"loss": total_loss, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0],
               "tokens": int(n_tokens), "step_time": time.perf_counter() - t0}
        logger.log(step, "train", row)
        progress.update(1, {"loss": total_loss, "s/step": row["step_time"]})
        result.step = step
        if val_set and (run.eval_every and step % run.eval_every == 0 or step == total):
            model.eval()
            run_eval(step)
            model.train()
        # Early stopping: `patience` evaluations in a row without a new best validation metric.
        stop = (config.sft.patience > 0 and state["best_step"] is not None and run.eval_every > 0
                and step - state["best_step"] >= config.sft.patience * run.eval_every)
        if run.save_every and step % run.save_every == 0 or step == total or stop:
            save_checkpoint(run_dir, step, model=policy.trainable, tokenizer=policy.tokenizer, optimizer=optimizer,
                            scheduler=scheduler, state={"state": dict(state), "generators": {"order": order_gen}})
            prune_checkpoints(run_dir, run.keep_checkpoints)
        if stop:
            progress.write(f"step {step}: no better validation metric in {config.sft.patience} evaluations; "
                           f"stopping (best at step {state['best_step']}, exported to best/)")
            break
    progress.close()
    model.eval()
    result.final_dir = export_final(run_dir, policy.trainable, policy.tokenizer)
    logger.close()
    return result
