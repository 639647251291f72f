"""optim.activation_checkpointing: the same training, recomputed activations (full and LoRA)."""

from __future__ import annotations

import json

import pytest
import torch

from rlft.config import load_config
from rlft.errors import RlftError
from tests.conftest import tiny_overrides


def _run(tmp_path, model_dir, data, name, **extra):
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    cfg = load_config(None, tiny_overrides(model_dir, data, tmp_path / name, **{
        "run.steps": 2, "algo.kl_coef": 0.05, "optim.lr": 0.02, **extra}))
    parts = build_parts(cfg)
    result = train(cfg, parts)
    rows = [json.loads(r) for r in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = {n: p.detach().clone() for n, p in parts.policy.model.named_parameters() if p.requires_grad}
    return parts.policy.model, [r for r in rows if r["split"] == "train"], weights


@pytest.mark.parametrize("lora", [0, 4])
def test_checkpointed_training_takes_the_same_steps(tmp_path, tiny_causal_dir, tiny_dataset, lora):
    plain_model, plain_rows, plain_w = _run(tmp_path, tiny_causal_dir, tiny_dataset, "plain", **{"lora.r": lora})
    model, rows, weights = _run(tmp_path, tiny_causal_dir, tiny_dataset, "ckpt",
                                **{"lora.r": lora, "optim.activation_checkpointing": True})
    assert model.is_activation_checkpointing and not plain_model.is_activation_checkpointing
    assert [r["reward"] for r in rows] == [r["reward"] for r in plain_rows]  # sampling is not touched
    for got, want in zip(rows, plain_rows):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-6)
    assert weights.keys() == plain_w.keys() and weights
    for name, w in weights.items():
        torch.testing.assert_close(w, plain_w[name], atol=1e-5, rtol=1e-4)
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
        _run(tmp_path, tiny_causal_dir, tiny_dataset, "x", **{"optim.activation_checkpointing": True})
