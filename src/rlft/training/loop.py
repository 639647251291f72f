"""The RL fine-tuning loop: theta <- theta + alpha * grad E[R(y)], y ~ pi_theta(. | x).

One function, read top to bottom; the run scaffold (``rlft.training.run.Run``) holds what every
loop shares (resume, logging, evaluation and checkpoint cadence, export). Every step:

  1. pick B unique prompts (uniform, or by traffic weight count**alpha with a floor); on many
     processes every rank draws the same B and keeps its share (``rlft.training.distributed``);
  2. roll out G completions per prompt with the sampler (KV-cache decode);
  3. score them with the reward; a reward that raises or returns NaN/inf skips the step;
  4. advantages from the algorithm (REINFORCE / SCST / RLOO / GRPO per sequence; PPO per token, by
     GAE over a value head on the policy's trunk); the KL coefficient adapts (``algo.kl_target``);
  5. update (``rlft.training.update``): log-probabilities with grad in micro-batches, the
     policy-gradient loss with KL and entropy terms (PPO: and the clipped value loss), gradient
     clipping, AdamW steps (``updates_per_batch`` passes of ``minibatches`` steps);
  6. log (with the reward-hacking monitors of ``rlft.eval.monitors``); evaluate on validation at
     step 0 and every ``eval_every`` steps, checkpoint every ``save_every``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from rlft.config import Config
from rlft.training.run import Run, RunResult
from rlft.training.traffic import TrafficPrompts

__all__ = ["RLState", "RunResult", "train"]


@dataclass
class RLState:
    """The RL loop's own state: saved in every checkpoint (``trainer_state.json``), restored on resume."""

    algo: dict[str, Any] = field(default_factory=dict)  # the algorithm's running state (REINFORCE's baseline)
    skipped: int = 0                 # steps skipped so far: bad reward, non-finite loss or gradient
    consecutive_skips: int = 0       # skipped in a row; run.skip_bad_reward_limit of them stops the run
    warned_truncation: bool = False  # the warning about completions hitting max_new_tokens was shown
    kl_coef: float | None = None     # the KL coefficient now: algo.kl_coef, adapted when algo.kl_target > 0


@dataclass
class Scores:
    """Step 3's result for one batch of rollouts."""

    result: Any                            # rlft.rewards.RewardResult of the sampled completions
    rewards: torch.Tensor | None = None    # (B, G) the training signal (GDPO: terms standardized, summed)
    greedy: torch.Tensor | None = None     # (B,) the greedy completions' rewards (SCST's baseline)
    error: str | None = None               # why the step is skipped


