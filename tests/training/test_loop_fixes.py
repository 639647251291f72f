"""The RL loop's bookkeeping: logged stats independent of grad_accum, skipped steps (bad rewards,
non-finite loss or gradient) that keep the checkpoint and LR schedule, exact resume with every
stateful feature on, and the exported config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlft.config import load_config
from tests.conftest import tiny_overrides


def _rows(run_dir: Path, split: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


def test_logged_stats_are_token_means_independent_of_grad_accum(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.algorithms import rl_loss
    from rlft.models.loading import load_reference
    from rlft.models.logprobs import completion_logprobs
    from rlft.training.setup import build_parts
    from rlft.training.update import UpdateBatch, UpdateSettings, frozen_logprobs, update

    logged = []
    for accum in (1, 2):
        cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / f"acc{accum}", **{
            "optim.grad_accum": accum, "algo.name": "grpo", "algo.kl_coef": 0.1, "algo.kl_mode": "loss",
            "algo.kl_estimator": "k2", "algo.entropy_coef": 0.01, "optim.lr": 0.0}))
        parts = build_parts(cfg)
        rollout = parts.sampler.sample(["reverse: the cat =>", "reverse: a dog ran =>"], 3, temperature=1.0,
                                       top_p=1.0, top_k=0, max_new_tokens=8,
                                       generator=torch.Generator().manual_seed(0))
        # rows of unequal length (1..8 tokens, short rows in the first half): a mean over rows is not
        # the mean over tokens, and the two halves hold different token counts
        lengths = torch.tensor([1, 2, 3, 8, 8, 8])
        rollout.completion_mask = (torch.arange(8)[None, :] < lengths[:, None]).float()
        settings = UpdateSettings.from_config(cfg, parts, clip=True)
        with load_reference(parts.policy, cfg.model).active() as ref_model:
            ref_lp = frozen_logprobs(ref_model, rollout, settings) - 0.3
        opt = torch.optim.SGD(parts.policy.model.parameters(), lr=0.0)
        stats, error = update(parts.policy.model, opt,
                              UpdateBatch(rollout, torch.linspace(-1, 1, 6), torch.ones(6), ref_lp), settings)
        assert error is None
        logged.append(stats)
        # the whole batch in one rl_loss call: the token means the stats must equal
        lp, ent = completion_logprobs(parts.policy.model, rollout, is_seq2seq=False, with_entropy=True)
        _, whole = rl_loss(lp.detach(), lp.detach(), torch.linspace(-1, 1, 6), rollout.completion_mask,
                           ref_logprobs=ref_lp, kl_coef=0.1, kl_estimator="k2", entropy=ent.detach(),
                           entropy_coef=0.01, clip_eps=0.2)
        for key in ("pg_loss", "kl", "entropy", "ratio_mean"):
            assert stats[key] == pytest.approx(float(whole[key]), rel=1e-5, abs=1e-7), (accum, key)
    for key in ("loss", "pg_loss", "kl", "entropy", "clip_frac", "ratio_mean"):
        assert logged[0][key] == pytest.approx(logged[1][key], rel=1e-5, abs=1e-7), key


def _reward_module(tmp_path, monkeypatch, bad_call: int | None) -> str:
    (tmp_path / "stepreward.py").write_text(
        "calls = [0]\n"
        "def reward(prompts, completions, references, **meta):\n"
        "    calls[0] += 1\n"
        f"    bad = calls[0] == {bad_call}\n"
        "    return [float('nan') if bad else len(c) / 10 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("stepreward", None)
    return "stepreward:reward"


def test_a_skipped_step_keeps_its_checkpoint_and_the_lr_schedule(tmp_path, tiny_causal_dir, tiny_dataset, monkeypatch):
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    rows = {}
    for name, bad in (("clean", None), ("bad", 2)):
        (tmp_path / name).mkdir()
        spec = _reward_module(tmp_path / name, monkeypatch, bad)
        cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / name / "run", **{
            "reward.spec": spec, "run.steps": 4, "run.save_every": 2, "optim.schedule": "linear",
            "run.keep_checkpoints": 5}))
        parts = build_parts(cfg)
        parts.splits["validation"] = []  # the eval would call the reward too
        result = train(cfg, parts)
        rows[name] = _rows(result.run_dir)
        monkeypatch.undo()
    assert [r.get("skipped", 0) for r in rows["bad"]] == [0, 1, 0, 0]
    steps = sorted(p.name for p in (tmp_path / "bad" / "run" / "checkpoints").iterdir())
    assert steps == ["step-00000002", "step-00000004"]  # step 2 was skipped and still saved
    # the LR at steps 3 and 4 is the schedule's value at those steps, as in the clean run
    assert [r["lr"] for r in rows["bad"][2:]] == [r["lr"] for r in rows["clean"][2:]]
    assert rows["clean"][2]["lr"] != rows["clean"][3]["lr"]


def test_non_finite_loss_or_gradient_skips_the_update(tmp_path, tiny_causal_dir, tiny_dataset, monkeypatch):
    import rlft.algorithms as algorithms
    from rlft.training.loop import train

    real, calls = algorithms.rl_loss, [0]

    def poisoned(logprobs, *args, **kwargs):
        calls[0] += 1
        loss, stats = real(logprobs, *args, **kwargs)
        if calls[0] == 2:  # NaN loss
            loss = loss * float("nan")
        if calls[0] == 3:  # finite loss, NaN gradient: d sqrt(u)/du = inf at u = 0, times 0
            loss = loss + (logprobs.sum() * 0).sqrt()
        return loss, stats

    monkeypatch.setattr(algorithms, "rl_loss", poisoned)
    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        "run.steps": 4, "run.save_every": 1, "run.keep_checkpoints": 10}))
    result = train(cfg)
    rows = _rows(result.run_dir)
    assert [r.get("skipped", 0) for r in rows] == [0, 1, 1, 0]
    assert "non-finite loss" in rows[1]["reason"] and "non-finite gradient" in rows[2]["reason"]
    assert result.skipped_steps == 2
    ckpt = result.run_dir / "checkpoints"
    w = [_weights(ckpt / f"step-{s:08d}") for s in (1, 2, 3, 4)]
    assert all(torch.equal(w[0][k], w[1][k]) and torch.equal(w[0][k], w[2][k]) for k in w[0])
    assert any(not torch.equal(w[2][k], w[3][k]) for k in w[0])
    assert all(math.isfinite(v) for v in w[3]["lm_head.weight"].flatten().tolist())
    opt2 = torch.load(ckpt / "step-00000002" / "optimizer.pt", weights_only=True)
    assert all(int(s["step"]) == 1 for s in opt2["state"].values())  # Adam did not count the skipped step


RESUME_FEATURES = {
    # tail guard on (delta 0: any drop of the tail's validation metric boosts the tail), the traffic
    # weights in the loss instead of the sampler, and REINFORCE's running baseline
    "tail_guard+loss_weights+reinforce": {"algo.name": "reinforce", "frequency.mode": "loss",
                                          "frequency.tail_guard": 0.0, "frequency.tail_guard_boost": 4.0,
                                          "run.eval_every": 1, "optim.lr": 0.03},
    "tail_guard+scst": {"algo.name": "scst", "frequency.tail_guard": 0.0, "frequency.tail_guard_boost": 4.0,
                        "run.eval_every": 1, "optim.lr": 0.03, "algo.kl_coef": 0.05},
}


@pytest.mark.parametrize("features", list(RESUME_FEATURES))
def test_resume_is_exact_with_stateful_features(tmp_path, tiny_causal_dir, tiny_dataset, features):
    from rlft.training.loop import train

    common = {"run.steps": 5, "run.save_every": 3, "eval.max_examples": 10, **RESUME_FEATURES[features]}
    full = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "full", **common)))
    train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut", **{**common, "run.steps": 3})))
    # the guard is active in the checkpoint the resume starts from: the boosted distribution matters
    extra = torch.load(tmp_path / "cut" / "checkpoints" / "step-00000003" / "extra.pt", weights_only=True)
    assert extra["extra"]["tail_guard"]["active"]
    resumed = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "cut",
                                                     **{**common, "run.resume": True})))
    a, b = _rows(full.run_dir), _rows(resumed.run_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    for key in ("reward", "loss", "length", "grad_norm"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    va, vb = _rows(full.run_dir, "validation"), _rows(resumed.run_dir, "validation")
    assert [(r["step"], r.get("metric")) for r in va] == [(r["step"], r.get("metric")) for r in vb]
    wa, wb = _weights(full.final_dir), _weights(resumed.final_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_exported_config_keeps_the_models_dropout(tmp_path, tiny_seq2seq_dir, tiny_dataset):
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    assert json.loads((tiny_seq2seq_dir / "config.json").read_text())["dropout_rate"] == 0.1
    cfg = load_config(None, tiny_overrides(tiny_seq2seq_dir, tiny_dataset, tmp_path / "run", **{
        "run.steps": 1, "run.save_every": 1}))
    parts = build_parts(cfg)
    result = train(cfg, parts)
    assert parts.policy.model.config.dropout_rate == 0.0  # off in memory while training
    for saved in (result.final_dir, result.run_dir / "checkpoints" / "step-00000001"):
        assert json.loads((saved / "config.json").read_text())["dropout_rate"] == 0.1, saved
