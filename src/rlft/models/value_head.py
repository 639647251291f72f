"""PPO's critic: a value head on the policy's trunk, V(x, y_<t) = w . h_t + b.

h_t is the policy's last hidden state at the position whose logits predict y_t (the input of the
LM head), so one forward pass gives both the log-probabilities and the values; the old TRL
``AutoModelForCausalLMWithValueHead`` made the same choice. Why not a separate critic model: a
second copy of the model doubles the memory and the forward and backward passes, and a separate
*small* critic would not see the representation the policy acts on. The cost of sharing: the
value loss (weighted by ``algo.vf_coef``) also moves the trunk. With LoRA the trunk's adapter
takes that gradient, the base weights stay frozen, and the head is trained in full.

The head is a module of its own, not a submodule of the transformers model, so the policy still
saves and loads as a plain ``from_pretrained`` directory; the head goes into the checkpoints (the
run's state) and into ``final/value_head.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueHead(nn.Module):
    """hidden (n, T, H) -> values (n, T), in float32 whatever the autocast."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        # Zero init: V = 0 at the start, and no value gradient reaches the shared trunk until the
        # head has learned something (d loss / d h = (V - G) w = 0), so the first steps do not
        # pull the trunk towards a random readout. skip_init: it draws nothing from the RNG either.
        self.linear = nn.utils.skip_init(nn.Linear, hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.linear(hidden.float()).squeeze(-1)


def value_head_for(model: Any) -> ValueHead:
    """A fresh value head for ``model``'s last hidden state, on the model's device."""
    head = model.get_output_embeddings()
    weight = next(p for p in model.parameters())
    return ValueHead(head.weight.shape[1]).to(weight.device)


def with_value_head(model: nn.Module, value_head: nn.Module | None) -> nn.Module:
    """The modules training updates: the policy, and its value head when there is one (optimizer, clipping)."""
    return model if value_head is None else nn.ModuleList([model, value_head])


def save_value_head(value_head: nn.Module, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(directory) / VALUE_HEAD_FILE
    save_file({k: v.detach().contiguous().cpu() for k, v in value_head.state_dict().items()}, str(path))
    return path


def load_value_head(directory: str | Path) -> ValueHead:
    """The value head saved in ``directory`` (e.g. a run's ``final/``)."""
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / VALUE_HEAD_FILE))
    head = ValueHead(state["linear.weight"].shape[1])
    head.load_state_dict(state)
    return head