def train(config: Config, parts: Any = None) -> RunResult:
    """Run RL fine-tuning as configured; returns where the run wrote its outputs.

    ``parts`` (from ``build_parts``) may be passed to reuse a loaded model and data; the model,
    data, reward and sampler then come from ``parts`` and every other setting from ``config``.
    """
    from rlft.algorithms import ALGORITHMS
    from rlft.algorithms.kl_control import adaptive_kl_coef
    from rlft.data.templates import render
    from rlft.eval.monitors import DivergenceWatch
    from rlft.models.loading import load_reference
    from rlft.rewards.registry import stateful_terms
    from rlft.models.value_head import value_head_for
    from rlft.training.setup import prepare_parts
    from rlft.training.update import UpdateBatch, UpdateSettings, update

    parts = prepare_parts(config, parts)
    config = parts.config  # task defaults applied
    ro, algo_cfg, policy, train_set, dist = config.rollout, config.algo, parts.policy, parts.splits["train"], parts.dist
    algo = ALGORITHMS[algo_cfg.name]
    value_head = value_head_for(policy.model) if algo.critic is not None else None  # PPO's critic (trunk shared)
    run = Run(config, parts, name="rl", total_steps=config.run.steps, dropout=False, eval_at_start=True,
              value_head=value_head)
    # The reference is the starting policy: taken before the resume loads a checkpoint's weights.
    reference = (load_reference(policy, config.model, bf16=parts.frozen_in_bf16)  # rlft.models.reference
                 if algo_cfg.kl_coef > 0 else None)
    traffic = TrafficPrompts(train_set, config.frequency, ro.prompts_per_step, config.run.seed)
    gen = torch.Generator().manual_seed(config.run.seed + 1)
    watch = DivergenceWatch()  # validation metric falling while the train reward rises
    state = run.resume(RLState(), generators={"rollout": gen},
                       stateful={**traffic.stateful(), "divergence_watch": watch,
                                 **stateful_terms(parts.reward_fn)})  # an rm: term's running statistics
    if state.kl_coef is None or algo_cfg.kl_target == 0:
        state.kl_coef = algo_cfg.kl_coef  # fixed, or where the adaptive coefficient starts
    settings = UpdateSettings.from_config(config, parts, clip=algo.clip)
    if run.eval_due(0):
        _validate(run, 0, reference, watch, traffic)
    for step in run.steps():
        t0 = time.perf_counter()
        # 1. prompts: B unique prompts; a prompt seen a million times in traffic is one row with a weight
        idx = traffic.sample()                                                 # (B,) the same on every rank
        mine = dist.share(len(idx), algo_cfg.minibatches)                      # (B / world,) this rank's
        batch = [train_set[i] for i in idx[mine].tolist()]
        prompts = render(config, policy.tokenizer, batch, parts.max_prompt_tokens)
        # 2. rollout: G completions per prompt
        rollout = parts.sampler.sample(prompts, ro.group_size, temperature=ro.temperature, top_p=ro.top_p,
                                       top_k=ro.top_k, max_new_tokens=ro.max_new_tokens,
                                       generator=dist.rollout_generator(gen, config.run.seed, step))
        t_gen = time.perf_counter() - t0
        # 3. rewards (a bad reward on any rank skips the step on all)
        scores = _score(parts, algo.needs_greedy, batch, prompts, rollout)
        error, kl_stats = dist.first_error(scores.error), {}
        if error is None:
            # 4. advantages, of R - kl_coef * KL(y) when the KL penalty is in the reward (algo.kl_mode);
            #    then the KL coefficient adapts to this batch's KL (algo.kl_target; 0 keeps it fixed)
            ref_lp, kl_stats = _reference_kl(reference, rollout, algo_cfg, settings)
            adv = _advantages(algo, algo_cfg, state, scores, rollout, ref_lp, policy.model, value_head, settings)
            weights = traffic.loss_weights(idx)[mine].repeat_interleave(ro.group_size).float()  # (N,)
            kl_coef, state.kl_coef = state.kl_coef, adaptive_kl_coef(
                state.kl_coef, kl_stats.get("kl_sequence", 0.0), target=algo_cfg.kl_target,
                horizon=algo_cfg.kl_horizon, n=len(idx) * ro.group_size)
            # 5. update; a non-finite loss or gradient skips it like a bad reward
            kl_loss_ref = ref_lp if algo_cfg.kl_mode == "loss" else None
            stats, error = update(policy.model, run.optimizer,
                                  UpdateBatch(rollout, adv.advantages, weights, kl_loss_ref, kl_coef,
                                              adv.old_logprobs, adv.returns, adv.old_values), settings, value_head)
            if algo_cfg.kl_target > 0:
                kl_stats["kl_coef"] = kl_coef
        run.scheduler_step()  # on skipped steps too: the learning-rate schedule follows the step number
        # 6. log, evaluate, checkpoint (a skipped step still evaluates and saves when due)
        times = {"step_time": time.perf_counter() - t0, "gen_time": t_gen}
        if error is not None:
            _log_skip(run, state, step, error)
        else:
            row = _train_row(config, run, scores, rollout, batch, idx, {**times, **kl_stats, **stats})
            watch.add(row["reward"])
            _log_train(run, state, step, row, ro.max_new_tokens)
        if run.eval_due(step):
            _validate(run, step, reference, watch, traffic)
        run.checkpoint(step, state)
    return run.finish()


def _score(parts: Any, needs_greedy: bool, batch: list, prompts: list[str], rollout: Any) -> Scores:
    """Step 3: the sampled completions' rewards, and the greedy completions' when the algorithm needs them."""
    from rlft.algorithms.gdpo import decoupled_rewards
    from rlft.rewards import score

    config, G, B = parts.config, rollout.group_size, len(batch)
    refs = [ex.references for ex in batch for _ in range(G)]
    # training=True: this batch (alone) updates an rm: term's running normalization
    scored = score(parts.reward_fn, [ex.prompt for ex in batch for _ in range(G)], rollout.texts, refs,
                   truncated=rollout.truncated.tolist(), training=True)
    out = Scores(scored, error=scored.error)
    if scored.error is None and needs_greedy:
        greedy = parts.sampler.greedy(prompts, max_new_tokens=config.rollout.max_new_tokens)
        g_scored = score(parts.reward_fn, [ex.prompt for ex in batch], greedy.texts,
                         [ex.references for ex in batch], truncated=greedy.truncated.tolist())
        out.error = g_scored.error
        if g_scored.rewards is not None:
            out.greedy = torch.tensor(g_scored.rewards, dtype=torch.float32)             # (B,)
    if out.error is None:
        out.rewards = torch.tensor(scored.rewards, dtype=torch.float32).view(B, G)        # (B, G)
        if config.reward.normalize_components:  # GDPO: each term standardized in its group, then summed
            out.rewards = decoupled_rewards(torch.tensor([c.values for c in scored.components]).view(-1, B, G),
                                            torch.tensor([c.weight for c in scored.components]))  # (B, G)
    return out


