"""`rlft demo --quick` runs end to end (on a tiny model here; the real demo uses the bundled one)."""

from __future__ import annotations

import json


def test_demo_quick_writes_table_and_report(tmp_path, tiny_causal_dir, capsys):
    from rlft.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", f"model.name_or_path={tiny_causal_dir}", f"run.output_dir={out}",
                 "run.precision=fp32", "run.threads=1", "rollout.max_new_tokens=8", "eval.max_new_tokens=8"]) == 0
    text = capsys.readouterr().out
    assert "before vs after on 8 test examples" in text
    assert "95% CI" in text and ("no significant change" in text or "improved" in text or "worse" in text)
    # traffic: the bucket table or the line saying why there is none, then the replay of 8 requests
    assert "No traffic-bucket table" in text or "by traffic bucket" in text
    assert "replay of 8 future requests" in text and "exact-match cache" in text
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary  # the numbers behind the table
    before = json.loads((out / "eval" / "before.json").read_text())
    after = json.loads((out / "eval" / "after.json").read_text())
    assert before["ids"] == after["ids"] and before["split"] == "test"
    assert after["kl"] is not None and after["kl"] >= 0
