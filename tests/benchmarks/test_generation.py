"""benchmarks.generation end to end on a tiny chat model: this tree against a baseline source tree
(here the same commit, so the tokens must match), results written with the machine and the ratio."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks import generation


def test_side_by_side_against_a_baseline_tree(tmp_path, monkeypatch):
    from tests.tiny import tiny_causal

    if subprocess.run(["git", "-C", str(generation.ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    model = tiny_causal(tmp_path, chat=True)
    out = tmp_path / "gen.json"
    generation.main(["--model", str(model), "--baseline-rev", "HEAD", "--precisions", "fp32", "--modes", "lora",
                     "--repeats", "2", "--new-tokens", "3", "--threads", "1", "--allow-busy", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["source"] for r in rows] == ["this tree", "HEAD"]
    # each worker imported the rlft of its own source tree (checked by main); no machine path is kept
    assert [r["rlft_from"] for r in rows] == ["src/ of this tree", "src/ of git archive HEAD"]
    text = out.read_text()  # neither the checkout's nor the scratch checkout's path (the command names tmp_path)
    assert str(generation.ROOT) not in text and "rlft-gen-bench-" not in text
    for r in rows:
        assert len(r["times"]) == 2 and r["slots"] == 8 * 4 * 3 or r["slots"] % (8 * 4) == 0
        assert r["tokens_per_s"] == pytest.approx(r["slots"] / r["median_s"])
    [speedup] = result["speedups"]
    assert speedup["same_tokens"] is True  # the same code samples the same tokens for a seed
    assert speedup["ratio"] == pytest.approx(rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"])
    assert "cpu_flags" in result["machine"] and "| HEAD | fp32 | lora |" in out.with_suffix(".md").read_text()
