"""Completion log-probabilities through the LM head in row chunks (a speed path of
``rlft.models.logprobs``).

The plain computation projects every completion position onto the vocabulary at once: for
SmolLM2 (V = 49,152) and B*G*T = 768 positions that is a 151 MB fp32 logits tensor, plus the
softmax kept for the backward and the logits' gradient, each as large again. Here the last hidden
states go through the head ``CHUNK_LOGITS // V`` rows at a time and only each row's
log-probability, log-normalizer and entropy are kept; the backward recomputes a chunk's logits
from the saved hidden states and turns them into the gradient at once, so the head's memory is a
few chunks whatever the batch. Measured there (forward + backward of the head alone, one core):
peak RSS +770 MB plain, +390 MB chunked (both counting the weight's 113 MB gradient); 1.33 s plain,
1.55 s chunked (the recomputed matmul), of a training pass of about 20 CPU seconds. Under bf16
autocast with AMX the head's matmuls are cheap and the fp32 passes over the logits and the
weight-gradient casts per chunk dominate: about 0.8 s plain, 1.4-1.7 s chunked. A frozen head
(LoRA) needs no weight gradient, and the forward prepares the input gradient from each chunk's
softmax (E_p[W], and E_p[(z - lse) W] for the entropy), so the backward recomputes nothing: there
the chunked head is the faster one (0.83 s against 0.96 s in fp32, 0.45 s against 0.68 s in bf16)
and grows the RSS by 112 MB against 770 MB. Liger-Kernel's
fused linear losses (cross-entropy, GRPO) chunk the same way; unlike a fused loss, these
log-probabilities feed an RL loss that is not known yet, so the gradient waits for the backward.

Numbers are those of ``log_softmax(head(hidden) / T)`` up to float summation order: the head runs
in the surrounding autocast dtype exactly as inside the model (bf16 logits under bf16 autocast,
then fp32), and the backward re-enters the same autocast for its matmuls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlft.models.bf16_emulation import autocast

# Logits per chunk: 64 MB in fp32 (341 rows at V = 49,152). Smaller chunks cost time in the
# matmuls' efficiency (SmolLM2, 768 positions, forward + backward on one core: 1.84 s at 85 rows,
# 1.55 s at 341, against 1.33 s for the full logits), larger ones memory.
CHUNK_LOGITS = 1 << 24

# Model types whose causal-LM forward is exactly ``lm_head(base_model(...).last_hidden_state)``: no
# logit soft-capping (Gemma 2), scaling (Cohere, Granite) or other step after the head. Another
# type keeps the plain path: a wrong guess here would change the numbers silently.
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2"})


def linear_head(model) -> torch.nn.Linear | None:
    """The model's output layer when its logits are exactly ``head(last hidden state)`` and the
    trunk can be called alone (``model.base_model``), else None (the plain path)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_TYPES or getattr(config, "is_encoder_decoder", False):
        return None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    trunk = getattr(model, "base_model", None)
    if type(head) is not torch.nn.Linear or trunk is None or trunk is model:
        return None
    return head


