"""Optimizer groups, the learning-rate schedules by hand, scheduler resume; runtime helpers."""

from __future__ import annotations

import math

import pytest
import torch

from rlft.config import OptimConfig
from rlft.errors import RlftError
from rlft.training import optim as optim_mod
from rlft.training.optim import build_optimizer, build_scheduler
from rlft.training.runtime import autocast_context, resolve_device, resolved_precision, seed_everything, set_threads


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.proj = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: must appear once
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_no_decay_for_biases_and_norms():
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(lr=3e-4, weight_decay=0.1, beta1=0.8, beta2=0.95))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(groups["decay"]["params"]) == ids([model.emb.weight, model.proj.weight])
    assert ids(groups["no_decay"]["params"]) == ids([model.proj.bias, model.norm.weight, model.norm.bias])
    assert all(g["lr"] == 3e-4 and g["betas"] == (0.8, 0.95) for g in opt.param_groups)


def test_fused_when_supported_else_fallback(monkeypatch):
    opt = build_optimizer(Tiny(), OptimConfig())
    if opt.defaults["fused"]:  # torch >= 2.4 has a fused CPU AdamW
        assert opt.param_groups[0]["fused"] is True
    real = torch.optim.AdamW

    def no_fused(params, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be on a supported device")
        return real(params, **kwargs)

    monkeypatch.setattr(optim_mod.torch.optim, "AdamW", no_fused)
    opt = build_optimizer(Tiny(), OptimConfig())
    assert not opt.defaults["fused"]


def test_no_trainable_parameters_is_an_error():
    model = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(RlftError, match="no trainable parameters"):
        build_optimizer(model, OptimConfig())


def lrs(schedule: str, warmup: int = 4, total: int = 12) -> list[float]:
    """Learning rate used by each of the updates 0..total (peak lr 1)."""
    cfg = OptimConfig(lr=1.0, warmup_steps=warmup, schedule=schedule)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_warmup_is_linear_from_zero(schedule):
    got = lrs(schedule)
    assert got[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_schedules_after_warmup_by_hand():
    # warmup 4, total 12: progress p = (step - 4) / 8
    assert lrs("constant")[4:] == pytest.approx([1.0] * 9)
    assert lrs("linear")[4:] == pytest.approx([1 - k / 8 for k in range(9)])
    cosine = lrs("cosine")
    assert cosine[8] == pytest.approx(0.5)
    assert cosine[6] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine[12] == pytest.approx(0.0)
    assert lrs("linear", warmup=0, total=4) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_scheduler_resume_restores_step_and_lr():
    cfg = OptimConfig(lr=0.1, warmup_steps=2, schedule="cosine")
    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([param], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    opt.step()
    sched.step()
    expected_next = sched.get_last_lr()

    param2 = torch.nn.Parameter(torch.zeros(3))
    opt2 = torch.optim.AdamW([param2], lr=cfg.lr)
    sched2 = build_scheduler(opt2, cfg, 10)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert sched2.last_epoch == 5
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 8)))
    opt2.step()
    sched2.step()
    assert sched2.get_last_lr() == pytest.approx(expected_next)


def test_bad_schedule_is_a_user_error():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(RlftError, match="optim.schedule"):
        build_scheduler(opt, OptimConfig(schedule="exponential"), 10)


# --- runtime: device, precision, seeds, durable writes ---------------------------------------

def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(RlftError, match="run.device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RlftError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_precision_and_autocast_on_cpu(monkeypatch, request):
    from rlft.training import runtime

    # 'auto' on a CPU is measured (tests/training/test_precision.py); here: a CPU slow in bf16
    monkeypatch.setattr(runtime, "cpu_matmul_timings", lambda: {"fp32_s": 1.0, "bf16_s": 30.0})
    runtime._auto_cpu_precision.cache_clear()
    request.addfinalizer(runtime._auto_cpu_precision.cache_clear)  # no faked choice for later tests
    cpu = torch.device("cpu")
    assert resolved_precision(cpu, "auto") == "fp32"
    assert resolved_precision(cpu, "bf16") == "bf16"
    with pytest.raises(RlftError, match="run.precision"):
        resolved_precision(cpu, "fp16")
    a = torch.ones(2, 2)
    with autocast_context(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast_context(cpu, "auto"):
        assert (a @ a).dtype == torch.float32


def test_seed_everything_and_threads():
    import random

    import numpy as np

    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(RlftError, match="run.threads"):
        set_threads(0)
