"""The frozen reference policy pi_ref of the KL penalty, behind one small seam.

``with reference.active() as ref_model:`` yields the module that computes pi_ref. Full fine-tuning
keeps a frozen copy of the starting policy (``active`` does nothing). With LoRA the base weights
never change, so the policy with its adapter switched off *is* the starting policy: ``active``
switches the adapter off for the block, and no second copy is held in memory. A LoRA run that
started from a saved adapter (``lora.init_adapter``) keeps a frozen copy of that adapter beside
the trained one, named ``START``; ``active`` then makes it the active adapter for the block. The
loop and the evaluation read the same either way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional

from torch import nn

START = "start"  # the peft adapter name of lora.init_adapter's frozen copy (rlft.models.lora.apply_lora)


@dataclass(frozen=True)
class Reference:
    model: nn.Module                                           # the module to run inside ``active``
    switch_off: Optional[Callable[[], ContextManager]] = None  # e.g. PeftModel.disable_adapter

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        with self.switch_off() if self.switch_off is not None else contextlib.nullcontext():
            yield self.model


def starting_adapter(adapter: Any) -> Callable[[], ContextManager]:
    """What turns a LoRA policy (``peft.PeftModel``) back into the policy it started as: its
    adapter switched off, or the frozen copy of the adapter it started from when there is one."""
    if START not in adapter.peft_config:
        return adapter.disable_adapter
    return lambda: _use_adapter(adapter, START)


@contextlib.contextmanager
def _use_adapter(adapter: Any, name: str) -> Iterator[None]:
    active = adapter.active_adapter
    # peft's set_adapter also sets requires_grad (the active adapter trains, the others do not):
    # every flag is put back as it was, so the trained adapter's optimizer sees no change.
    flags = [(p, p.requires_grad) for p in adapter.parameters()]
    adapter.set_adapter(name, inference_mode=True)
    try:
        yield
    finally:
        adapter.set_adapter(active)
        for p, flag in flags:
            p.requires_grad_(flag)
