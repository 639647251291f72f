"""benchmarks.preference: the reward model's agreement with its labeller on the pairs RL moved to,
counted by hand on four prompts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.preference import compare_arms


def test_agreement_on_the_start_and_arm_outputs_counts_only_pairs_the_labeller_separates():
    ids = ["p0", "p1", "p2", "p3"]
    test = {"sft": {"ids": ids, "outputs": ["a0", "a1", "a2", "a3"]},
            "rm": {"ids": ids, "outputs": ["b0", "b1", "b2", "b3"]}}
    # chrF (0-100) of the start and the arm; the reward model's raw scores
    scores = {"sft": {"chrf": [50.0, 50.0, 50.0, 50.0], "rm_score": [0.0, 0.0, 0.0, 0.0]},
              "rm": {"chrf": [60.0, 40.0, 50.5, 30.0], "rm_score": [1.0, 1.0, -1.0, 5.0]}}
    for s in scores.values():  # the other judges, constant
        s.update({m: [10.0] * 4 for m in ("rouge_l", "bleu", "embedding")})
    examples = [SimpleNamespace(id=i, prompt=f"prompt {i}", references=(f"ref {i}",)) for i in ids]
    out = compare_arms(test, scores, examples, "chrf", margin=0.02, seed=0)["rm"]
    # p0: chrF up, RM up (agree); p1: chrF down, RM up (disagree); p2: within the margin (left out);
    # p3: chrF down 20, RM up (disagree)
    pairs = out["on_policy_pairs"]
    assert pairs["n"] == 3 and pairs["rm_agrees_with_labeller"] == pytest.approx(1 / 3)
    assert 0 <= pairs["ci_low"] < 1 / 3 < pairs["ci_high"] <= 1
    # the start's RM scores have std 0, so gains are raw: p3 (+5, chrF -20) and p1 (+1, chrF -10) both
    # rose while chrF fell; only p3's rise exceeds 1
    assert [e["id"] for e in out["examples"]] == ["p3", "p1"]
    assert out["rm_up_labeller_down"] == 1
    assert out["deltas"]["chrf"]["delta"] == pytest.approx((10 - 10 + 0.5 - 20) / 4)
