"""What a transformers model's forward takes and returns, across transformers versions."""

from __future__ import annotations

import inspect


def cache_kwarg(model) -> str:
    """The forward argument that takes a KV cache: ``cache`` from transformers 5.24 on,
    ``past_key_values`` before (still accepted there, with a deprecation warning)."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def output_cache(out):
    """The KV cache of a model output, under either of transformers' names for it."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def forward_accepts(model, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name`` (e.g. ``logits_to_keep``)."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def trunk_forward(model, **kwargs):
    """``model.base_model(**kwargs)``: the transformer without its LM head, for callers that project
    the last hidden states themselves (``rlft.models.chunked_head``). ``cache=`` is passed under the
    trunk's own name for it. Returns the trunk's output (``last_hidden_state``, the cache)."""
    trunk = model.base_model
    if "cache" in kwargs:
        kwargs[cache_kwarg(trunk)] = kwargs.pop("cache")
    return trunk(**kwargs)
