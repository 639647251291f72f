"""Reward-model training on preference pairs (``rlft rm train``): maximize the likelihood of the
labels under Bradley-Terry, with ties modelled by Davidson or Rao-Kupper
(``rlft.algorithms.preference``).

The run scaffold (``rlft.training.run.Run``) is the RL and SFT loops', so resume, logging, the
evaluation and checkpoint cadence and the export cannot drift; dropout is off, as in TRL's
RewardTrainer default (two forwards of one pair should not disagree by noise). Every step:

  1. the next batch of pairs in a shuffled order fixed by (seed, epoch) (``sft.DataOrder``; on many
     processes, this rank's part of it);
  2. encode: the chosen and the rejected completions as (prompt, completion) text pairs, one batch;
  3. loss: the preference NLL (Bradley-Terry with margins; the tie model when the data has ties),
     in ``optim.grad_accum`` micro-batches;
  4. update: gradient clipping (the norm is logged either way), one AdamW step, and one Adam
     step of the tie parameter when it is learned;
  5. log: loss, batch accuracy, mean score difference, the tie parameter;
  6. every ``run.eval_every`` steps and at the last: pairwise accuracy on the validation pairs
     (the first ``eval.max_examples``); checkpoint every ``run.save_every``.

At the end, the whole validation and test splits are scored: pairwise accuracy with a Wilson
95% interval and a calibration table, printed and written to ``eval/rm-<split>.json``. ``final/``
loads with plain ``AutoModelForSequenceClassification.from_pretrained``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional

import torch

from rlft.config import Config
from rlft.data.preferences import Pair
from rlft.errors import RlftError
from rlft.training.run import Run, RunResult


@dataclass
class RMState:
    """The reward-model loop's own state: saved in every checkpoint, restored on resume."""

    validation_accuracy: Optional[float] = None  # the last cadence evaluation's


