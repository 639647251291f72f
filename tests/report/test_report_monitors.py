"""The report's reward-hacking monitor section, from hand-written metrics.jsonl lines."""

from __future__ import annotations

import json

import pytest

from rlft.report import write_report
from rlft.report.monitors import divergence_steps, monitor_keys, monitor_rows


def _metrics() -> list[dict]:
    lines = []
    for step in range(1, 21):  # copy_rate climbs 0.0, 0.05, ... 0.95; length_ratio constant 1.2
        lines.append({"step": step, "split": "train", "reward": step / 20, "copy_rate": (step - 1) / 20,
                      "length_ratio": 1.2, "reward/chrf": 0.5, "reward/placeholders": 1.0})
    for step, metric, flag in ((0, 50.0, 0), (10, 49.0, 0), (20, 48.0, 1)):
        lines.append({"step": step, "split": "validation", "metric": metric, "copy_rate": step / 100,
                      "reward_metric_divergence": flag})
    lines.append({"step": 20, "split": "text", "tag": "samples", "text": "x"})
    return lines


def test_monitor_rows_start_and_end_values():
    metrics = _metrics()
    assert monitor_keys(metrics) == ["length_ratio", "copy_rate", "reward/chrf", "reward/placeholders"]
    rows = {r.key: r for r in monitor_rows(metrics)}
    # 20 train lines: first/last tenth = 2 lines: (0 + 0.05) / 2 and (0.9 + 0.95) / 2
    assert rows["copy_rate"].train_start == pytest.approx(0.025)
    assert rows["copy_rate"].train_end == pytest.approx(0.925)
    assert (rows["copy_rate"].eval_start, rows["copy_rate"].eval_end) == (0.0, 0.2)
    assert rows["length_ratio"].eval_start is None and rows["length_ratio"].train_end == pytest.approx(1.2)
    assert "placeholders" in rows["reward/placeholders"].what
    assert divergence_steps(metrics) == [20]


def test_report_has_the_monitor_section_plot_and_warning(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in _metrics()))
    page = write_report(run).read_text(encoding="utf-8")
    assert "<h2>Reward-hacking monitors</h2>" in page and "Warning at step 20" in page
    assert (run / "report" / "monitors.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["monitors"]["copy_rate"]["train_end"] == pytest.approx(0.925)
    assert summary["divergence_steps"] == [20] and "monitors.png" in summary["plots"]


def test_no_monitor_section_without_monitors(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "reward": 0.1}) + "\n")
    page = write_report(run).read_text(encoding="utf-8")
    assert "Reward-hacking monitors" not in page and not (run / "report" / "monitors.png").exists()
