"""algo.name=ppo end to end on a tiny model: the reward rises on a trivially learnable reward, the
value head trains and is exported beside a final/ that plain transformers loads, and a resumed run
(value head, adaptive KL coefficient, LoRA or not) is the uninterrupted one bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlft.config import load_config
from tests.conftest import tiny_overrides


def _rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


@pytest.fixture
def length_reward(tmp_path, monkeypatch) -> str:
    """Longer completions (in characters) score higher: learnable by any policy in a few steps."""
    (tmp_path / "lengthreward.py").write_text(
        "def reward(prompts, completions, references, **meta):\n"
        "    return [len(c) / 20 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "lengthreward:reward"


PPO = {"algo.name": "ppo", "algo.updates_per_batch": 2, "algo.minibatches": 2, "rollout.group_size": 4}


def test_ppo_raises_a_learnable_reward_and_exports_its_value_head(tmp_path, tiny_causal_dir, tiny_dataset,
                                                                  length_reward):
    from transformers import AutoModelForCausalLM

    from rlft.models.value_head import load_value_head
    from rlft.training.loop import train

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        **PPO, "reward.spec": length_reward, "optim.lr": 0.01, "run.steps": 10, "eval.max_examples": 0}))
    result = train(cfg)
    rows = _rows(result.run_dir)
    rewards = [r["reward"] for r in rows]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2, rewards
    assert all(math.isfinite(r[k]) for r in rows for k in ("loss", "pg_loss", "value_loss", "value_clip_frac"))
    assert any(r["clip_frac"] > 0 for r in rows)  # the later minibatches and epochs are off-policy: clipping acts
    head = load_value_head(result.final_dir)   # final/value_head.safetensors
    assert head.linear.weight.abs().sum() > 0  # it started at 0
    _, info = AutoModelForCausalLM.from_pretrained(result.final_dir, output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_ppo_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_causal_dir, tiny_dataset, lora_r):
    from safetensors.torch import load_file

    from rlft.training.loop import train

    common = {**PPO, "run.steps": 4, "run.save_every": 2, "algo.kl_coef": 0.05, "algo.kl_target": 0.5,
              "algo.kl_horizon": 50, "lora.r": lora_r, "optim.lr": 0.01}
    full = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "full", **common)))
    train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut", **{**common, "run.steps": 2})))
    ckpt = tmp_path / "cut" / "checkpoints" / "step-00000002"
    saved = torch.load(ckpt / "extra.pt", weights_only=True)["extra"]["value_head"]
    assert saved["linear.weight"].abs().sum() > 0                  # the trained head is in the checkpoint
    kl_coef = json.loads((ckpt / "trainer_state.json").read_text())["state"]["kl_coef"]
    assert kl_coef != 0.05                                         # and the adapted coefficient
    resumed = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut",
                                                     **{**common, "run.resume": True})))
    a, b = _rows(full.run_dir), _rows(resumed.run_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert b[2]["kl_coef"] == kl_coef
    for key in ("reward", "loss", "pg_loss", "value_loss", "kl", "kl_coef", "grad_norm"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert len({r["kl_coef"] for r in a}) == 4                     # it moved every step
    for name in ("model.safetensors", "value_head.safetensors"):
        wa, wb = load_file(str(full.final_dir / name)), load_file(str(resumed.final_dir / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
