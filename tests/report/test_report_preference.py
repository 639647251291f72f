"""The run report of a reward-model run: held-out accuracy with its interval, calibration table and plot."""

from __future__ import annotations

import json

from rlft.eval.preference import pairwise_accuracy
from rlft.report import write_report
from rlft.rundir import eval_path


def test_report_shows_held_out_accuracy_and_calibration(tmp_path):
    ev = pairwise_accuracy([2.0, 1.0, -0.5, 0.3], [0.0, 1.5, 0.0, 0.3], [False, False, False, True], split="validation")
    body = {**ev.to_dict(), "step": 4, "ties_model": "davidson", "tie_param": 0.9}
    eval_path(tmp_path, "rm-validation").parent.mkdir(parents=True)
    eval_path(tmp_path, "rm-validation").write_text(json.dumps(body))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "split": "train", "loss": 1.0 / s,
                                                                "accuracy": 0.5}) + "\n" for s in (1, 2, 3, 4)))
    page = write_report(tmp_path).read_text()
    assert "Reward model: held-out pairs" in page
    assert "33.3%" in page and f"{100 * ev.ci_low:.1f}% to {100 * ev.ci_high:.1f}%" in page
    assert 'alt="reward-model calibration"' in page
    assert "training curves only" not in page
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["reward_model"][0]["n"] == 3 and summary["reward_model"][0]["calibration"]
