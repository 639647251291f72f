"""AdamW with the usual no-decay split, and the warm-up + decay learning-rate schedule.

The schedule is a module-level function bound with ``functools.partial``: LambdaLR's
``state_dict`` then holds only numbers (the step count and last learning rates), so a
checkpoint restores it into a freshly built scheduler and resumes on the same curve.
"""

from __future__ import annotations

import functools
import math

import torch

from rlft.config import OptimConfig, check_choice
from rlft.errors import RlftError

def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices (embeddings, linear weights) decay; biases and norm gains do not.

    ``ndim < 2`` is the rule used by nanoGPT and most LM codebases: decaying a LayerNorm gain
    or a bias towards 0 only hurts, and the rule needs no list of module types.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the fused kernel when the device supports it."""
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise RlftError("model: no trainable parameters (every parameter has requires_grad=False)")
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        # fused=True checks device and dtype support at construction and raises if unsupported
        # (e.g. older torch on CPU, unusual dtypes), so trying it is the portable test.
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):
        # foreach=None lets torch pick its multi-tensor kernel where it exists (CUDA), the
        # per-parameter loop elsewhere; forcing foreach=True would fail on some CPU builds.
        return torch.optim.AdamW(groups, foreach=None, **kwargs)


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """The total L2 norm of the gradients, clipped to ``max_norm`` in place when ``max_norm > 0``.

    The norm is the one before clipping and is computed whether or not clipping is on, so every
    loop logs the same ``grad_norm`` (the SFT loop logged 0.0 when clipping was off).
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.nn.utils.get_total_norm([p.grad for p in params]))


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for the update made at ``step`` (0-based).

    Warm-up follows Hugging Face's ``get_*_schedule_with_warmup``: ``step / warmup_steps``, so
    the first update has learning rate 0 when ``warmup_steps > 0``, and the peak is reached at
    ``step == warmup_steps``. After warm-up, with ``p = (step - warmup) / (total - warmup)``:
    constant -> 1, linear -> ``1 - p``, cosine -> ``(1 + cos(pi * p)) / 2``; both decays reach 0
    at ``step == total_steps`` and stay there.
    """
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR following :func:`lr_factor`; call ``scheduler.step()`` after each ``optimizer.step()``."""
    check_choice("optim.schedule", cfg.schedule)
    if cfg.warmup_steps < 0:
        raise RlftError(f"config: optim.warmup_steps must be >= 0, got {cfg.warmup_steps}")
    if total_steps < 1:
        raise RlftError(f"config: run.steps must be > 0, got {total_steps}")
    fn = functools.partial(lr_factor, warmup_steps=cfg.warmup_steps, total_steps=total_steps,
                           schedule=cfg.schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