class TieParameter:
    """The tie parameter (Davidson's nu, Rao-Kupper's theta), held as the free real number that
    ``TIE_MODELS[ties].to_log`` maps to its log, with its own Adam when learned. A checkpointed
    part of the loop (``state_dict``)."""

    def __init__(self, ties: str, value: float | None, *, learn: bool, lr: float) -> None:
        from rlft.algorithms.preference import TIE_MODELS

        self.model = TIE_MODELS[ties]
        value = self.model.default if value is None else value
        if value <= self.model.low:
            raise RlftError(f"config: rm.tie_param must be > {self.model.low:g} for rm.ties={ties}, got {value!r}")
        self.free = torch.tensor(self.model.from_param(value), dtype=torch.float32, requires_grad=learn)
        self.optimizer = torch.optim.Adam([self.free], lr=lr) if learn else None

    @property
    def value(self) -> float:
        return float(self.model.to_log(self.free.detach()).exp())

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"free": self.free.detach().clone(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.free.copy_(state["free"])
        if self.optimizer is not None and state["optimizer"]:
            self.optimizer.load_state_dict(state["optimizer"])


def train_reward_model(config: Config) -> RunResult:
    """Train a reward model as configured: ``model.name_or_path`` (a one-label classifier or a
    causal LM, given a scalar head), ``data.train`` (preference pairs), LoRA when ``lora.r > 0``."""
    from rlft.models.lora import apply_lora
    from rlft.models.reward_model import load_reward_model
    from rlft.training.distributed import from_launcher
    from rlft.training.runtime import seed_everything, set_threads
    from rlft.training.sft import DataOrder

    set_threads(config.run.threads)
    seed_everything(config.run.seed)  # before loading: a fresh scalar head's initialization repeats
    splits = _load_splits(config)
    dist = from_launcher(config.run.device)  # many processes: this rank's device
    device = dist.device
    rm = load_reward_model(config.model.name_or_path, device=device, revision=config.model.revision,
                           trust_remote_code=config.model.trust_remote_code)
    policy = rm.as_policy()
    apply_lora(policy, config.lora, task_type="SEQ_CLS")  # the head trains in full (peft's modules_to_save)
    train = splits["train"]
    total = min(config.run.steps, max(1, math.ceil(config.rm.epochs * math.ceil(len(train) / config.rm.batch_size))))
    parts = SimpleNamespace(policy=policy, splits={"validation": splits["validation"]}, dist=dist)
    run = Run(config, parts, name="rm", total_steps=total, dropout=False, eval_at_start=False)
    has_ties = any(p.tie for p in train)
    tie = TieParameter(config.rm.ties, config.rm.tie_param, learn=config.rm.learn_tie_param and has_ties,
                       lr=config.rm.tie_lr)
    order_gen = torch.Generator().manual_seed(config.run.seed)
    state = run.resume(RMState(), generators={"order": order_gen}, stateful={"tie": tie})
    order = DataOrder(len(train), config.rm.batch_size, config.run.seed)
    autocast = _autocast(config, device)
    rm.model.train()
    for step in run.steps():
        t0 = time.perf_counter()
        # 1. batch
        batch = [train[i] for i in order.batch(step)]
        # 2.-3. encode, loss, backward
        run.optimizer.zero_grad(set_to_none=True)
        stats = _loss_backward(rm, batch, config, tie if has_ties else None, autocast, dist)
        # 4. update (many processes: the tie parameter's gradient is averaged over the ranks as well)
        grad_norm = dist.clip_grad_norm(rm.model, config.optim.max_grad_norm)
        dist.average_grads([tie.free])
        run.optimizer.step()
        tie.step()
        run.scheduler_step()
        # 5. log (many processes: means over the ranks)
        row = dist.mean_metrics({**stats, "grad_norm": grad_norm, "lr": run.lr, "step_time": time.perf_counter() - t0})
        if has_ties:
            row["tie_param"] = tie.value
        run.log_step(step, row, {"loss": stats["loss"], "acc": stats["accuracy"]})
        # 6. evaluate, checkpoint
        if run.eval_due(step):
            ev = _evaluate(rm, run.val_set, config, "validation")
            state.validation_accuracy = ev.accuracy
            run.logger.log(step, "validation", _summary(ev))
            run.write(f"step {step}: {ev.describe()}")
        run.checkpoint(step, state)
    _held_out(rm, splits, config, run, tie.value if has_ties else None)
    return run.finish()


def _load_splits(config: Config) -> dict[str, list[Pair]]:
    from rlft.data.preferences import load_pair_splits

    splits = load_pair_splits(config.data)
    if config.data.validation is None and config.data.validation_fraction > 0 and not splits["validation"]:
        raise RlftError(f"{config.data.train}: no pair fell in the validation split (data.validation_fraction="
                        f"{config.data.validation_fraction}); give data.validation or raise the fraction")
    return splits


def _autocast(config: Config, device: torch.device) -> Any:
    from rlft.training.runtime import autocast_context, resolved_precision

    precision = resolved_precision(device, config.run.precision)
    return lambda: autocast_context(device, precision)


def _loss_backward(rm: Any, batch: list[Pair], config: Config, tie: Optional[TieParameter],
                   autocast: Any, dist: Any) -> dict[str, float]:
    """Steps 2-3: backpropagate the batch's mean preference NLL in ``optim.grad_accum`` micro-batches
    (each weighted by its share of the batch, so the gradients add up); the step's statistics.
    Many processes: ``batch`` is the global one, of which this rank takes its part; each part is
    weighted by its share of the global batch times the world size (``dist`` averages gradients)."""
    from rlft.algorithms.preference import pair_accuracy, preference_loss
    from rlft.models.reward_model import encode, forward_scores

    loss_sum, right, diff = 0.0, 0.0, 0.0
    n_global, batch = len(batch), dist.split(batch)
    for chunk in torch.arange(len(batch)).chunk(config.optim.grad_accum):
        pairs = [batch[i] for i in chunk.tolist()]
        enc = encode(rm.tokenizer, [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] +
                     [p.rejected for p in pairs], config.rm.max_length)
        with autocast():
            scores = forward_scores(dist.forward(rm.model), enc)                       # (2b,)
        chosen, rejected = scores[: len(pairs)], scores[len(pairs):]                   # (b,), (b,)
        margin = torch.tensor([p.margin for p in pairs], device=scores.device)         # (b,)
        ties = torch.tensor([p.tie for p in pairs], device=scores.device) if tie else None
        loss = preference_loss(chosen, rejected, tie=ties, margin=margin, ties=config.rm.ties,
                               tie_free=tie.free if tie else None)
        dist.backward(loss * len(pairs) / n_global * dist.world)
        won = [i for i, p in enumerate(pairs) if not p.tie]
        loss_sum += loss.item() * len(pairs)
        right += pair_accuracy(chosen[won], rejected[won]).sum().item()
        diff += (chosen[won] - rejected[won]).sum().item()
    n_won = dist.sum(sum(not p.tie for p in batch))
    loss_sum, right, diff = dist.sum(loss_sum), dist.sum(right), dist.sum(diff)
    return {"loss": loss_sum / n_global, "accuracy": right / n_won if n_won else math.nan,
            "score_diff": diff / n_won if n_won else math.nan}


def _evaluate(rm: Any, pairs: list[Pair], config: Config, split: str) -> Any:
    """Pairwise accuracy (Wilson interval) and calibration of ``pairs``, scored in eval mode."""
    from rlft.eval.preference import pairwise_accuracy
    from rlft.models.reward_model import score_texts

    kw = {"batch_size": config.eval.batch_size, "max_length": config.rm.max_length}
    prompts = [p.prompt for p in pairs]
    chosen = score_texts(rm, prompts, [p.chosen for p in pairs], **kw).tolist()
    rejected = score_texts(rm, prompts, [p.rejected for p in pairs], **kw).tolist()
    return pairwise_accuracy(chosen, rejected, [p.tie for p in pairs], split=split, bins=config.rm.calibration_bins)


def _summary(ev: Any) -> dict[str, float]:
    return {"pairwise_accuracy": ev.accuracy, "accuracy_ci_low": ev.ci_low, "accuracy_ci_high": ev.ci_high,
            "pairs": ev.n, "score_diff": ev.mean_margin, "ece": ev.ece}


def _held_out(rm: Any, splits: dict[str, list[Pair]], config: Config, run: Run, tie_param: float | None) -> None:
    """The final model on the whole validation and test splits: printed, logged and written to
    ``eval/rm-<split>.json`` (with the calibration table and the tie parameter)."""
    from rlft.atomic import atomic_write
    from rlft.eval.preference import calibration_text
    from rlft.rundir import eval_path, jsonable

    if not run.dist.is_main:  # many processes: rank 0 scores and writes, the others wait at the export
        return
    for split in ("validation", "test"):
        if not splits.get(split) or not any(not p.tie for p in splits[split]):
            continue
        ev = _evaluate(rm, splits[split], config, split)
        body = {**ev.to_dict(), "step": run.result.step, "ties_model": config.rm.ties, "tie_param": tie_param}
        atomic_write(eval_path(run.run_dir, f"rm-{split}"),
                     json.dumps(jsonable(body), indent=2, ensure_ascii=False) + "\n")
        print(ev.describe())
        print(calibration_text(ev))
