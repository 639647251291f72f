"""What a sampling engine returns, and the interface every engine implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Rollout:
    """N = B * G sampled completions; row ``i`` belongs to prompt ``i // G``.

    For decoder-only models ``prompt_ids`` are left-padded so that every completion starts
    at the same column; for encoder-decoders they are the (right-padded) encoder inputs.
    """

    prompt_ids: torch.Tensor        # (N, P) long; left-padded for decoder-only, right-padded encoder inputs for seq2seq
    prompt_mask: torch.Tensor       # (N, P) long, 1 = real token
    completion_ids: torch.Tensor    # (N, T) long, padded with pad_token_id after EOS
    completion_mask: torch.Tensor   # (N, T) float, 1 = generated token (EOS included)
    logprobs: torch.Tensor          # (N, T) float, log softmax(logits / temperature)[token] (before top-p/k)
    truncated: torch.Tensor         # (N,) bool, reached max_new_tokens without EOS
    texts: list[str]                # N decoded completions (special tokens and padding removed)
    group_size: int                 # G
    engine_logprobs: torch.Tensor | None = None  # (N, T) an engine's own log-probs when the trainer re-scored
                                                 # the tokens into `logprobs` (vLLM); None: `logprobs` are the engine's

    @property
    def lengths(self) -> torch.Tensor:  # (N,)
        return self.completion_mask.sum(-1)


class Sampler(Protocol):
    """A rollout engine. ``sample`` draws G completions per prompt; ``greedy`` decodes one."""

    def sample(self, prompts: list[str], group_size: int, *, temperature: float, top_p: float,
               top_k: int, max_new_tokens: int, generator: torch.Generator | None) -> Rollout: ...

    def greedy(self, prompts: list[str], *, max_new_tokens: int) -> Rollout: ...
