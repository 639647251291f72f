"""Synthetic preference pairs from a model's own samples (``rlft rm pairs``): AI feedback, where
the judge is a reference metric, not a person.

Every row says so: ``annotator`` is ``'synthetic:<reward.spec>'`` and ``synthetic`` is true, with
both completions' metric scores. Such pairs test the reward-model pipeline and teach a reward
model to imitate the metric; they are no evidence about human preferences. Steps:

  1. the prompts of the training split (``data.*``, a task's defaults applied; ``data.max_examples`` caps);
  2. sample ``rollout.group_size`` completions per prompt (``rollout.*``, as an RL step samples);
  3. score each against the prompt's references with ``reward.spec`` (the reference metric);
  4. pair: up to ``rm.pairs_per_prompt`` pairs of distinct texts drawn at random (seeded by
     ``run.seed``); the higher-scoring one is ``chosen``, and a pair closer than ``rm.pair_margin``
     is written as a tie;
  5. write the JSONL file (atomically), readable by ``rlft rm train`` as ``data.train``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from rlft.config import Config
from rlft.errors import RlftError


def write_pairs(config: Config, out: str | Path) -> str:
    """Write the pairs to ``out``; a one-line summary."""
    from rlft.atomic import atomic_write
    from rlft.data.loading import jsonl_text
    from rlft.data.templates import render
    from rlft.rewards import score
    from rlft.training.setup import prepare_parts

    parts = prepare_parts(config)
    config, ro = parts.config, parts.config.rollout
    prompts = parts.splits["train"]  # 1.
    gen = torch.Generator().manual_seed(config.run.seed + 1)
    rng = random.Random(config.run.seed)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(prompts), ro.prompts_per_step):
        batch = prompts[start:start + ro.prompts_per_step]
        # 2. sample
        rollout = parts.sampler.sample(render(config, parts.policy.tokenizer, batch, parts.max_prompt_tokens),
                                       ro.group_size, temperature=ro.temperature, top_p=ro.top_p, top_k=ro.top_k,
                                       max_new_tokens=ro.max_new_tokens, generator=gen)
        # 3. score
        scored = score(parts.reward_fn, [ex.prompt for ex in batch for _ in range(ro.group_size)], rollout.texts,
                       [ex.references for ex in batch for _ in range(ro.group_size)],
                       truncated=rollout.truncated.tolist())
        if scored.error is not None:
            raise RlftError(f"reward.spec: {scored.error}")
        # 4. pair
        for i, ex in enumerate(batch):
            group = slice(i * ro.group_size, (i + 1) * ro.group_size)
            rows += _pairs(ex.prompt, rollout.texts[group], scored.rewards[group], config, rng)
    if not rows:
        raise RlftError(f"rlft rm pairs: no pair written: every prompt's {ro.group_size} samples "
                        "(rollout.group_size) were identical texts")
    # 5. write
    path = atomic_write(out, jsonl_text(rows))
    ties = sum(r["tie"] for r in rows)
    return f"wrote {len(rows)} synthetic pairs ({ties} ties) from {len(prompts)} prompts to {path}"


def _pairs(prompt: str, texts: list[str], scores: list[float], config: Config, rng: random.Random) -> list[dict]:
    """Step 4 for one prompt: random pairs of distinct texts, ordered by the metric."""
    best: dict[str, float] = {}
    for text, s in zip(texts, scores):  # a text sampled twice is one candidate
        best.setdefault(text, s)
    candidates = [(a, b) for i, a in enumerate(best) for b in list(best)[i + 1:] if a.strip() and b.strip()]
    rng.shuffle(candidates)
    out = []
    for a, b in candidates[: config.rm.pairs_per_prompt]:
        chosen, rejected = (a, b) if best[a] >= best[b] else (b, a)
        tie = best[chosen] - best[rejected] < config.rm.pair_margin
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "tie": tie,
                    "annotator": f"synthetic:{config.reward.spec}", "synthetic": True,
                    "scores": [best[chosen], best[rejected]]})
    return out
