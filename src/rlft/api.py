"""Python entry points behind ``rlft eval`` and ``rlft generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlft.config import Config
from rlft.errors import RlftError


def evaluate_model(config: Config, *, split: str | None = None, tag: str = "eval", with_kl: bool = False,
                   parts: Any = None) -> dict[str, Any]:
    """Greedy-decode the configured split and score it; writes ``output_dir/eval/<tag>.json``."""
    from rlft.eval.evaluate import evaluate, write_eval
    from rlft.training.setup import build_parts

    parts = parts or build_parts(config)
    split = split or parts.config.eval.split
    if split not in parts.splits:
        raise RlftError(f"config: eval.split: unknown split '{split}' (have: {', '.join(parts.splits)})")
    examples = parts.splits[split][: parts.config.eval.max_examples]
    reference = None
    if with_kl:
        from rlft.models.loading import load_reference

        reference = load_reference(parts.policy, parts.config.model)
    result = evaluate(parts, examples, reference=reference, tag=tag, split=split)
    write_eval(Path(parts.config.run.output_dir), result)
    return result


def generate(config: Config, prompts: list[str], *, greedy: bool = True, samples: int = 1,
             parts: Any = None) -> list[list[str]]:
    """Completions for raw prompts (the data template is applied): ``samples`` per prompt."""
    from rlft.data.example import Example
    from rlft.training.setup import build_parts, render

    parts = parts or build_parts(config, need_data=False)
    cfg, out = parts.config, []
    texts = render(cfg, parts.policy.tokenizer, [Example(p, ("",), str(i)) for i, p in enumerate(prompts)])
    gen = torch.Generator().manual_seed(cfg.run.seed)
    for start in range(0, len(texts), cfg.eval.batch_size):
        chunk = texts[start:start + cfg.eval.batch_size]
        if greedy:
            rollout = parts.sampler.greedy(chunk, max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens)
            out.extend([t] for t in rollout.texts)
        else:
            ro = cfg.rollout
            rollout = parts.sampler.sample(chunk, samples, temperature=ro.temperature, top_p=ro.top_p, top_k=ro.top_k,
                                           max_new_tokens=ro.max_new_tokens, generator=gen)
            out.extend(rollout.texts[i * samples:(i + 1) * samples] for i in range(len(chunk)))
    return out
