"""The RL fine-tuning loop: theta <- theta + alpha * grad E[R(y)], y ~ pi_theta(. | x).

One function, read top to bottom. Every step:

  1. pick B unique prompts (uniform, or by traffic weight count**alpha with a floor);
  2. roll out G completions per prompt with the sampler (KV-cache decode);
  3. score them with the reward; a reward that raises or returns NaN/inf skips the step;
  4. advantages from the algorithm (REINFORCE / SCST / RLOO / GRPO);
  5. update: log-probabilities with grad in micro-batches, the policy-gradient loss with KL
     and entropy terms, gradient clipping, one AdamW step (``updates_per_batch`` times);
  6. log (with the reward-hacking monitors of ``rlft.eval.monitors``); every ``eval_every`` steps
     evaluate on validation, every ``save_every`` checkpoint.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlft.config import Config


@dataclass
class RunResult:
    run_dir: Path
    step: int
    final_dir: Path | None
    evals: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0


def train(config: Config, parts: Any = None) -> RunResult:
    """Run RL fine-tuning as configured; returns where the run wrote its outputs.

    ``parts`` (from ``build_parts``) may be passed to reuse a loaded model and data; the model,
    data, reward and sampler then come from ``parts`` and every other setting from ``config``.
    """
    from rlft.algorithms import ALGORITHMS, kl_reward, masked_mean, rl_loss
    from rlft.data.buckets import TailGuard, apply_tail_boost, assign_buckets
    from rlft.data.sampling import PromptSampler, traffic_weights
    from rlft.data.templates import render
    from rlft.algorithms.gdpo import decoupled_rewards
    from rlft.eval.evaluate import evaluate, log_summary
    from rlft.eval.monitors import DivergenceWatch, rollout_monitors
    from rlft.models.loading import disable_dropout, load_reference
    from rlft.models.logprobs import completion_logprobs
    from rlft.rewards import score
    from rlft.training.checkpoint import export_final, prune_checkpoints, resume_latest, save_checkpoint
    from rlft.training.metrics import MetricsLogger, save_resolved_config
    from rlft.training.optim import build_optimizer, build_scheduler
    from rlft.training.progress import Progress
    from rlft.training.setup import config_dict, prepare_parts

    parts = prepare_parts(config, parts)
    config = parts.config  # task defaults applied
    run, ro, algo_cfg = config.run, config.rollout, config.algo
    algo = ALGORITHMS[algo_cfg.name]
    policy, model = parts.policy, parts.policy.model
    disable_dropout(model)
    reference = load_reference(policy, config.model) if algo_cfg.kl_coef > 0 else None  # rlft.models.reference
    train_set = parts.splits["train"]
    val_set = parts.splits.get("validation", [])[: config.eval.max_examples]
    run_dir = Path(run.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, run.steps)
    # Traffic weighting: target p_i ~ count_i**alpha with a floor. 'sample' draws prompts by p;
    # 'loss' draws uniformly and weights the loss by p / uniform. Either way the expected
    # gradient is that of the traffic-weighted objective, and compute scales with unique prompts.
    freq = config.frequency
    counts = torch.tensor([ex.count for ex in train_set], dtype=torch.float64)
    target = traffic_weights(counts, freq.alpha, freq.floor)                       # (U,)
    uniform = torch.full_like(target, 1.0 / len(target))
    is_tail = torch.tensor([b == "tail" for b in assign_buckets(counts.tolist(), freq.head_share, freq.torso_share)])
    guard = TailGuard(freq.tail_guard, freq.tail_guard_boost)

    def set_weights(p: torch.Tensor) -> None:
        if freq.mode == "sample":
            prompt_sampler.set_probs(p)
        else:
            prompt_sampler.set_probs(uniform, target=p)

    prompt_sampler = PromptSampler(target if freq.mode == "sample" else uniform, ro.prompts_per_step,
                                   seed=run.seed, target=None if freq.mode == "sample" else target)
    gen = torch.Generator().manual_seed(run.seed + 1)
    state: dict[str, Any] = {"algo": {}, "skipped": 0, "consecutive_skips": 0}

    watch = DivergenceWatch()  # validation metric falling while the train reward rises
    stateful = {"prompt_sampler": prompt_sampler, "tail_guard": guard, "divergence_watch": watch}  # in 'extra'
    resumed = resume_latest(run_dir, model=policy.trainable, optimizer=optimizer, scheduler=scheduler,
                            generators={"rollout": gen}, state=state, stateful=stateful) if run.resume else None
    start_step = resumed or 0
    save_resolved_config(run_dir, config_dict(config))
    logger = MetricsLogger(run_dir, tensorboard=run.tensorboard, resume_step=resumed)
    result = RunResult(run_dir, start_step, None)

    def run_eval(step: int) -> None:
        ev = evaluate(parts, val_set, reference=reference, tag=f"step-{step:08d}", step=step)
        flags = watch.update(ev["metric"])
        logger.log(step, "validation", {**log_summary(ev), **flags})
        if flags["reward_metric_divergence"]:
            print(watch.message(ev["metric_name"]))
        for s in ev["samples"]:
            logger.log_text(step, "samples", f"{s['prompt']}\n-> {s['output']}\n(ref: {s['reference']})")
        result.evals.append(ev)
        # The rare prompts: the training tail and prompts unseen in training (a held-out split's are all unseen).
        decision = guard.update(ev["rare"]) if ev.get("rare") is not None else None
        if decision is not None and decision.message:
            logger.log(step, "validation", {"tail_guard_multiplier": decision.multiplier})
            print(decision.message)
        if decision is not None:
            set_weights(apply_tail_boost(target, is_tail, decision.multiplier))

    if start_step == 0 and val_set:
        run_eval(0)
    progress = Progress(total=run.steps, initial=start_step, enabled=run.progress)
    for step in range(start_step + 1, run.steps + 1):
        t0 = time.perf_counter()
        # 1. prompts: B unique prompts; a prompt seen a million times in traffic is one row with a weight
        idx = prompt_sampler.sample()                                          # (B,)
        batch = [train_set[i] for i in idx.tolist()]
        prompts = render(config, policy.tokenizer, batch, parts.max_prompt_tokens)
        # 2. rollout: G completions per prompt
        rollout = parts.sampler.sample(prompts, ro.group_size, temperature=ro.temperature, top_p=ro.top_p,
                                       top_k=ro.top_k, max_new_tokens=ro.max_new_tokens, generator=gen)
        t_gen = time.perf_counter() - t0
        # 3. rewards
        refs = [ex.references for ex in batch for _ in range(ro.group_size)]
        raw = [ex.prompt for ex in batch for _ in range(ro.group_size)]
        scored = score(parts.reward_fn, raw, rollout.texts, refs, truncated=rollout.truncated.tolist())
        greedy_rewards = None
        if scored.error is None and algo.needs_greedy:
            greedy = parts.sampler.greedy(prompts, max_new_tokens=ro.max_new_tokens)
            g_scored = score(parts.reward_fn, [ex.prompt for ex in batch], greedy.texts,
                             [ex.references for ex in batch], truncated=greedy.truncated.tolist())
            scored = g_scored if g_scored.error is not None else scored
            if g_scored.rewards is not None:
                greedy_rewards = torch.tensor(g_scored.rewards, dtype=torch.float32)
        error = scored.error
        if error is None:
            rewards = torch.tensor(scored.rewards, dtype=torch.float32).view(len(batch), ro.group_size)  # (B, G)
            if config.reward.normalize_components:  # GDPO: each term standardized in its group, then summed
                rewards = decoupled_rewards(torch.tensor([c.values for c in scored.components]).view(
                    -1, len(batch), ro.group_size), torch.tensor([c.weight for c in scored.components]))  # (B, G)
            # 4. advantages, of R - kl_coef * KL(y) when the KL penalty is in the reward (algo.kl_mode)
            ref_lp, kl_stats, penalized = None, {}, rewards
            if reference is not None:
                with reference.active() as ref_model:
                    ref_lp = _frozen_logprobs(ref_model, rollout, config, parts, completion_logprobs)  # (N, T)
            if ref_lp is not None and algo_cfg.kl_mode == "reward":
                kl = kl_reward(rollout.logprobs, ref_lp, rollout.completion_mask)                 # (N,)
                penalized = rewards - algo_cfg.kl_coef * kl.view_as(rewards)                      # (B, G)
                kl_stats["kl"] = masked_mean(rollout.logprobs - ref_lp, rollout.completion_mask).item()
            advantages = algo.advantages(penalized, greedy_rewards=greedy_rewards, state=state["algo"],
                                         baseline_momentum=algo_cfg.baseline_momentum,
                                         scale_rewards=algo_cfg.scale_rewards).reshape(-1)       # (N,)
            weights = prompt_sampler.loss_weights(idx).repeat_interleave(ro.group_size).float()  # (N,)
            # 5. update; a non-finite loss or gradient skips it like a bad reward
            stats, error = _update(model, rollout, ref_lp if algo_cfg.kl_mode == "loss" else None, advantages,
                                   weights, config, parts, optimizer, algo.clip, completion_logprobs, rl_loss)
        with warnings.catch_warnings():  # on skipped steps too: the learning-rate schedule follows the step number
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            scheduler.step()
        # 6. log, evaluate, checkpoint (a skipped step still evaluates and saves when due)
        step_time = time.perf_counter() - t0
        if error is not None:
            state["skipped"] += 1
            state["consecutive_skips"] += 1
            result.skipped_steps = state["skipped"]
            logger.log(step, "train", {"skipped": 1, "skipped_total": state["skipped"], "reason": error})
            progress.write(f"step {step}: skipped, {error}")
            if state["consecutive_skips"] >= run.skip_bad_reward_limit:
                from rlft.errors import RlftError

                raise RlftError(f"run.skip_bad_reward_limit: {state['consecutive_skips']} consecutive steps skipped; "
                                f"last: {error}")
            progress.update(1, {})
        else:
            state["consecutive_skips"] = 0
            raw_rewards = torch.tensor(scored.rewards)  # (N,) the weighted sum, before any normalization
            row = {"reward": raw_rewards.mean().item(), "reward_std": raw_rewards.std().item(),
                   "length": rollout.lengths.float().mean().item(),
                   "truncation_rate": rollout.truncated.float().mean().item(),
                   "lr": scheduler.get_last_lr()[0], "step_time": step_time, "gen_time": t_gen,
                   "unique_prompts": len(set(idx.tolist())), **kl_stats, **stats}
            if greedy_rewards is not None:
                row["greedy_reward"] = greedy_rewards.mean().item()
            row.update(rollout_monitors(raw, rollout.texts, refs, rewards, scored.components,
                                        language=config.eval.language, cjk=config.reward.cjk))
            watch.add(row["reward"])
            logger.log(step, "train", row)
            if row["truncation_rate"] > 0.5 and not state.get("warned_truncation"):
                state["warned_truncation"] = True
                progress.write(f"warning: {row['truncation_rate']:.0%} of completions hit rollout.max_new_tokens="
                               f"{ro.max_new_tokens} without EOS; truncated text usually scores low, so raise "
                               "rollout.max_new_tokens if the references are longer")
            progress.update(1, {"reward": row["reward"], "kl": row.get("kl", 0.0), "s/step": step_time})
        result.step = step
        if (run.eval_every and step % run.eval_every == 0 or step == run.steps) and val_set:
            run_eval(step)
        if run.save_every and step % run.save_every == 0 or step == run.steps:
            save_checkpoint(run_dir, step, model=policy.trainable, tokenizer=policy.tokenizer, optimizer=optimizer,
                            scheduler=scheduler, state={
                                "state": _jsonable(state), "generators": {"rollout": gen},
                                "extra": {name: obj.state_dict() for name, obj in stateful.items()}})
            prune_checkpoints(run_dir, run.keep_checkpoints)
    progress.close()
    result.final_dir = export_final(run_dir, policy.trainable, policy.tokenizer)
    logger.close()
    return result


def _update(model, rollout, ref_lp, advantages, weights, config, parts, optimizer, clip,
            completion_logprobs, rl_loss) -> tuple[dict[str, float], str | None]:
    """``updates_per_batch`` optimizer steps on one batch of rollouts, in ``grad_accum`` micro-batches.

    Each micro-batch's loss is normalized by the whole batch's token (or row) count, so the
    accumulated gradient equals the gradient of the whole batch at once; the logged token means
    (kl, entropy, clip_frac, ratio_mean) are weighted by each micro-batch's tokens, so they are
    the batch's token means whatever ``grad_accum`` is. ``ref_lp`` (N, T): the reference's
    log-probs for a KL loss term (None: no KL term). Log-probabilities are taken at the sampling
    temperature. Returns the stats and None, or the stats so far and the reason when a loss or
    gradient is not finite: that optimizer step is not taken.
    """
    algo_cfg, n = config.algo, rollout.completion_ids.shape[0]
    mask = rollout.completion_mask
    normalizer = mask.sum() if algo_cfg.loss_norm == "token" else torch.tensor(float(n))
    chunks = [c for c in torch.arange(n).chunk(config.optim.grad_accum) if len(c)]
    temperature = config.rollout.temperature
    old_lp = None
    if algo_cfg.updates_per_batch > 1:  # the policy before this batch's first update
        old_lp = _frozen_logprobs(model, rollout, config, parts, completion_logprobs)
    model.train()
    totals: dict[str, float] = {}
    error = None
    for _ in range(algo_cfg.updates_per_batch):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for c in chunks:
            with parts.autocast():
                lp, ent = completion_logprobs(model, _rows(rollout, c), is_seq2seq=parts.policy.is_seq2seq,
                                              with_entropy=algo_cfg.entropy_coef > 0, temperature=temperature)
            lp = lp.float()
            loss, stats = rl_loss(
                lp, old_lp[c] if old_lp is not None else lp.detach(), advantages[c], mask[c],
                ref_logprobs=ref_lp[c] if ref_lp is not None else None, kl_coef=algo_cfg.kl_coef,
                kl_estimator=algo_cfg.kl_estimator, entropy=ent.float() if ent is not None else None,
                entropy_coef=algo_cfg.entropy_coef, clip_eps=algo_cfg.clip_eps if clip else None,
                loss_norm=algo_cfg.loss_norm, normalizer=normalizer,
                weights=weights[c] if weights is not None else None)
            loss.backward()
            step_loss += loss.item()
            # loss and pg_loss are normalized by the whole batch already: micro-batch values add up
            totals["pg_loss"] = totals.get("pg_loss", 0.0) + float(stats.pop("pg_loss"))
            tokens = float(mask[c].sum() / mask.sum().clamp(min=1))  # this micro-batch's share of the tokens
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v) * tokens
        totals["loss"] = totals.get("loss", 0.0) + step_loss
        params = [p for p in model.parameters() if p.grad is not None]
        if config.optim.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.optim.max_grad_norm))
        else:
            grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        totals["grad_norm"] = grad_norm
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            error = f"non-finite {'loss' if not math.isfinite(step_loss) else 'gradient'}; update skipped"
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
    model.eval()
    k = algo_cfg.updates_per_batch
    return {key: (v / k if key != "grad_norm" else v) for key, v in totals.items()}, error


def _frozen_logprobs(model, rollout, config, parts, completion_logprobs) -> torch.Tensor:
    """log pi(y_t) of the sampled tokens at the sampling temperature, no grad, in the
    ``grad_accum`` micro-batches of the update (memory).  # (N, T) fp32"""
    n = rollout.completion_ids.shape[0]
    chunks = [c for c in torch.arange(n).chunk(config.optim.grad_accum) if len(c)]
    with torch.no_grad(), parts.autocast():
        return torch.cat([completion_logprobs(model, _rows(rollout, c), is_seq2seq=parts.policy.is_seq2seq,
                                              temperature=config.rollout.temperature)[0] for c in chunks]).float()


def _rows(rollout, idx):
    """A view of some rows of a rollout, enough for log-probabilities."""
    from types import SimpleNamespace

    return SimpleNamespace(prompt_ids=rollout.prompt_ids[idx], prompt_mask=rollout.prompt_mask[idx],
                           completion_ids=rollout.completion_ids[idx], completion_mask=rollout.completion_mask[idx])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
