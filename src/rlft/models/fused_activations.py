"""Fused activations: PyTorch's one-pass kernels in place of activations written as elementwise chains.

A speed path that leaves the checkpoint, the config and the outputs (to float rounding) as they were;
``load_policy`` applies it to every model it loads.
"""

from __future__ import annotations

from torch import nn


def fuse_activations(model: nn.Module) -> nn.Module:
    """Replace activations written as chains of elementwise ops by PyTorch's fused kernel.

    GPT-2's ``gelu_new`` (also GPT-J, GPT-Neo, CodeGen, ...) is ``0.5 * x * (1 + tanh(c * (x +
    0.044715 * x**3)))`` in Python: eight passes over the MLP's widest activation forward, more
    backward, which on CPU is about a quarter of a small GPT-2's RL step. ``F.gelu(approximate=
    'tanh')`` is the same formula in one pass (outputs agree to ~5e-7; transformers' own
    ``gelu_pytorch_tanh``). Modules are swapped in place, so the checkpoint and config do not change.
    """
    try:
        from transformers import activations
    except ImportError:  # pragma: no cover - transformers is a dependency
        return model
    fused = getattr(activations, "GELUTanh", None) or getattr(activations, "PytorchGELUTanh", None)
    slow = tuple(getattr(activations, name) for name in ("NewGELUActivation", "FastGELUActivation")
                 if hasattr(activations, name))
    if fused is None or not slow:
        return model
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in slow:
                setattr(module, name, fused())
    return model