class Advantages(NamedTuple):
    """Step 4's result: what the update learns from."""

    advantages: torch.Tensor                  # (N,) per sequence, or (N, T) per token (PPO)
    returns: torch.Tensor | None = None       # (N, T) PPO: the value head's targets
    old_values: torch.Tensor | None = None    # (N, T) PPO: the value head's estimates now
    old_logprobs: torch.Tensor | None = None  # (N, T) PPO: log pi before the update, from the same pass


def _reference_kl(reference: Any, rollout: Any, algo_cfg: Any, settings: Any) -> tuple[torch.Tensor | None, dict]:
    """The reference's log-probs (N, T) or None, and the KL stats: 'kl_sequence' (the mean over
    completions of sum_t k1, what the adaptive coefficient reads) and, with the penalty in the
    reward, 'kl' (the token mean of k1; in the loss it comes from the loss)."""
    from rlft.algorithms import kl_reward, masked_mean
    from rlft.training.update import frozen_logprobs

    if reference is None:
        return None, {}
    with reference.active() as ref_model:
        ref_lp = frozen_logprobs(ref_model, rollout, settings)                            # (N, T)
    stats = {"kl_sequence": kl_reward(rollout.logprobs, ref_lp, rollout.completion_mask).mean().item()}
    if algo_cfg.kl_mode == "reward":
        stats["kl"] = masked_mean(rollout.logprobs - ref_lp, rollout.completion_mask).item()
    return ref_lp, settings.dist.mean_metrics(stats)  # equal shares: the mean of rank means is the batch's


def _advantages(algo: Any, algo_cfg: Any, state: RLState, scores: Scores, rollout: Any, ref_lp: torch.Tensor | None,
                model: Any, value_head: Any, settings: Any) -> Advantages:
    """Step 4. Per sequence: the algorithm's advantages of R - kl_coef * KL(y) when the KL penalty
    is in the reward. With a critic (PPO): R passes to GAE with the per-token k1 penalty and the
    value head's estimates, taken in one pass with the policy's log-probs before the update.

    On many processes the rewards (and PPO's per-token inputs) of every rank are gathered, so the
    advantages, the running baseline and the whitening are those of the global batch; each rank
    keeps its rows. Every estimator is per group or over the whole batch, so rank order is fine."""
    from rlft.algorithms import kl_penalty, kl_reward
    from rlft.training.update import frozen_logprobs_values

    dist, n, width = settings.dist, rollout.completion_mask.shape[0], rollout.completion_mask.shape[1]
    mask, penalty = rollout.completion_mask, ref_lp is not None and algo_cfg.kl_mode == "reward"
    rewards = scores.rewards                                                                  # (B, G)
    if penalty and algo.critic is None:
        rewards = rewards - state.kl_coef * kl_reward(rollout.logprobs, ref_lp, mask).view_as(rewards)
    greedy = dist.gather(scores.greedy) if scores.greedy is not None else None                # (B_all,)
    seq = algo.advantages(dist.gather(rewards), greedy_rewards=greedy, state=state.algo,
                          baseline_momentum=algo_cfg.baseline_momentum,
                          scale_rewards=algo_cfg.scale_rewards).reshape(-1)                   # (N_all,)
    if algo.critic is None:
        return Advantages(dist.mine(seq, n))
    old_lp, old_values = frozen_logprobs_values(model, value_head, rollout, settings)         # (N, T) each
    kl = dist.gather(kl_penalty(rollout.logprobs, ref_lp, "k1")) if penalty else None        # (N_all, T_all)
    advantages, returns = algo.critic(seq, mask=dist.gather(mask), kl=kl, kl_coef=state.kl_coef,
                                      values=dist.gather(old_values), gamma=algo_cfg.gamma, lam=algo_cfg.lam)
    return Advantages(dist.mine(advantages, n)[:, :width], dist.mine(returns, n)[:, :width], old_values, old_lp)


