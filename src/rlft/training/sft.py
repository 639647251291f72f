"""Supervised fine-tuning on the same data: maximize log p(reference | prompt).

The traditional fine-tuning RL is compared against, and the usual warm start before RL.
Every (prompt, reference) pair is a training item, so a prompt with three references
contributes three targets. The run scaffold (``rlft.training.run.Run``) is the RL loop's, so
resume, logging, the evaluation and checkpoint cadence and the export cannot drift. Every step:

  1. the next batch of (prompt, reference) pairs in a shuffled order fixed by (seed, epoch) (on many
     processes, this rank's part of it: ``rlft.training.distributed``);
  2. encode: rendered prompts left-padded as the sampler pads them, references + end-of-turn;
  3. loss: the token-mean negative log-likelihood of the references, in micro-batches;
  4. update: gradient clipping (the norm is logged either way), one AdamW step;
  5. log;
  6. every ``eval_every`` steps evaluate on validation (the best is exported to ``best/``), stop
     after ``sft.patience`` evaluations without a better one; checkpoint every ``save_every``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from rlft.config import Config
from rlft.training.run import Run, RunResult


@dataclass
class SFTState:
    """The SFT loop's own state: saved in every checkpoint (``trainer_state.json``), restored on resume."""

    best_metric: float | None = None  # the best validation metric so far; that model is in best/
    best_step: int | None = None


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
    (last step) and ``run_dir/best`` (best validation metric).

    No step-0 evaluation (``eval_at_start=False``): best/ and early stopping count the SFT
    checkpoints only; the base model's score is the caller's to compare (benchmarks/common.py
    ``sft_with_patience`` counts it as step 0 from a cached evaluation).
    """
    from rlft.data.templates import CHAT, end_of_turn_id, render
    from rlft.training.setup import prepare_parts

    parts = prepare_parts(config, parts)
    config, policy, model = parts.config, parts.policy, parts.policy.model  # task defaults applied
    # A chat model ends its turn with the template's end-of-turn token (ChatML <|im_end|>), which
    # need not be eos_token; the sampler stops at it too.
    end_id = end_of_turn_id(policy.tokenizer) if config.data.template == CHAT else None
    items = [(ex, ref) for ex in parts.splits["train"] for ref in ex.references]
    steps_per_epoch = math.ceil(len(items) / config.sft.batch_size)
    total = min(config.run.steps, max(1, math.ceil(config.sft.epochs * steps_per_epoch)))
    run = Run(config, parts, name="sft", total_steps=total, dropout=True, eval_at_start=False)
    order_gen = torch.Generator().manual_seed(config.run.seed)
    state = run.resume(SFTState(), generators={"order": order_gen})
    order = DataOrder(len(items), config.sft.batch_size, config.run.seed)
    model.train()
    for step in run.steps():
        t0 = time.perf_counter()
        # 1. batch (many processes: this rank's part)
        batch = run.dist.split([items[i] for i in order.batch(step)])
        # 2. encode
        prompts = render(config, policy.tokenizer, [ex for ex, _ in batch], parts.max_prompt_tokens)
        enc = encode_pairs(policy.tokenizer, prompts,
                           [ref for _, ref in batch], is_seq2seq=policy.is_seq2seq,
                           max_prompt_tokens=parts.max_prompt_tokens, overlong=config.data.overlong,
                           max_target_tokens=config.eval.max_new_tokens or config.rollout.max_new_tokens,
                           end_id=end_id)
        # 3. loss, backward
        run.optimizer.zero_grad(set_to_none=True)
        loss = _nll_backward(model, enc, config.optim.grad_accum, parts, run.dist)
        # 4. update
        grad_norm = run.dist.clip_grad_norm(model, config.optim.max_grad_norm)
        run.optimizer.step()
        run.scheduler_step()
        # 5. log (many processes: loss and times over the ranks, tokens summed)
        row = run.dist.mean_metrics({"loss": loss, "grad_norm": grad_norm, "lr": run.lr,
                                     "tokens": int(run.dist.sum(int(enc.completion_mask.sum()))),
                                     "step_time": time.perf_counter() - t0})
        loss = row["loss"]
        run.log_step(step, row, {"loss": loss, "s/step": row["step_time"]})
        # 6. evaluate, stop early, checkpoint
        if run.eval_due(step):
            _validate(run, state, step)
        # Early stopping: `patience` evaluations in a row without a new best validation metric.
        stop = (config.sft.patience > 0 and state.best_step is not None and config.run.eval_every > 0
                and step - state.best_step >= config.sft.patience * config.run.eval_every)
        run.checkpoint(step, state, force=stop)
        if stop:
            run.write(f"step {step}: no better validation metric in {config.sft.patience} evaluations; "
                      f"stopping (best at step {state.best_step}, exported to best/)")
            break
    return run.finish()


class DataOrder:
    """Which items each step trains on: epoch e is a permutation seeded by (seed, e) alone, so a
    resumed run sees the same batches without replaying the ones before."""

    def __init__(self, n_items: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n_items, batch_size, seed
        self._perms: dict[int, torch.Tensor] = {}

    def batch(self, step: int) -> list[int]:
        """The item indices of 1-based ``step``; a batch that crosses an epoch's end wraps within it."""
        epoch, pos = divmod((step - 1) * self.batch_size, self.n)
        if epoch not in self._perms:
            self._perms[epoch] = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))
        return [self._perms[epoch][(pos + j) % self.n].item() for j in range(self.batch_size)]


def _nll_backward(model: torch.nn.Module, enc: SimpleNamespace, grad_accum: int, parts: Any, dist: Any) -> float:
    """Backpropagate the token-mean NLL of the whole batch's targets in ``grad_accum`` micro-batches
    (each normalized by the whole batch's token count, so the gradients add up); returns the loss.
    Many processes: the count is the global batch's over the world size (``dist`` averages gradients)."""
    from rlft.models.logprobs import completion_logprobs

    n_tokens = dist.sum(enc.completion_mask.sum()) / dist.world
    total = 0.0
    for c in torch.arange(enc.completion_ids.shape[0]).chunk(grad_accum):
        rows = SimpleNamespace(**{k: v[c] for k, v in vars(enc).items()})
        with parts.autocast():
            lp, _ = completion_logprobs(dist.forward(model), rows, is_seq2seq=parts.policy.is_seq2seq)  # (n_c, T)
        loss = -(lp.float() * rows.completion_mask).sum() / n_tokens
        dist.backward(loss)
        total += loss.item()
    return total


def _validate(run: Run, state: SFTState, step: int) -> None:
    """Evaluate on validation; a new best validation metric exports the model to best/."""
    from rlft.eval.evaluate import log_summary

    ev = run.evaluate(step)
    run.logger.log(step, "validation", log_summary(ev))
    if state.best_metric is None or ev.metric > state.best_metric:
        state.best_metric, state.best_step = ev.metric, step
        run.export("best")
    run.write(f"step {step}: validation {ev.metric_name} {ev.metric:.2f} "
              f"(best {state.best_metric:.2f} at step {state.best_step})")
