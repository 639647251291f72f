"""extra.pt loads with torch.load(weights_only=True): plain values only, nothing unpickled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlft.errors import RlftError
from rlft.training.checkpoint import load_checkpoint
from tests.training.test_checkpoint import fresh, save, trained


class Opaque:
    def __init__(self, n):
        self.n = n


def test_extra_holds_plain_values_and_loads_weights_only(tmp_path):
    model, opt, sched = trained()
    path = save(tmp_path, 3, model, opt, sched, counts=np.arange(3), scale=np.float32(0.5),
                extra={"sampler": {"probs": torch.tensor([0.25, 0.75]), "seen": np.int64(7)}})
    raw = torch.load(path / "extra.pt", weights_only=True)  # no NumPy or other pickled objects inside
    assert torch.equal(raw["other"]["counts"], torch.arange(3))
    model2, opt2, sched2 = fresh()
    state = load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    assert state["scale"] == 0.5 and state["extra"]["sampler"]["seen"] == 7
    assert torch.equal(state["extra"]["sampler"]["probs"], torch.tensor([0.25, 0.75]))


def test_an_object_in_the_state_is_refused_at_save_and_at_load(tmp_path):
    model, opt, sched = trained()
    with pytest.raises(RlftError, match="'extra.guard' is a Opaque"):
        save(tmp_path, 1, model, opt, sched, extra={"guard": Opaque(1)})
    path = save(tmp_path, 2, model, opt, sched, extra={"guard": {"n": 1}})
    torch.save({"extra": {"guard": Opaque(2)}, "other": {}}, path / "extra.pt")  # a tampered file
    with pytest.raises(RlftError, match="refusing to unpickle"):
        load_checkpoint(path, model=None, optimizer=None, scheduler=None)
