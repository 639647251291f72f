"""`rlft rm pairs`: synthetic preference pairs from a model's own samples, ordered by a reference metric."""

from __future__ import annotations

import json

from rlft.data.preferences import load_pairs
from tests.conftest import tiny_overrides


def test_pairs_are_ordered_by_the_metric_labelled_synthetic_and_train_a_reward_model(
        tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    from rlft.cli import main

    out = tmp_path / "pairs.jsonl"
    args = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "unused", **{
        "data.max_examples": 12, "rollout.group_size": 4, "rm.pairs_per_prompt": 2, "rm.pair_margin": 0.05,
        "reward.spec": "chrf"})
    assert main(["rm", "pairs", *args, "--out", str(out)]) == 0
    assert "synthetic pairs" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 12 <= len(rows) <= 24
    for r in rows:
        assert r["synthetic"] is True and r["annotator"] == "synthetic:chrf"
        assert r["chosen"] != r["rejected"] and r["scores"][0] >= r["scores"][1]
        assert r["tie"] == (r["scores"][0] - r["scores"][1] < 0.05)
    assert len({r["prompt"] for r in rows}) == 12
    assert len(load_pairs(str(out))) == len(rows)  # what rlft rm train reads
    # the same seed writes the same file
    again = tmp_path / "again.jsonl"
    assert main(["rm", "pairs", *args, "--out", str(again)]) == 0
    assert again.read_text() == out.read_text()
    # and rlft rm train takes it
    assert main(["rm", "train", f"model.name_or_path={tiny_causal_dir}", f"data.train={out}",
                 f"run.output_dir={tmp_path / 'rm'}", "run.steps=2", "rm.batch_size=4", "run.progress=false",
                 "run.tensorboard=false", "run.device=cpu", "run.precision=fp32", "data.validation_fraction=0.3",
                 "data.test_fraction=0", "rm.max_length=64"]) == 0
    assert (tmp_path / "rm" / "final" / "config.json").is_file()
