"""`rlft eval ... eval.replay=N`: the replay sample decoded once per unique prompt, and its table."""

from __future__ import annotations

import json

import pytest

from rlft.cli import main
from tests.conftest import tiny_overrides


def test_eval_replay_writes_and_prints_the_replay(tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    over = [o for o in tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "eval") if not o.startswith("eval.split")]
    assert main(["eval", *over, "eval.split=test", "eval.replay=30", "--tag", "t"]) == 0
    out = capsys.readouterr().out
    split = json.loads((tmp_path / "eval" / "eval" / "t.json").read_text())
    # the test prompts are disjoint from training: all unseen, and no head/torso/tail on this split
    assert set(split["buckets"]) == {"unseen"} and split["train_counts"] == [0.0] * split["n"]
    replay = json.loads((tmp_path / "eval" / "eval" / "t-replay.json").read_text())
    # the tiny training log has no count-1 prompt: Good-Turing P(new) = 0, every request is a repeat
    assert replay["replay"]["p_new"] == 0.0 and all(replay["replay"]["seen"])
    assert sum(replay["counts"]) == 30 and len(set(replay["ids"])) == replay["n"] < 30
    assert set(replay["buckets"]) <= {"head", "torso", "tail"} and "unseen" not in replay["buckets"]
    assert replay["cache_per_example"] == [pytest.approx(100.0)] * replay["n"]  # the training reference itself
    assert "replay of 30 future requests" in out and "exact-match cache" in out
