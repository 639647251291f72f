"""Per-token log-probabilities (and entropies) of given completions under a model.

Used for the policy during the update, for the frozen reference (KL), and by the SFT loop with the
reference text as the "completion". Only the completion positions are projected onto the
vocabulary, which for a 50k-150k vocabulary is most of the memory of a forward pass, and for
decoder-only models whose head is a plain linear layer they go through it a chunk of rows at a time
without ever holding all logits (``rlft.models.chunked_head``). Rows that share a prompt (the G
samples of a rollout) run it once: ``rlft.models.shared_prompt``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from rlft.models.chunked_head import head_logprobs, linear_head
from rlft.models.forward import forward_accepts, trunk_forward
from rlft.models.shared_prompt import prefix_cache, prompt_groups, shared_prompt_logits


class RolloutLike(Protocol):
    prompt_ids: torch.Tensor        # (N, P) causal: left-padded; seq2seq: encoder inputs
    prompt_mask: torch.Tensor       # (N, P)
    completion_ids: torch.Tensor    # (N, T)
    completion_mask: torch.Tensor   # (N, T) 1 = real completion token (EOS included)


def completion_logprobs(model: Any, rollout_like: RolloutLike, *, is_seq2seq: bool,
                        with_entropy: bool = False, chunk: int | None = None, temperature: float = 1.0,
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi_T(y_t | x, y_<t) for every completion token, and optionally the entropy H_t of pi_T.

    pi_T = softmax(logits / temperature): the distribution the sampler draws from at that
    temperature (before top-k/top-p), so the RL loss sees the policy that produced the samples
    (TRL and verl divide the logits the same way).

    Returns ``(logprobs (N, T), entropy (N, T) or None)`` in fp32. Values at positions where
    ``completion_mask == 0`` are finite but meaningless. ``chunk`` bounds the rows per forward pass
    (memory); gradients flow unless the caller wraps this in ``torch.no_grad()``.
    """
    logprobs, entropy, _ = completion_logprobs_values(model, None, rollout_like, is_seq2seq=is_seq2seq,
                                                      with_entropy=with_entropy, chunk=chunk, temperature=temperature)
    return logprobs, entropy