def head_logprobs(hidden: torch.Tensor, head: torch.nn.Linear, ids: torch.Tensor, *, temperature: float = 1.0,
                  with_entropy: bool = False, chunk_logits: int | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log_softmax(head(hidden) / T)[ids]`` and, with ``with_entropy``, the entropy of that
    softmax, without holding more than ``chunk_logits`` (None: ``CHUNK_LOGITS``) logits at a time,
    forward and backward.

    hidden (..., H), ids (...). Returns ``(logprobs (...), entropy (...) or None)`` in fp32;
    differentiable in ``hidden``, ``head.weight`` and ``head.bias``.
    """
    shape = ids.shape
    rows = max(1, (chunk_logits or CHUNK_LOGITS) // head.weight.shape[0])
    amp = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else None
    # A frozen head (LoRA) needs only d/dhidden, which the forward can prepare from each chunk's softmax
    # while it has it: no logits are recomputed in the backward, as many head matmuls as the plain path.
    frozen = (torch.is_grad_enabled() and hidden.requires_grad and not head.weight.requires_grad
              and (head.bias is None or not head.bias.requires_grad))
    logprobs, entropy = _HeadLogprobs.apply(hidden.reshape(-1, hidden.shape[-1]), head.weight, head.bias,
                                            ids.reshape(-1), float(temperature), with_entropy, rows, amp, frozen)
    return logprobs.view(shape), entropy.view(shape) if with_entropy else None


def _chunk_logits(hidden, weight, bias, temperature):
    """fp32 logits / T of some rows, the head run as the model runs it (under the caller's autocast)."""
    z = F.linear(hidden, weight, bias).float()                                     # (m, V)
    return z / temperature if temperature != 1.0 else z


def _compute_weights(weight, bias, amp):
    """The head's weight and bias in the autocast dtype, cast once per pass: autocast would cast a
    frozen weight (LoRA) again for every chunk, and in the backward for every matmul (under bf16 on
    SmolLM2 that made the chunked head 3x slower than the plain one)."""
    if amp is None:
        return weight, bias
    return weight.to(amp), bias.to(amp) if bias is not None else None


class _HeadLogprobs(torch.autograd.Function):
    """Forward: per chunk of rows, z = head(h) / T, lse = logsumexp(z), logprob = z[id] - lse and
    H = lse - sum softmax(z) z. Backward, per chunk, with p = softmax(z) recomputed:
        d logprob / d z = onehot(id) - p,        d H / d z = -p (z - lse + H),
    then d/dh = (dz / T) W and d/dW = (dz / T)^T h, as the plain autograd graph computes them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, temperature, with_entropy, rows, amp, frozen):
        n = hidden.shape[0]
        logprobs = hidden.new_empty(n, dtype=torch.float32)                        # (M,)
        lse = hidden.new_empty(n, dtype=torch.float32)                             # (M,)
        entropy = hidden.new_zeros(n, dtype=torch.float32)                         # (M,)
        # frozen: E_p[W] and E_p[(z - lse) W] per row, what d logprob/dh and d entropy/dh are made of
        expect = hidden.new_zeros(2 if frozen else 0, n, hidden.shape[1], dtype=torch.float32)  # (2, M, H)
        w, b = _compute_weights(weight, bias, amp)
        for i in range(0, n, rows):
            z = _chunk_logits(hidden[i:i + rows], w, b, temperature)               # (m, V)
            lse[i:i + rows] = torch.logsumexp(z, dim=-1)
            logprobs[i:i + rows] = z.gather(-1, ids[i:i + rows, None]).squeeze(-1) - lse[i:i + rows]
            p = torch.softmax(z, dim=-1) if with_entropy or frozen else None      # (m, V)
            if with_entropy:
                entropy[i:i + rows] = lse[i:i + rows] - (p * z).sum(-1)
            if frozen:   # under the caller's autocast, as the plain backward's matmul would run
                expect[0, i:i + rows] = torch.matmul(p, w)
                if with_entropy:
                    expect[1, i:i + rows] = torch.matmul(z.sub_(lse[i:i + rows, None]).mul_(p), w)
        # the cast weight is kept for the backward (56 MB in bf16 for SmolLM2, less than the logits)
        ctx.save_for_backward(hidden, weight, bias, ids, lse, entropy, expect, *((w, b) if amp is not None else ()))
        ctx.settings = (temperature, with_entropy, rows, amp, frozen)
        return logprobs, entropy

    @staticmethod
    def _frozen_backward(ctx, grad_logprobs, grad_entropy):
        """d/dh = (g (W[id] - E_p[W]) - g_H (E_p[(z - lse) W] + H E_p[W])) / T: the plain graph's
        (dz / T) W with dz = g (onehot(id) - p) - g_H p (z - lse + H), from the forward's expectations."""
        hidden, weight, _, ids, _, entropy, expect, *cast = ctx.saved_tensors
        temperature, with_entropy = ctx.settings[:2]
        w = cast[0] if cast else weight
        grad = grad_logprobs[:, None] * (w[ids].float() - expect[0])               # (M, H)
        if with_entropy and grad_entropy is not None:
            grad -= grad_entropy[:, None] * (expect[1] + entropy[:, None] * expect[0])
        if temperature != 1.0:
            grad /= temperature
        return grad.to(hidden.dtype), None, None, None, None, None, None, None, None

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        if ctx.settings[4]:
            return _HeadLogprobs._frozen_backward(ctx, grad_logprobs, grad_entropy)
        hidden, weight, bias, ids, lse, entropy, _, *cast = ctx.saved_tensors
        temperature, with_entropy, rows, amp, _ = ctx.settings
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.empty_like(weight, dtype=torch.float32) if need_w else None   # the first chunk writes it
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        use_entropy = with_entropy and grad_entropy is not None
        w, b = cast if cast else (weight, bias)
        for i in range(0, hidden.shape[0], rows):
            h, g = hidden[i:i + rows], grad_logprobs[i:i + rows, None]             # (m, H), (m, 1)
            with autocast(hidden.device.type, amp):
                logits = F.linear(h, w, b)                                         # (m, V) in the compute dtype
            z = logits.float() / temperature if temperature != 1.0 else logits.float()
            p = (z - lse[i:i + rows, None]).exp_()                                 # (m, V) softmax(z)
            if use_entropy:   # dH/dz = -p (z - lse + H): the entropy's term first, while z is there
                z.sub_(lse[i:i + rows, None] - entropy[i:i + rows, None]).mul_(p).mul_(-grad_entropy[i:i + rows, None])
                dz = z.sub_(p.mul_(g))
            else:
                dz = p.mul_(-g)
            dz.scatter_add_(-1, ids[i:i + rows, None], g)                          # + g onehot(id)
            if temperature != 1.0:
                dz.div_(temperature)
            dz = dz.to(logits.dtype)   # the plain graph's logits gradient is in the logits' dtype
            if amp is None and dz.dtype == weight.dtype == h.dtype == torch.float32:  # in place: no (V, H) temporary
                if need_h:
                    torch.mm(dz, weight, out=grad_h[i:i + rows])
                if need_w:
                    torch.mm(dz.t(), h, out=grad_w) if i == 0 else grad_w.addmm_(dz.t(), h)
            else:
                with autocast(hidden.device.type, amp):
                    if need_h:
                        grad_h[i:i + rows] = torch.matmul(dz, w)
                    if need_w:
                        part = torch.matmul(dz.t(), h)                             # (V, H) in the compute dtype
                        grad_w.copy_(part) if i == 0 else grad_w.add_(part)
            if need_b:
                grad_b += dz.float().sum(0)
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None, None, None, None, None