def _train_row(config: Config, run: Run, scores: Scores, rollout: Any, batch: list, idx: torch.Tensor,
               extra: dict[str, float]) -> dict[str, Any]:
    """Step 6's metrics.jsonl line: reward (the raw weighted sum, before any normalization), length,
    truncation, learning rate, timings, the update's stats and the reward-hacking monitors."""
    from rlft.eval.monitors import rollout_monitors

    G = rollout.group_size
    raw_rewards = run.dist.gather(torch.tensor(scores.result.rewards))                   # (N_all,)
    row = {"reward": raw_rewards.mean().item(), "reward_std": raw_rewards.std().item(),
           "length": rollout.lengths.float().mean().item(),
           "truncation_rate": rollout.truncated.float().mean().item(),
           "lr": run.lr, "step_time": extra.pop("step_time"), "gen_time": extra.pop("gen_time"),
           "unique_prompts": len(set(idx.tolist())), **extra}
    if scores.greedy is not None:
        row["greedy_reward"] = scores.greedy.mean().item()
    if getattr(rollout, "engine_logprobs", None) is not None:  # another engine sampled (vLLM): how far its log-probs are from ours
        from rlft.rollout.vllm_engine import logprob_mismatch

        row.update(logprob_mismatch(rollout.engine_logprobs, rollout.logprobs, rollout.completion_mask))
    row.update(rollout_monitors([ex.prompt for ex in batch for _ in range(G)], rollout.texts,
                                [ex.references for ex in batch for _ in range(G)], scores.rewards,
                                scores.result.components, language=config.eval.language, cjk=config.reward.cjk))
    return run.dist.mean_metrics(row)  # many processes: the means over ranks (equal shares), the slowest's times


def _log_train(run: Run, state: RLState, step: int, row: dict[str, Any], max_new_tokens: int) -> None:
    state.consecutive_skips = 0
    run.log_step(step, row, {"reward": row["reward"], "kl": row.get("kl", 0.0), "s/step": row["step_time"]})
    if row["truncation_rate"] > 0.5 and not state.warned_truncation:
        state.warned_truncation = True
        run.write(f"warning: {row['truncation_rate']:.0%} of completions hit rollout.max_new_tokens="
                  f"{max_new_tokens} without EOS; truncated text usually scores low, so raise "
                  "rollout.max_new_tokens if the references are longer")


def _log_skip(run: Run, state: RLState, step: int, error: str) -> None:
    """A skipped step: logged and counted; ``run.skip_bad_reward_limit`` of them in a row stop the run."""
    from rlft.errors import RlftError

    state.skipped += 1
    state.consecutive_skips += 1
    run.result.skipped_steps = state.skipped
    run.log_step(step, {"skipped": 1, "skipped_total": state.skipped, "reason": error}, {})
    run.write(f"step {step}: skipped, {error}")
    if state.consecutive_skips >= run.config.run.skip_bad_reward_limit:
        raise RlftError(f"run.skip_bad_reward_limit: {state.consecutive_skips} consecutive steps skipped; "
                        f"last: {error}")


def _validate(run: Run, step: int, reference: Any, watch: Any, traffic: TrafficPrompts) -> None:
    """Evaluate on validation; feed the divergence watch and the tail guard (which may reweight the tail)."""
    from rlft.eval.evaluate import log_summary

    ev = run.evaluate(step, reference=reference)
    flags = watch.update(ev.metric)
    run.logger.log(step, "validation", {**log_summary(ev), **flags})
    if flags["reward_metric_divergence"] and run.dist.is_main:
        print(watch.message(ev.metric_name))
    for s in ev.samples:
        run.logger.log_text(step, "samples", f"{s['prompt']}\n-> {s['output']}\n(ref: {s['reference']})")
    # The rare prompts: the training tail and prompts unseen in training (a held-out split's are all unseen).
    decision = traffic.guard_tail(ev.strata.get("rare"))
    if decision is not None and decision.message:  # every rank's guard acts alike: the gathered result is the same
        run.logger.log(step, "validation", {"tail_guard_multiplier": decision.multiplier})
        if run.dist.is_main:
            print(decision.message)
