"""Sampling engines behind the small ``Sampler`` interface."""

from __future__ import annotations

from typing import Any

from rlft.errors import RlftError
from rlft.rollout.base import Rollout, Sampler
from rlft.rollout.plain import PlainSampler
from rlft.rollout.vllm_engine import VLLMSampler  # imports vLLM only when one is built

ENGINES: dict[str, Any] = {"plain": PlainSampler, "vllm": VLLMSampler}


def build_sampler(name: str, policy: Any, **kwargs: Any) -> Sampler:
    """``ENGINES[name](policy, **kwargs)``, e.g. ``build_sampler('plain', policy, max_prompt_tokens=256,
    overlong='truncate', device='cpu')``."""
    if name not in ENGINES:
        raise RlftError(f"config: rollout.engine: unknown engine '{name}' (known: {', '.join(sorted(ENGINES))})")
    return ENGINES[name](policy, **kwargs)


__all__ = ["ENGINES", "PlainSampler", "Rollout", "Sampler", "VLLMSampler", "build_sampler"]
