"""Compiled decoding (``rollout.compile``, a speed path of ``rlft.rollout.plain``): the decode steps
of a decoder-only model run through ``torch.compile`` over a static KV cache.

Where a decode step is bound by running hundreds of small operators one by one (a small model on a
GPU, where each is a kernel launch), ``torch.compile`` traces the step once and fuses it into a
few generated kernels; for that the step's shapes must not change from one token
to the next, so the cache is transformers' ``StaticCache`` (room for the whole prompt plus
completion from the start) and the attention mask has its full width at every step. The prompt
is still prefilled once per prompt, in eager mode, into the plain cache (compiling the prefill
would recompile for every prompt width); its keys and values are then written into the static
cache. The first call compiles (once per process and shape: batch rows and prompt plus completion
width; after a second width torch marks the width dynamic and stops recompiling).

Measured (``python -m benchmarks.generation --compile``, BENCHMARKS.md): on a 2-core AMD EPYC with
AVX2 only, SmolLM2-135M, B=8 x G=4 x 24 tokens, it did not pay: 0.70x (fp32 full) to 1.04x (bf16
full) the eager loop's tokens/s, after 83-183 s of compilation. There the step is bound by its
matmuls and memory traffic, which compiling does not shrink. It is meant for GPUs, where a small
model's decode step is bound by kernel launches; that has not been measured here (no GPU).

Same tokens and log-probabilities as the eager loop up to floating-point summation order
(tested on tiny models; on SmolLM2-135M fp32, 8 prompts x 12 greedy tokens: the same tokens,
log-probabilities within 8e-6; 32 sampled rows of 24 tokens: 31 identical, one parted at step 17).
It falls back to the eager loop, with one warning, for caches it cannot build statically
(sliding-window or hybrid layers) and for models whose forward transformers does not mark as
compilable.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from rlft.models.forward import cache_kwarg, forward_accepts

log = logging.getLogger(__name__)


def static_copy(cache: Any, model: torch.nn.Module, length: int) -> Any | None:
    """A ``StaticCache`` with room for ``length`` tokens holding what ``cache`` (a prefilled plain
    cache, one row per sampled completion) holds, or None when this model's cache cannot be static.

    Each static layer takes the prefill's keys and values through its own ``update`` (which
    allocates its rows x heads x length buffers and sets its fill count), so no cache internals are
    written here.
    """
    try:
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer
    except ImportError:
        return None
    if not getattr(model, "_can_compile_fullgraph", False):
        return None
    layers = getattr(cache, "layers", None)
    try:
        static = StaticCache(config=model.config, max_cache_len=length)
    except Exception:  # noqa: BLE001 - configs StaticCache does not know: keep the eager loop
        return None
    if not layers or len(static.layers) != len(layers) or any(type(s) is not StaticLayer for s in static.layers):
        return None
    for target, source in zip(static.layers, layers):
        if source.keys is None or source.keys.numel() == 0:
            return None
        target.update(source.keys, source.values)
    return static


class CompiledStep:
    """One decode step, ``step(token (N,), mask (N, L), position (N, 1), at (int), cache) -> logits (N, V)``,
    compiled on first use. ``at`` is the cache slot of ``token`` (the prompt width plus the step);
    only a transformers whose forward takes ``cache_position`` reads it (from 5.24 the static cache
    counts its own fill).

    ``backend`` is torch.compile's (the tests use 'aot_eager', which traces the same graph without
    generating C++).
    """

    def __init__(self, model: torch.nn.Module, *, backend: str = "inductor"):
        self.model = model
        self.backend = backend
        self._fn: Callable | None = None
        self._cache_name = cache_kwarg(model)
        self._positions = forward_accepts(model, "cache_position")

    def __call__(self, token: torch.Tensor, mask: torch.Tensor, position: torch.Tensor, at: int,
                 cache: Any) -> torch.Tensor:
        if self._fn is None:
            self._fn = torch.compile(self._step, backend=self.backend)
        # the slot as a tensor: a Python int would be baked into the graph and recompile every step
        slot = torch.tensor([at], dtype=torch.long, device=token.device) if self._positions else None
        return self._fn(token, mask, position, slot, cache)

    def _step(self, token, mask, position, slot, cache):
        extra = {"cache_position": slot} if slot is not None else {}
        out = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                         **{self._cache_name: cache}, **extra)
        return out.logits[:, -1]
