"""optim.activation_checkpointing: the same training, recomputed activations (full and LoRA)."""

from __future__ import annotations

import json

import pytest
import torch

from rlft.config import load_config
from rlft.errors import RlftError
from tests.conftest import tiny_overrides


def _run(tmp_path, model_dir, data, name, monkeypatch, **extra):
    """Train 2 steps; returns the model, the train metrics rows, the final trainable weights and the
    gradients the optimizer's first step saw (by name)."""
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    cfg = load_config(None, tiny_overrides(model_dir, data, tmp_path / name, **{
        "run.steps": 2, "algo.kl_coef": 0.05, "optim.lr": 0.02, **extra}))
    parts = build_parts(cfg)
    first_grads = {}
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        if not first_grads:  # names looked up now: the model's parameters as the optimizer has them
            names = {id(p): n for n, p in parts.policy.model.named_parameters()}
            first_grads.update({names[id(p)]: p.grad.detach().clone() for group in self.param_groups
                                for p in group["params"] if p.grad is not None})
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    result = train(cfg, parts)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    rows = [json.loads(r) for r in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = {n: p.detach().clone() for n, p in parts.policy.model.named_parameters() if p.requires_grad}
    return parts.policy.model, [r for r in rows if r["split"] == "train"], weights, first_grads


@pytest.mark.parametrize("lora", [0, 4])
def test_checkpointed_training_takes_the_same_steps(tmp_path, tiny_causal_dir, tiny_dataset, lora, monkeypatch):
    plain_model, plain_rows, plain_w, plain_g = _run(tmp_path, tiny_causal_dir, tiny_dataset, "plain", monkeypatch,
                                                     **{"lora.r": lora})
    model, rows, weights, grads = _run(tmp_path, tiny_causal_dir, tiny_dataset, "ckpt", monkeypatch,
                                       **{"lora.r": lora, "optim.activation_checkpointing": True})
    assert model.is_activation_checkpointing and not plain_model.is_activation_checkpointing
    assert [r["reward"] for r in rows] == [r["reward"] for r in plain_rows]  # sampling is not touched
    for got, want in zip(rows, plain_rows):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-6)
    # The first step's gradients, what checkpointing could get wrong. The weights after AdamW are not
    # compared element by element: AdamW moves every element by about lr whatever its gradient's size,
    # so a gradient of 1e-12 on one CPU's kernels and -1e-12 on another's (recomputation need not be
    # bit-identical) moves the weight 2 x lr apart.
    assert grads.keys() == plain_g.keys() and grads
    for name, g in grads.items():
        torch.testing.assert_close(g, plain_g[name], atol=1e-6, rtol=1e-4)
    assert weights.keys() == plain_w.keys() and weights
    # the two runs did train: the weights are not the start's (the comparison above is not vacuous)
    from rlft.training.setup import prepare_parts

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "start", **{"lora.r": lora}))
    start = {n: p for n, p in prepare_parts(cfg).policy.model.named_parameters() if p.requires_grad}
    assert start.keys() == weights.keys()
    assert max(float((weights[n] - start[n]).abs().max()) for n in start) > 1e-3


def test_a_model_without_checkpointing_support_is_refused(tmp_path, tiny_causal_dir, tiny_dataset, monkeypatch):
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    with pytest.raises(RlftError, match="optim.activation_checkpointing: LlamaForCausalLM"):
        _run(tmp_path, tiny_causal_dir, tiny_dataset, "x", monkeypatch, **{"optim.activation_checkpointing": True})
