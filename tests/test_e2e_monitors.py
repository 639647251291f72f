"""A tiny RL run logs the reward-hacking monitors to metrics.jsonl, TensorBoard and the report."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rlft.config import load_config
from tests.conftest import tiny_overrides

MONITORS = ("zero_var_groups", "length_ratio", "copy_rate", "distinct_1", "distinct_2", "repetition")


def test_monitors_reach_metrics_tensorboard_and_report(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.report import write_report
    from rlft.training.loop import train

    language = importlib.util.find_spec("py3langid") is not None
    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        "reward.spec": "0.5*chrf + 0.5*length_penalty", "reward.normalize_components": "true",
        "eval.language": "en" if language else "", "run.eval_every": 1, "run.tensorboard": "true"}))
    result = train(cfg)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in lines if r["split"] == "train"]
    val_rows = [r for r in lines if r["split"] == "validation"]
    assert [r["step"] for r in train_rows] == [1, 2, 3] and [r["step"] for r in val_rows] == [0, 1, 2, 3]
    expected = MONITORS + ("reward/chrf", "reward/length_penalty") + (("off_language",) if language else ())
    for row in train_rows:
        for key in expected:
            assert key in row, key
        for key in ("zero_var_groups", "copy_rate", "repetition") + (("off_language",) if language else ()):
            assert 0.0 <= row[key] <= 1.0, key
        # the logged reward is the raw weighted sum, not the normalized training signal
        assert row["reward"] == pytest.approx(0.5 * row["reward/chrf"] + 0.5 * row["reward/length_penalty"],
                                              abs=1e-6)
    for row in val_rows:
        for key in [k for k in expected if k != "zero_var_groups"] + ["reward_metric_divergence", "train_reward"]:
            assert key in row, key
        assert "zero_var_groups" not in row  # one greedy output per prompt: no groups
    assert val_rows[0]["train_reward"] is None  # nothing trained before step 0
    assert val_rows[1]["train_reward"] == pytest.approx(train_rows[0]["reward"])

    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(result.run_dir / "tensorboard"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"train/copy_rate", "train/reward/chrf", "validation/length_ratio",
                "validation/reward_metric_divergence"} <= tags
    if importlib.util.find_spec("matplotlib") is not None:
        page = write_report(result.run_dir).read_text(encoding="utf-8")
        assert "<h2>Reward-hacking monitors</h2>" in page and "copy_rate" in page
