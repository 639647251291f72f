"""The plain sampling engine: a KV-cache decode loop for decoder-only models, `generate` for
encoder-decoders.

Decoder-only models get a hand-written loop rather than ``model.generate`` for three reasons:
each prompt is prefilled once and its cache copied G times (``generate`` with
``num_return_sequences`` prefills every copy), the log-probability of each sampled token comes
for free from the logits already computed, and sampling draws one uniform per row from the
caller's generator (inverse CDF), so a run is reproducible from its seed and does not pay for
``torch.multinomial``, which is slow on CPU for large vocabularies. The decode cache appends in
place (``rlft.rollout.growing_cache``); bf16 runs through ``rlft.models.bf16_emulation.autocast``.
Each step's sampling and log-probability share one tempered copy of the logits (``draw``): on
SmolLM2 (32 rows x 49,152) that step went from 26 ms to 10 ms on one core at T = 1, about 5% of
a decode step, with the same tokens and log-probabilities for a seed.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

from rlft.config import check_choice
from rlft.data.templates import end_of_turn_id, fit_prompt
from rlft.errors import RlftError
from rlft.models.bf16_emulation import autocast, cast_frozen_once
from rlft.models.forward import cache_kwarg, forward_accepts, output_cache
from rlft.models.loading import Policy
from rlft.models.logprobs import completion_logprobs, token_logprobs
from rlft.rollout.base import Rollout
from rlft.rollout.compiled_decode import CompiledStep, static_copy
from rlft.rollout.growing_cache import use_growing_layers

log = logging.getLogger(__name__)


class PlainSampler:
    """Samples G completions per prompt; implements ``rlft.rollout.base.Sampler``.

    ``autocast``: a dtype such as ``torch.bfloat16`` to run the forward passes under
    ``torch.autocast`` (None: the model's own dtype). ``compile``: decode steps through
    ``torch.compile`` (``rlft.rollout.compiled_decode``; decoder-only models).
    """

    def __init__(self, policy: Policy, *, max_prompt_tokens: int = 256, overlong: str = "truncate",
                 device: str | torch.device | None = None, autocast: torch.dtype | None = None,
                 compile: bool = False):
        check_choice("data.overlong", overlong)
        self.policy = policy
        self.max_prompt_tokens = max_prompt_tokens
        self.overlong = overlong
        self.device = torch.device(device) if device is not None else _model_device(policy.model)
        self.autocast = autocast
        # A chat model closes its turn with the chat template's end-of-turn token (ChatML <|im_end|>),
        # which its eos_token need not be; found once, by rendering the template.
        self.end_of_turn = end_of_turn_id(policy.tokenizer)
        # Copying one prefilled cache G times; False forces prefilling G copies of each prompt
        # (what happens anyway for caches that cannot be copied).
        self.expand_cache = True
        # rollout.compile: decode steps through torch.compile over a static cache (decoder-only)
        self.compile = compile
        self._compiled: CompiledStep | None = None

    # -- Sampler protocol -------------------------------------------------------------------------

    def sample(self, prompts: list[str], group_size: int, *, temperature: float = 1.0,
               top_p: float = 1.0, top_k: int = 0, max_new_tokens: int,
               generator: torch.Generator | None = None) -> Rollout:
        """Draw ``group_size`` completions for each rendered prompt; row i is prompt i // G.

        ``Rollout.logprobs`` are log-probabilities under the tempered policy softmax(logits / T)
        (T = 1 for greedy decoding), before top-k/top-p filtering: the distribution the training
        loss scores (``completion_logprobs(..., temperature=T)``), so the on-policy ratio is 1.
        With top-k/top-p the samples come from the truncated distribution, a small off-policy
        bias that TRL and verl accept too. ``temperature=0`` decodes greedily.
        """
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or group_size < 1 or max_new_tokens < 1:
            raise ValueError(f"bad sampling settings: temperature={temperature}, top_p={top_p}, "
                             f"top_k={top_k}, group_size={group_size}, max_new_tokens={max_new_tokens}")
        model = self.policy.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._autocast(), cast_frozen_once(model, self.autocast is not None):
                ids, mask = self._encode(prompts)                                   # (B, P)
                decode = self._decode_seq2seq if self.policy.is_seq2seq else self._decode_causal
                completions, logprobs = decode(ids, mask, group_size, temperature, top_p, top_k,
                                               max_new_tokens, generator)          # (N, T)
        finally:
            model.train(was_training)
        completions, completion_mask, truncated = cut_at_eos(completions, self._eos_ids(), self._pad_id())
        texts = [t.strip() for t in self.policy.tokenizer.batch_decode(completions.tolist(),
                                                                        skip_special_tokens=True)]
        return Rollout(prompt_ids=ids.repeat_interleave(group_size, 0),
                       prompt_mask=mask.repeat_interleave(group_size, 0),
                       completion_ids=completions, completion_mask=completion_mask,
                       logprobs=logprobs.float() * completion_mask, truncated=truncated,
                       texts=texts, group_size=group_size)

    def greedy(self, prompts: list[str], *, max_new_tokens: int) -> Rollout:
        """One argmax completion per prompt (evaluation)."""
        return self.sample(prompts, 1, temperature=0.0, top_p=1.0, top_k=0,
                           max_new_tokens=max_new_tokens, generator=None)

    # -- prompts ----------------------------------------------------------------------------------

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize, fit to max_prompt_tokens and pad (left for causal, right for seq2seq)."""
        tokenizer = self.policy.tokenizer
        rows = [fit_prompt(text, tokenizer, self.max_prompt_tokens, self.overlong, f"prompt {i}")
                for i, text in enumerate(prompts)]
        for i, row in enumerate(rows):
            if not row:
                raise RlftError(f"prompt {i}: the prompt is empty after tokenization")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            cols = slice(0, len(row)) if self.policy.is_seq2seq else slice(width - len(row), width)
            ids[i, cols] = torch.tensor(row, dtype=torch.long)
            mask[i, cols] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- decoder-only: prefill once, copy the cache G times, decode ----------------------------

    def _decode_causal(self, ids, mask, group_size, temperature, top_p, top_k, max_new_tokens,
                       generator) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cache, mask = self._prefill(ids, mask, group_size, max_new_tokens)  # (N, V), N-row cache, (N, P)
        width = mask.shape[1]
        static = self._static_step(cache, width + max_new_tokens) if self.compile and max_new_tokens > 1 else None
        step_fn, cache = static if static is not None else (None, cache)
        n = logits.shape[0]
        eos = torch.tensor(self._eos_ids(), dtype=torch.long, device=self.device)
        pad = self._pad_id()
        position = mask.sum(-1, keepdim=True)                          # (N, 1) next position id
        # One mask for the whole decode, sliced per step (not re-concatenated every step).
        mask = torch.cat([mask, mask.new_ones((n, max_new_tokens))], dim=1)              # (N, P+T)
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        tokens, logprobs = [], []
        for step in range(max_new_tokens):
            token, logprob = draw(logits, temperature, top_p, top_k, generator)          # (N,) each
            token = torch.where(finished, torch.full_like(token, pad), token)
            logprobs.append(logprob)
            tokens.append(token)
            finished = finished | torch.isin(token, eos)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            # Finished rows keep decoding padding (cheaper than reshaping the cache); their
            # outputs are discarded by cut_at_eos.
            if step_fn is not None:  # the static cache's full width at every step: one compiled shape
                logits = step_fn(token, mask, position, width + step, cache)
            else:
                out = self.policy.model(input_ids=token[:, None], attention_mask=mask[:, :width + step + 1],
                                        position_ids=position, use_cache=True,
                                        **{cache_kwarg(self.policy.model): cache})
                cache, logits = output_cache(out), out.logits[:, -1]
            position = position + 1
        return torch.stack(tokens, 1), torch.stack(logprobs, 1)                          # (N, T)

    def _static_step(self, cache, length: int):
        """(the compiled decode step, the prefilled cache copied into a static one of ``length``
        slots), or None when this model's cache cannot be static (then compile is off for good)."""
        static = static_copy(cache, self.policy.model, length)
        if static is None:
            log.warning("rollout.compile: %s's cache cannot be made static; decoding without torch.compile",
                        type(self.policy.model).__name__)
            self.compile = False
            return None
        if self._compiled is None:
            self._compiled = CompiledStep(self.policy.model)
        return self._compiled, static

    def _prefill(self, ids, mask, group_size, max_new_tokens):
        """Run the B prompts once and return the last logits and the cache, both for B*G rows."""
        model = self.policy.model
        out = self._forward_prompts(ids, mask, max_new_tokens)
        cache, logits = output_cache(out), out.logits[:, -1]                             # (B, V)
        if group_size == 1:
            return logits, cache, mask
        if self.expand_cache and callable(getattr(cache, "batch_repeat_interleave", None)):
            cache.batch_repeat_interleave(group_size)
            return logits.repeat_interleave(group_size, 0), cache, mask.repeat_interleave(group_size, 0)
        log.debug("%s: cache cannot be copied per sample; prefilling %d copies of each prompt",
                  type(model).__name__, group_size)
        ids, mask = ids.repeat_interleave(group_size, 0), mask.repeat_interleave(group_size, 0)
        out = self._forward_prompts(ids, mask, max_new_tokens)
        return out.logits[:, -1], output_cache(out), mask

    def _forward_prompts(self, ids, mask, max_new_tokens):
        from transformers import DynamicCache

        model = self.policy.model
        try:  # with the config, the cache knows sliding-window and hybrid layers
            cache = DynamicCache(config=model.config)
        except Exception:  # noqa: BLE001 - unusual (remote-code) configs: let the model build its cache
            cache = None
        if cache is not None:
            use_growing_layers(cache, max_new_tokens)
        kwargs = {"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}
        # Left padding: the first real token of each row is at position 0.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                     use_cache=True, **{cache_kwarg(model): cache}, **kwargs)

    # -- encoder-decoder: transformers' generate, then score the tokens -------------------------

    def _decode_seq2seq(self, ids, mask, group_size, temperature, top_p, top_k, max_new_tokens,
                        generator) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.policy.model
        settings = {"do_sample": False}
        if temperature > 0:
            settings = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
        # Explicit neutral values: a checkpoint's generation_config (BART: no_repeat_ngram_size=3,
        # num_beams=4, forced_bos_token_id, forced_eos_token_id; Whisper/Marian: suppress_tokens)
        # would otherwise change the distribution that is sampled from the one the loss scores.
        settings.update(num_beams=1, num_return_sequences=group_size, max_new_tokens=max_new_tokens,
                        min_new_tokens=0, min_length=0, repetition_penalty=1.0, no_repeat_ngram_size=0,
                        encoder_no_repeat_ngram_size=0, encoder_repetition_penalty=1.0,
                        forced_bos_token_id=None, forced_eos_token_id=None, suppress_tokens=None,
                        begin_suppress_tokens=None, bad_words_ids=None, sequence_bias=None,
                        exponential_decay_length_penalty=None, typical_p=1.0, min_p=None,
                        epsilon_cutoff=0.0, eta_cutoff=0.0, eos_token_id=self._eos_ids(),
                        pad_token_id=self._pad_id())
        if generator is None:
            sequences = model.generate(input_ids=ids, attention_mask=mask, **settings)
        else:  # generate draws from the global RNG: seed it from ours, then restore it
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                sequences = model.generate(input_ids=ids, attention_mask=mask, **settings)
        completions = sequences[:, 1:]             # drop decoder_start_token_id   # (N, T)
        completions, completion_mask, _ = cut_at_eos(completions, self._eos_ids(), self._pad_id())
        batch = SimpleNamespace(prompt_ids=ids.repeat_interleave(group_size, 0),
                                prompt_mask=mask.repeat_interleave(group_size, 0),
                                completion_ids=completions, completion_mask=completion_mask)
        logprobs, _ = completion_logprobs(model, batch, is_seq2seq=True,
                                          temperature=temperature if temperature > 0 else 1.0)
        return completions, logprobs

    # -- helpers ----------------------------------------------------------------------------------

    def _eos_ids(self) -> list[int]:
        # Chat models often stop on several tokens (Llama 3: <|eot_id|> and <|end_of_text|>); the
        # generation config lists them, the tokenizer knows one, the chat template ends its turns with one.
        ids = {self.policy.tokenizer.eos_token_id, self.end_of_turn}
        extra = getattr(getattr(self.policy.model, "generation_config", None), "eos_token_id", None)
        ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
        return sorted(i for i in ids if i is not None)

    def _pad_id(self) -> int:
        return int(self.policy.tokenizer.pad_token_id)

    def _autocast(self):
        return autocast(self.device.type, self.autocast)


def draw(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
         generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step's choice: the next token per row (``choose``) and its log-probability under
    the tempered softmax(logits / T) (T = 1 when greedy), from one tempered copy of the logits (N, V)."""
    scores = tempered(logits, temperature if temperature > 0 else 1.0)                 # (N, V)
    token = scores.argmax(-1) if temperature == 0 else _sample(scores, top_p, top_k, generator)
    return token, token_logprobs(scores, token)[0]                                    # (N,), (N,)


def tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T in fp32; at T = 1 no division (x / 1 is x exactly: the same numbers, one pass over
    the vocabulary less per row and step)."""
    scores = logits.float()
    return scores if temperature == 1.0 else scores / temperature


def choose(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
           generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from logits (N, V): argmax at temperature 0, else a filtered sample.

    Inverse-CDF sampling: token = first index whose cumulative probability exceeds u ~ U(0, 1),
    one uniform per row from ``generator``. Same distribution as ``torch.multinomial``.
    """
    if temperature == 0:
        return logits.argmax(-1)
    return _sample(tempered(logits, temperature), top_p, top_k, generator)


def _sample(scores: torch.Tensor, top_p: float, top_k: int, generator: torch.Generator | None) -> torch.Tensor:
    """``choose`` on tempered scores (N, V): top-k, softmax, nucleus, then the inverse CDF."""
    vocab = scores.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]                          # (N, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)                                               # (N, V)
    if top_p < 1:
        probs = _nucleus(probs, top_p)
    cdf = probs.cumsum(-1)                                                              # (N, V)
    device = generator.device if generator is not None else probs.device
    u = torch.rand((probs.shape[0], 1), generator=generator, device=device).to(probs.device)
    # right=True: a zero-probability token (flat stretch of the CDF) can never be picked, as long
    # as u * cdf[-1] < cdf[-1]. When it is not (u rounds up, u = 1 from some generators, or a
    # parallel cumsum that is not monotone at the end), the search runs past the last token with
    # mass; clamp to that token instead of the vocabulary's last, which may have probability 0.
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)            # (N,)
    # That is rare: look for the last token with mass (four passes over the vocabulary) only when a
    # row ran past the end or landed on no mass. Otherwise token <= last already, the same result.
    landed = probs.gather(-1, token.clamp(max=vocab - 1)[:, None]).squeeze(-1)          # (N,)
    if not bool(((token >= vocab) | (landed <= 0)).any()):
        return token
    last = vocab - 1 - (probs > 0).flip(-1).int().argmax(-1)                            # (N,)
    return torch.minimum(token, last)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the most likely tokens until their mass
    reaches top_p; a token is dropped when the mass strictly before it already reaches top_p.

    Sorting a 50k-150k vocabulary per step dominates decoding on CPU, and an LM's nucleus is
    nearly always within its top thousand tokens, so look there first and widen only if needed.
    """
    vocab = probs.shape[-1]
    k = min(1024, vocab)
    while True:
        top, order = probs.topk(k, dim=-1)                        # (N, k), descending
        if k == vocab or bool((top.sum(-1) >= top_p).all()):       # every nucleus is inside
            break
        k = min(8 * k, vocab)
    before = top.cumsum(-1) - top
    top = top.masked_fill(before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter_(-1, order, top)


def cut_at_eos(ids: torch.Tensor, eos_ids: list[int], pad_id: int,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep each row up to and including its first EOS; pad the rest.

    Returns ``(ids (N, T), mask (N, T) float, truncated (N,) bool)``; truncated = no EOS at all.
    """
    is_eos = torch.isin(ids, torch.tensor(eos_ids, dtype=ids.dtype, device=ids.device))  # (N, T)
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0        # strictly after the first EOS
    return ids.masked_fill(after, pad_id), (~after).float(), ~is_eos.any(-1)


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
