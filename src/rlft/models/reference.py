"""The frozen reference policy pi_ref of the KL penalty, behind one small seam.

``with reference.active() as ref_model:`` yields the module that computes pi_ref. Full fine-tuning
keeps a frozen copy of the starting policy (``active`` does nothing). With LoRA the base weights
never change, so the policy with its adapter switched off *is* the starting policy: ``active``
switches the adapter off for the block, and no second copy is held in memory. The loop and the
evaluation read the same either way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Optional

from torch import nn


@dataclass(frozen=True)
class Reference:
    model: nn.Module                                           # the module to run inside ``active``
    switch_off: Optional[Callable[[], ContextManager]] = None  # e.g. PeftModel.disable_adapter

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        with self.switch_off() if self.switch_off is not None else contextlib.nullcontext():
            yield self.model
