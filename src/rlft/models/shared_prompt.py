"""The prompt-shared scoring pass (a speed path of ``rlft.models.logprobs``).

The G samples of a prompt are neighbouring rows of a rollout. Scoring them one row at a time runs
the same prompt G times; here each distinct prompt runs once and its keys and values are copied to
its rows, then the completions run on top: the same log-probabilities and gradients (up to float
summation order) for 1/G of the prompt tokens. ``completion_logprobs`` takes this path when
``prompt_groups`` finds shared prompts and ``prefix_cache`` knows it to be exact for the model.
"""

from __future__ import annotations

import torch

from rlft.models.forward import cache_kwarg, forward_accepts, output_cache, trunk_forward


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """``(group (n,), starts (n,) bool)``: rows that repeat the row above (the G samples of a prompt
    are neighbours in a rollout) share its group; None when no two neighbours share a prompt."""
    if prompt_ids.shape[0] < 2 or prompt_ids.shape[1] == 0:
        return None
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(-1) & (prompt_mask[1:] == prompt_mask[:-1]).all(-1)
    if not bool(same.any()):
        return None
    starts = torch.cat([same.new_ones(1), ~same])                                  # (n,)
    return starts.long().cumsum(0) - 1, starts


def prefix_cache(model):
    """An empty ``DynamicCache`` for running prompts once and completions on top, or None where
    that is not known to be exact (sliding-window or recurrent layers, gradient checkpointing,
    models without a cache argument): those take the one-pass path."""
    if _checkpointing(model) or not (forward_accepts(model, "cache") or forward_accepts(model, "past_key_values")):
        return None
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - older transformers, unusual configs: use the one-pass path
        return None
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return cache


def _checkpointing(model) -> bool:
    # transformers 5 renamed is_gradient_checkpointing (which now warns) to is_activation_checkpointing
    new = hasattr(type(model), "is_activation_checkpointing")
    return bool(getattr(model, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False))


def shared_prompt_logits(model, cache, group, starts, prompt_ids, prompt_mask, completion_ids,
                          completion_mask, hidden: bool = False, head: bool = True):
    """Run each distinct prompt once, copy its keys and values to the rows that share it, then run
    the completions on top: the logits (n, T, V) and, with ``hidden``, the last hidden states at
    the same positions (n, T, H), else None. ``head=False`` runs the trunk alone
    (``trunk_forward``): no logits (None) and always the hidden states, for a caller that projects
    them itself (``rlft.models.chunked_head``).

    A completion token attends to the same keys, values and mask as in one pass over prompt +
    completion, so the log-probabilities are the same (up to float summation order); gradients
    reach the prompt's forward through the cache. With G samples per prompt this skips (G-1)/G of
    the prompt tokens in the reference pass and in the policy's forward and backward.
    """
    t = completion_ids.shape[1]
    u_ids, u_mask = prompt_ids[starts], prompt_mask[starts]                        # (u, P)
    out = _run(model, head, hidden, input_ids=u_ids, attention_mask=u_mask,
               position_ids=(u_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, cache=cache, keep=1)
    # the last prompt column predicts y_0: (n, 1, V) and (n, 1, H)
    first, first_h = (None if x is None else x[:, -1:][group] for x in out[:2])
    if t == 1:
        return first, first_h
    cache = out[2]
    cache.batch_select_indices(group)                    # (u, ...) -> (n, ...), differentiable
    mask = torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1)                # (n, P+T-1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -(t - 1):]                # (n, T-1)
    logits, rest_h, _ = _run(model, head, hidden, input_ids=completion_ids[:, :-1], attention_mask=mask,
                             position_ids=position_ids, use_cache=True, cache=cache)
    logits = torch.cat([first, logits], dim=1) if head else None                    # (n, T, V)
    return logits, torch.cat([first_h, rest_h], dim=1) if rest_h is not None else None  # (n, T, H)


def _run(model, head: bool, hidden: bool, *, cache, keep: int | None = None, **kwargs):
    """One forward pass: ``(logits or None, last hidden states or None, the cache)``; without
    ``head`` the trunk alone, its hidden states returned always."""
    if not head:
        out = trunk_forward(model, cache=cache, **kwargs)
        return None, out.last_hidden_state, output_cache(out)
    if keep is not None and forward_accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    if hidden:
        kwargs["output_hidden_states"] = True
    out = model(**kwargs, **{cache_kwarg(model): cache})
    return out.logits, out.hidden_states[-1] if hidden else None, output_cache(out)