def completion_logprobs_values(model: Any, value_head: Any, rollout_like: RolloutLike, *, is_seq2seq: bool,
                               with_entropy: bool = False, chunk: int | None = None, temperature: float = 1.0,
                               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``completion_logprobs`` and, from the same forward pass, ``value_head`` applied to the last
    hidden state at each completion position: V(x, y_<t) (N, T) in fp32, None without a head
    (``rlft.models.value_head``). Returns ``(logprobs, entropy or None, values or None)``."""
    n = rollout_like.completion_ids.shape[0]
    step = chunk or n
    parts = [_logprobs_rows(model, value_head, rollout_like, slice(i, i + step), is_seq2seq, with_entropy,
                            temperature) for i in range(0, n, step)]
    logprobs = torch.cat([p[0] for p in parts])
    entropy = torch.cat([p[1] for p in parts]) if with_entropy else None
    values = torch.cat([p[2] for p in parts]) if value_head is not None else None
    return logprobs, entropy, values


def _logprobs_rows(model, value_head, r: RolloutLike, rows: slice, is_seq2seq: bool, with_entropy: bool,
                   temperature: float):
    head = None if is_seq2seq else linear_head(model)
    if head is not None:  # the head in chunks of rows: never the (n, T, V) logits, forward or backward
        _, hidden = _completion_logits(model, r, rows, is_seq2seq, hidden=True, head=False)   # (n, T, H)
        logprobs, entropy = head_logprobs(hidden, head, r.completion_ids[rows], temperature=temperature,
                                          with_entropy=with_entropy)
        return logprobs, entropy, value_head(hidden) if value_head is not None else None
    logits, hidden = _completion_logits(model, r, rows, is_seq2seq, hidden=value_head is not None)  # (n, T, V)
    if temperature != 1.0:
        logits = logits.float() / temperature
    logprobs, entropy = token_logprobs(logits, r.completion_ids[rows], with_entropy)
    return logprobs, entropy, value_head(hidden) if value_head is not None else None


def completion_token_logprobs(model: Any, rollout_like: RolloutLike, *, is_seq2seq: bool) -> torch.Tensor:
    """The full next-token log-distribution at every completion position, (N, T, V) in fp32.

    For exact per-position KL between two models along given outputs (evaluation); the
    training path never materializes this tensor.
    """
    n = rollout_like.completion_ids.shape[0]
    logits, _ = _completion_logits(model, rollout_like, slice(0, n), is_seq2seq)
    return torch.log_softmax(logits.float(), dim=-1)


def _completion_logits(model, r: RolloutLike, rows: slice, is_seq2seq: bool, hidden: bool = False,
                       head: bool = True):
    """The logits (n, T, V) at the completion positions and, with ``hidden``, the last hidden
    states there (n, T, H): the LM head's input, where a value head reads (else None).
    ``head=False`` (decoder-only): the trunk alone, ``(None, hidden states)``."""
    prompt_ids, prompt_mask = r.prompt_ids[rows], r.prompt_mask[rows]            # (n, P)
    completion_ids = r.completion_ids[rows]                                        # (n, T)
    completion_mask = (r.completion_mask[rows] > 0).to(prompt_mask.dtype)          # (n, T)
    if not is_seq2seq:
        return _causal_completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, hidden, head)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, decoder_input_ids=_shift_right(model, completion_ids),
                **({"output_hidden_states": True} if hidden else {}))
    return out.logits, out.decoder_hidden_states[-1] if hidden else None          # (n, T, V), (n, T, H)


def _causal_completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, hidden=False,
                              head=True):
    t = completion_ids.shape[1]
    if prompt_mask.shape[1]:
        # Columns that are padding in every row (a micro-batch of short prompts) carry nothing.
        first_col = int(prompt_mask.any(0).int().argmax())
        prompt_ids, prompt_mask = prompt_ids[:, first_col:], prompt_mask[:, first_col:]   # (n, P)
    groups = prompt_groups(prompt_ids, prompt_mask)
    cache = prefix_cache(model) if groups is not None else None
    if cache is not None:
        return shared_prompt_logits(model, cache, *groups, prompt_ids, prompt_mask, completion_ids,
                                    completion_mask, hidden=hidden, head=head)
    # The logits at column j predict token j+1, so the last completion token is never an input:
    # the model sees prompt + y_<T and we keep the logits of its last T columns.
    input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)             # (n, P+T-1)
    mask = torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1)                # (n, P+T-1)
    # Left padding: the first real token is position 0, as in the sampler's prefill.
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    if not head:
        out = trunk_forward(model, input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                            use_cache=False)
        return None, out.last_hidden_state[:, -t:]                                 # (n, T, H)
    kwargs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids,
              **({"output_hidden_states": True} if hidden else {})}
    if forward_accepts(model, "logits_to_keep"):
        # transformers slices the hidden states before the LM head (and applies any final
        # soft-capping), so only T positions are projected onto the vocabulary.
        out = model(**kwargs, logits_to_keep=t)
    else:
        out = model(**kwargs)
    return out.logits[:, -t:], out.hidden_states[-1][:, -t:] if hidden else None  # (n, T, V), (n, T, H)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, with_entropy: bool = False,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log_softmax(logits)[ids]`` and the entropy of ``softmax(logits)``, in fp32.

    logits (..., V), ids (...). Uses ``x_i - logsumexp(x)`` instead of a full log_softmax tensor.
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)                                          # (...)
    logprobs = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse               # (...)
    entropy = None
    if with_entropy:
        # H = -sum p log p = logsumexp(x) - sum p x
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprobs, entropy


def _shift_right(model, completion_ids: torch.Tensor) -> torch.Tensor:
    # Teacher forcing: decoder input t is the token t-1, starting from decoder_start_token_id.
    if hasattr(model, "prepare_decoder_input_ids_from_labels"):
        return model.prepare_decoder_input_ids_from_labels(labels=completion_ids)
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise ValueError("the seq2seq model's config has no decoder_start_token_id")
    first = torch.full_like(completion_ids[:, :1], int(start))
    return torch.cat([first, completion_ids[:, :-1]], dim=1)
