"""Tiny end-to-end runs: RL and SFT on tiny causal and seq2seq models, resume, checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlft.config import load_config
from tests.conftest import tiny_overrides


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rows(run_dir: Path, split: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def _finite(rows: list[dict]) -> bool:
    return all(math.isfinite(v) for r in rows for k, v in r.items() if isinstance(v, float))


@pytest.mark.parametrize("algo", ["reinforce", "scst", "rloo", "grpo", "ppo"])
def test_rl_steps_change_params_causal(tmp_path, tiny_causal_dir, tiny_dataset, algo):
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        "algo.name": algo, "algo.kl_coef": 0.05, "algo.entropy_coef": 0.01, "optim.grad_accum": 2,
        "algo.updates_per_batch": 2 if algo in ("grpo", "ppo") else 1}))
    parts = build_parts(cfg)
    before = _params(parts.policy.model)
    result = train(cfg, parts)
    after = _params(parts.policy.model)
    assert result.step == 3
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = _rows(result.run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert _finite(rows)
    for key in ("reward", "kl", "entropy", "loss", "length", "truncation_rate", "step_time"):
        assert key in rows[-1], key
    val = _rows(result.run_dir, "validation")
    assert [r["step"] for r in val] == [0, 3] and _finite(val)
    if algo == "scst":
        assert "greedy_reward" in rows[-1]


def test_rl_seq2seq_and_checkpoint_loads_in_plain_transformers(tmp_path, tiny_seq2seq_dir, tiny_dataset):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    cfg = load_config(None, tiny_overrides(tiny_seq2seq_dir, tiny_dataset, tmp_path / "run",
                                           **{"algo.name": "rloo", "algo.kl_coef": 0.1}))
    parts = build_parts(cfg)
    assert parts.policy.is_seq2seq
    before = _params(parts.policy.model)
    result = train(cfg, parts)
    after = _params(parts.policy.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert _finite(_rows(result.run_dir))
    # the exported model loads with plain transformers and generates what the trained one does
    model = AutoModelForSeq2SeqLM.from_pretrained(result.final_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    enc = tok(["reverse: the cat =>"], return_tensors="pt")
    ours = parts.policy.model.eval().generate(**enc, do_sample=False, max_new_tokens=6)
    theirs = model.generate(**enc, do_sample=False, max_new_tokens=6)
    assert torch.equal(ours, theirs)


def test_final_checkpoint_generates_same_text_causal(tmp_path, tiny_causal_dir, tiny_dataset):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{"run.steps": 2}))
    parts = build_parts(cfg)
    result = train(cfg, parts)
    model = AutoModelForCausalLM.from_pretrained(result.final_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    ours = parts.sampler.greedy(["reverse: the cat =>"], max_new_tokens=6).texts
    enc = tok(["reverse: the cat =>"], return_tensors="pt")
    out = model.generate(**enc, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id)
    theirs = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [t.strip() for t in theirs] == ours


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_causal_dir, tiny_dataset, lora_r):
    from rlft.training.loop import train

    common = {"run.steps": 4, "run.save_every": 2, "algo.name": "rloo", "algo.kl_coef": 0.05, "lora.r": lora_r}
    full = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "full", **common)))
    # the interrupted run: stop after step 2 (its checkpoint is written), then resume to step 4
    train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut", **{**common, "run.steps": 2})))
    # (a run cut at step 2 of 4 differs only in the LR schedule's horizon; use a constant schedule)
    resumed = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut",
                                                     **{**common, "run.resume": True})))
    assert resumed.step == 4
    a, b = _rows(full.run_dir), _rows(resumed.run_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # no duplicated lines after resume
    for key in ("reward", "loss", "kl", "length"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    from safetensors.torch import load_file

    wa = load_file(str(full.final_dir / "model.safetensors"))
    wb = load_file(str(resumed.final_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if lora_r:  # checkpoints hold the adapter alone; the adapters of both runs are equal bit for bit
        ckpt = full.run_dir / "checkpoints" / "step-00000004"
        assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
        aa = load_file(str(full.final_dir / "adapter" / "adapter_model.safetensors"))
        ab = load_file(str(resumed.final_dir / "adapter" / "adapter_model.safetensors"))
        assert aa and all(torch.equal(aa[k], ab[k]) for k in aa)
        assert any(v.abs().max() > 0 for k, v in aa.items() if "lora_B" in k)  # the adapter trained


def test_rl_continues_a_lora_sft_run_from_its_adapter(tmp_path, tiny_causal_dir, tiny_dataset):
    """`rlft sft` with LoRA, then `rlft train` with lora.init_adapter=<its final/>: the first
    rollouts' KL is 0 (the reference is the SFT policy, not the base model), the adapter trains on
    from the SFT adapter, and a resumed run reproduces the uninterrupted one."""
    from safetensors.torch import load_file

    from rlft.training.loop import train
    from rlft.training.sft import sft

    lora = {"lora.r": 4, "lora.alpha": 8}
    first = sft(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "sft", **lora, **{
        "run.steps": 6, "sft.batch_size": 8, "sft.epochs": 10, "optim.lr": 1e-2})))
    start = load_file(str(first.final_dir / "adapter" / "adapter_model.safetensors"))
    assert any(v.abs().max() > 0.01 for k, v in start.items() if "lora_B" in k)  # SFT moved the adapter
    common = {**lora, "lora.init_adapter": str(first.final_dir), "algo.name": "rloo", "algo.kl_coef": 0.05,
              "run.steps": 4, "run.save_every": 2, "optim.lr": 1e-2}
    full = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "full", **common)))
    rows = _rows(full.run_dir)
    assert abs(rows[0]["kl"]) < 1e-5 and abs(rows[-1]["kl"]) > 1e-4
    after = load_file(str(full.final_dir / "adapter" / "adapter_model.safetensors"))
    assert after.keys() == start.keys() and any(not torch.equal(after[k], start[k]) for k in start)
    train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut", **{**common, "run.steps": 2})))
    resumed = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut",
                                                     **{**common, "run.resume": True})))
    assert [r["kl"] for r in _rows(resumed.run_dir)] == [r["kl"] for r in rows]
    again = load_file(str(resumed.final_dir / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(again[k], after[k]) for k in after)


def test_bad_reward_steps_are_skipped_and_counted(tmp_path, tiny_causal_dir, tiny_dataset, monkeypatch):
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    mod = tmp_path / "nanreward.py"
    mod.write_text("calls = [0]\n"
                   "def reward(prompts, completions, references, **meta):\n"
                   "    calls[0] += 1\n"
                   "    return [float('nan')] * len(completions) if calls[0] % 2 == 1 else [len(c) / 10 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run",
                                           **{"reward.spec": "nanreward:reward", "run.steps": 4}))
    parts = build_parts(cfg)
    parts.splits["validation"] = []  # the eval would call the reward too; keep the call count simple
    before = _params(parts.policy.model)
    result = train(cfg, parts)
    rows = _rows(result.run_dir)
    skipped = [r for r in rows if r.get("skipped")]
    assert result.skipped_steps == 2 and len(skipped) == 2
    assert "NaN" in skipped[0]["reason"] or "nan" in skipped[0]["reason"].lower()
    assert _finite([r for r in rows if not r.get("skipped")])
    assert any(not torch.equal(before[k], v) for k, v in _params(parts.policy.model).items())


def test_sft_lowers_loss_and_exports_best(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.training.sft import sft

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "sft", **{
        "run.steps": 12, "run.eval_every": 6, "sft.batch_size": 8, "sft.epochs": 10, "optim.lr": 3e-3}))
    result = sft(cfg)
    rows = _rows(result.run_dir)
    assert len(rows) == 12 and _finite(rows)
    assert sum(r["loss"] for r in rows[-3:]) < sum(r["loss"] for r in rows[:3])
    assert (result.run_dir / "best" / "model.safetensors").exists()
    assert (result.run_dir / "final" / "config.json").exists()


def test_gradient_accumulation_gives_the_same_gradient(tmp_path, tiny_causal_dir, tiny_dataset):
    """The loop's update in 3 micro-batches equals the whole batch at once (SGD, so the parameter
    change is exactly -lr * gradient; Adam would hide a wrong scale)."""
    import copy

    from rlft.models.loading import load_reference
    from rlft.training.setup import build_parts
    from rlft.training.update import UpdateBatch, UpdateSettings, frozen_logprobs, update

    deltas = []
    for accum in (1, 3):
        cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / f"acc{accum}", **{
            "optim.grad_accum": accum, "algo.kl_coef": 0.1, "algo.entropy_coef": 0.01, "algo.name": "grpo",
            "algo.loss_norm": "sequence", "optim.max_grad_norm": 0, "algo.kl_mode": "loss", "algo.kl_estimator": "k2",
            "rollout.temperature": 0.8}))
        parts = build_parts(cfg)
        model = parts.policy.model
        rollout = parts.sampler.sample(["reverse: the cat =>", "reverse: a dog ran =>"], 3, temperature=0.8,
                                       top_p=1.0, top_k=0, max_new_tokens=6,
                                       generator=torch.Generator().manual_seed(0))
        settings = UpdateSettings.from_config(cfg, parts, clip=True)
        with load_reference(parts.policy, cfg.model).active() as ref_model:
            ref_lp = frozen_logprobs(ref_model, rollout, settings)
        advantages = torch.linspace(-1, 1, 6)
        start = copy.deepcopy(model.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        update(model, opt, UpdateBatch(rollout, advantages, torch.ones(6), ref_lp), settings)
        deltas.append({k: model.state_dict()[k] - start[k] for k in start})
    assert any(d.abs().max() > 1e-4 for d in deltas[0].values())
    for k in deltas[0]:
        torch.testing.assert_close(deltas[0][k], deltas[1][k], atol=1e-6, rtol=1e-5)


def test_sft_early_stopping_keeps_the_best(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.training.sft import sft

    # lr 0: the validation metric never improves after the first evaluation, so patience 2 stops at step 6
    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "sft", **{
        "run.steps": 20, "run.eval_every": 2, "sft.patience": 2, "sft.epochs": 10, "optim.lr": 0.0}))
    result = sft(cfg)
    assert result.step == 6
    assert [ev["step"] for ev in result.evals] == [2, 4, 6]
    assert (result.run_dir / "best" / "model.safetensors").exists()
