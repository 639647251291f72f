"""The model source: `rlft label sample` writes a candidates file that `rlft label serve` imports."""

from __future__ import annotations

import json

from rlft.cli import main
from rlft.label.sources import load_candidates
from tests.conftest import tiny_overrides
from tests.tiny import tiny_causal


def test_sample_writes_pairs_from_one_policy_or_two_checkpoints(tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    over = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{"rollout.temperature": 1.5})
    out = tmp_path / "one.jsonl"
    assert main(["label", "sample", *over, "--out", str(out), "--max-prompts", "6"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    validation = [json.loads(x)["prompt"] for x in open(tiny_dataset["validation"])][:6]
    assert rows and all(r["prompt"] in validation and r["a"] != r["b"] for r in rows)
    assert rows[0]["model_a"] == f"{tiny_causal_dir} (sample 1)"
    assert f"{out}: {len(rows)} pairs" in capsys.readouterr().out

    other = tiny_causal(tmp_path / "other", seed=1)
    out = tmp_path / "two.jsonl"
    assert main(["label", "sample", *over, "--out", str(out), "--model-b", str(other), "--split", "test"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows and {(r["model_a"], r["model_b"]) for r in rows} == {(str(tiny_causal_dir), str(other))}
    items, same = load_candidates(str(out))
    assert same == 0 and [i["key"] for i in items] == [r["id"] for r in rows]
