"""benchmarks.common's evaluation cache, shared by the learning and the replay evaluations."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks import common


def test_cached_result_computes_once_per_model_and_example_ids(tmp_path):
    calls = []

    def compute(ids):
        def run():
            calls.append(ids)
            return {"ids": ids, "metric": 12.5, "second_metric": float("nan"), "where": Path("/x/y")}
        return run

    cache = tmp_path / "evals" / "base-val.json"
    first, fresh = common.cached_result(cache, ["a", "b"], "org/model", "eval base", compute(["a", "b"]))
    assert fresh and first["model"] == "org/model" and first["wall_s"] >= 0
    again, fresh = common.cached_result(cache, ["a", "b"], "org/model", "eval base", compute(["a", "b"]))
    assert not fresh and len(calls) == 1
    # written as JSON with NaN kept and a path as its text, and read back as such
    assert again["metric"] == 12.5 and math.isnan(again["second_metric"]) and again["where"] == "/x/y"
    assert json.loads(cache.read_text(encoding="utf-8"))["ids"] == ["a", "b"]
    # other example ids, or another model, are computed again
    common.cached_result(cache, ["a", "c"], "org/model", "eval base", compute(["a", "c"]))
    common.cached_result(cache, ["a", "c"], "org/other", "eval base", compute(["a", "c"]))
    assert calls == [["a", "b"], ["a", "c"], ["a", "c"]]
