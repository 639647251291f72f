"""The run scaffold shared by the RL and SFT loops: what used to drift between them is one rule now
(grad_norm, evaluation tags, dropout), and the loop state is a dataclass that survives a checkpoint."""

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


def test_clip_grad_norm_reports_the_norm_before_clipping_with_or_without_clipping():
    from rlft.training.optim import clip_grad_norm

    def model_with_grad() -> torch.nn.Module:
        m = torch.nn.Linear(2, 1, bias=True)
        m.weight.grad = torch.tensor([[3.0, 0.0]])
        m.bias.grad = torch.tensor([4.0])
        return m

    free, clipped = model_with_grad(), model_with_grad()
    assert clip_grad_norm(free, 0.0) == pytest.approx(5.0)          # sqrt(3^2 + 4^2), no clipping
    assert torch.equal(free.weight.grad, torch.tensor([[3.0, 0.0]]))
    assert clip_grad_norm(clipped, 1.0) == pytest.approx(5.0)       # the norm before clipping
    assert float(torch.cat([clipped.weight.grad.flatten(), clipped.bias.grad])
                 .norm()) == pytest.approx(1.0, rel=1e-4)          # ... and clipped to 1


def test_sft_logs_the_real_grad_norm_when_clipping_is_off(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.training.sft import sft

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "sft", **{
        "run.steps": 2, "optim.max_grad_norm": 0, "sft.batch_size": 4}))
    rows = _rows(sft(cfg).run_dir)
    assert len(rows) == 2 and all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows)


def test_both_loops_tag_evaluations_by_loop_and_step(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.training.loop import train
    from rlft.training.sft import sft

    common = {"run.steps": 2, "run.eval_every": 1, "sft.batch_size": 4}
    rl = train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "rl", **common)))
    sup = sft(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "sft", **common)))
    # RL evaluates the starting policy at step 0 (its divergence watch and tail guard need that
    # baseline); SFT does not (best/ and early stopping count SFT checkpoints only)
    assert [ev["tag"] for ev in rl.evals] == ["rl-step-00000000", "rl-step-00000001", "rl-step-00000002"]
    assert [ev["tag"] for ev in sup.evals] == ["sft-step-00000001", "sft-step-00000002"]
    assert [r["step"] for r in _rows(sup.run_dir, "validation")] == [1, 2]


def test_sft_keeps_the_models_dropout_and_rl_turns_it_off(tmp_path, tiny_seq2seq_dir, tiny_dataset):
    from rlft.training.loop import train
    from rlft.training.setup import build_parts
    from rlft.training.sft import sft

    for loop, dropout in ((sft, 0.1), (train, 0.0)):
        cfg = load_config(None, tiny_overrides(tiny_seq2seq_dir, tiny_dataset, tmp_path / loop.__name__, **{
            "run.steps": 1, "sft.batch_size": 4}))
        parts = build_parts(cfg)
        loop(cfg, parts)
        assert parts.policy.model.config.dropout_rate == dropout, loop.__name__
        ps = {m.p for m in parts.policy.model.modules() if isinstance(m, torch.nn.Dropout)}
        assert ps == {dropout}, loop.__name__


def test_loop_state_is_a_dataclass_saved_and_restored(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.training.loop import RLState, train

    common = {"algo.name": "reinforce", "run.save_every": 1}
    train(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        **common, "run.steps": 1})))
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step-00000001" / "trainer_state.json").read_text())
    assert set(saved["state"]) == {"algo", "skipped", "consecutive_skips", "warned_truncation", "kl_coef"}
    assert isinstance(saved["state"]["algo"]["baseline"], float)  # REINFORCE's running baseline

    from rlft.training.run import _restored

    restored = _restored(RLState(), saved["state"], tmp_path)
    assert isinstance(restored, RLState) and restored.algo == saved["state"]["algo"]
    with pytest.warns(UserWarning, match="unknown loop state gone"):
        assert _restored(RLState(), {"skipped": 2, "gone": 1}, tmp_path) == RLState(skipped=2)
