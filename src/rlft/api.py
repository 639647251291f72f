"""Python entry points behind ``rlft eval`` and ``rlft generate``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlft.config import Config
from rlft.errors import RlftError

if TYPE_CHECKING:
    from rlft.eval.result import EvalResult


def evaluate_model(config: Config, *, split: str | None = None, tag: str = "eval", with_kl: bool = False,
                   ref: str | None = None, max_examples: int | None = None, parts: Any = None) -> EvalResult:
    """Greedy-decode the configured split and score it; writes ``output_dir/eval/<tag>.json``.

    Scores the whole split, or its first ``max_examples`` prompts. With ``eval.replay`` = N also a
    traffic replay of N requests (``rlft.eval.replay``), written to ``<tag>-replay.json`` and
    returned as the result's ``replay_eval``. ``with_kl``: also the KL to the
    starting model, ``ref`` (a model path or name) or, when not given, the ``model.name_or_path`` of
    the run whose output is evaluated (the config.yaml next to its final/ or checkpoints/ dir).
    """
    from rlft.eval.evaluate import evaluate
    from rlft.eval.result import write_eval
    from rlft.training.setup import build_parts

    parts = parts or build_parts(config)
    split = split or parts.config.eval.split
    if split not in parts.splits:
        raise RlftError(f"config: eval.split: unknown split '{split}' (have: {', '.join(parts.splits)})")
    examples = parts.splits[split][:max_examples]
    reference = _starting_model(parts, ref) if with_kl else None
    # Launched on many processes: each decodes its share of the batches; rank 0 writes.
    result = evaluate(parts, examples, reference=reference, tag=tag, split=split, dist=parts.dist)
    if parts.dist.is_main:
        write_eval(Path(parts.config.run.output_dir), result)
    if parts.config.eval.replay:  # new requests come from the evaluated split: held out from training
        from rlft.eval.replay import evaluate_replay, replay_for

        sample = replay_for(parts, parts.config.eval.replay, held_out=split)
        replay = evaluate_replay(parts, sample, tag=f"{tag}-replay", reference=reference)
        if parts.dist.is_main:
            write_eval(Path(parts.config.run.output_dir), replay)
        result = dataclasses.replace(result, replay_eval=replay)
    return result


def _starting_model(parts: Any, ref: str | None) -> Any:
    """The frozen model the evaluated one started from, as a ``Reference``: ``ref``, or the model
    named in the run's config.yaml when the evaluated model is a run's final/ or checkpoint dir."""
    from rlft.config import load_config
    from rlft.models.loading import load_policy
    from rlft.models.reference import Reference

    model_cfg = parts.config.model
    if ref is None:
        here = Path(model_cfg.name_or_path)
        # run_dir/final, run_dir/best, run_dir/checkpoints/step-N
        runs = [here.parent / "config.yaml", here.parent.parent / "config.yaml"]
        found = next((p for p in runs if here.is_dir() and p.is_file()), None)
        if found is None:
            raise RlftError(f"rlft eval --kl: name the starting model with --ref PATH ({model_cfg.name_or_path} "
                            "is not the output of a run with a config.yaml)")
        start = load_config(found).model
    else:
        start = dataclasses.replace(model_cfg, name_or_path=ref)
    reference = load_policy(start, device=parts.device).model
    reference.requires_grad_(False)
    return Reference(reference.eval())


def generate(config: Config, prompts: list[str], *, greedy: bool = True, samples: int = 1,
             parts: Any = None) -> list[list[str]]:
    """Completions for raw prompts (the data template is applied): ``samples`` per prompt."""
    from rlft.data.example import Example
    from rlft.data.templates import render
    from rlft.training.setup import build_parts

    parts = parts or build_parts(config, need_data=False)
    cfg, out = parts.config, []
    texts = render(cfg, parts.policy.tokenizer, [Example(p, ("",), str(i)) for i, p in enumerate(prompts)],
                   parts.max_prompt_tokens)
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
