"""EvalResult: the typed record of an evaluation, its file, and the dict view kept for old callers."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from rlft.errors import RlftError
from rlft.eval.evaluate import log_summary
from rlft.eval.result import STRATA_KEYS, EvalResult, read_eval, write_eval


def _result(**kw) -> EvalResult:
    base = dict(tag="after", step=40, split="test", n=2, metric_name="chrf", metric=50.0, per_example=[40.0, 60.0],
                corpus_metric=49.5, second_metric_name="bleu", second_metric=10.0, second_per_example=[5.0, 15.0],
                reward=0.5, kl=None, kl_n=0, length=3.5, truncation_rate=0.0, ids=["a", "b"], counts=[3.0, 1.0],
                outputs=["x y", "z"], samples=[{"id": "a", "prompt": "p", "reference": "r", "output": "x y"}],
                monitors={"length_ratio": 1.1, "copy_rate": 0.0}, components={"reward/chrf": 0.4, "reward/len": 0.9},
                buckets=["head", "unseen"], train_counts=[3.0, 0.0], bucket_rule="head: count >= 2",
                strata={"traffic_weighted": 45.0, "unweighted": 50.0, "head": 40.0, "n_head": 1, "rare": 60.0})
    return EvalResult(**{**base, **kw})


# The key order of eval/<tag>.json as rlft wrote it before EvalResult (a plain dict built in this order).
FILE_ORDER = ["tag", "step", "split", "n", "metric_name", "metric", "per_example", "corpus_metric",
              "second_metric_name", "second_metric", "second_per_example", "reward", "kl", "kl_n", "length",
              "truncation_rate", "ids", "counts", "outputs", "samples", "length_ratio", "copy_rate", "reward/chrf",
              "reward/len", "buckets", "train_counts", "bucket_rule", "traffic_weighted", "unweighted", "head",
              "n_head", "rare"]


def test_to_dict_is_the_flat_file_object_in_its_order():
    r = _result()
    assert list(r.to_dict()) == FILE_ORDER
    assert r.to_dict()["reward/len"] == 0.9 and r.to_dict()["rare"] == 60.0
    replay = dataclasses.replace(r, cache_per_example=[100.0, None], replay={"seed": 7})
    assert list(replay.to_dict())[-2:] == ["cache_per_example", "replay"]
    bare = _result(buckets=None, train_counts=None, bucket_rule=None, strata={}, components={})
    assert "buckets" not in bare.to_dict() and "traffic_weighted" not in bare.to_dict()
    assert list(STRATA_KEYS[:4]) == ["traffic_weighted", "unweighted", "head", "n_head"]


def test_the_file_round_trips(tmp_path):
    r = _result(second_metric=None)
    path = write_eval(tmp_path, r)
    assert path == tmp_path / "eval" / "after.json"
    assert path.read_text(encoding="utf-8") == json.dumps(r.to_dict(), ensure_ascii=False, indent=1)
    back = read_eval(path)
    assert back == r and list(back.to_dict()) == FILE_ORDER
    path.write_text("[1]")
    with pytest.raises(RlftError, match="expected a JSON object, got list"):
        read_eval(path)


def test_a_partial_file_reads_with_missing_fields_none():
    r = EvalResult.from_dict({"tag": "x", "per_example": [1.0], "head": 2.0, "copy_rate": 0.5, "reward/a": 1.0,
                              "wall_s": 3.0})
    assert (r.tag, r.step, r.n, r.metric, r.counts, r.buckets, r.replay_eval) == ("x", None, None, None, None, None,
                                                                                   None)
    assert (r.strata, r.monitors, r.components) == ({"head": 2.0}, {"copy_rate": 0.5}, {"reward/a": 1.0})
    assert EvalResult.from_dict(r) is r


def test_frozen_record_and_a_dict_for_old_callers():
    r = _result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.metric = 0.0  # type: ignore[misc]
    # what benchmarks/ does with a result: index it, add keys, json.dumps it (no default= needed)
    assert r["metric"] == 50.0 and r.get("rare") == 60.0 and "kl" in r and r.get("absent") is None
    r["wall_s"] = 1.5
    r.update({"model": "m"})
    assert json.loads(json.dumps(r)) == {**r.to_dict(), "wall_s": 1.5, "model": "m"}
    assert r.metric == 50.0 and "wall_s" not in r.to_dict()  # the record is unchanged
    nested = dataclasses.replace(r, replay_eval=_result(tag="after-replay"))
    assert nested["replay_eval"]["tag"] == "after-replay" and nested.replay_eval.tag == "after-replay"


def test_log_summary_keeps_the_scalars_present():
    summary = log_summary(_result(kl=0.01, monitors={"length_ratio": math.nan}))
    assert list(summary) == ["metric", "corpus_metric", "second_metric", "reward", "kl", "length",
                             "truncation_rate", "traffic_weighted", "unweighted", "head", "rare", "length_ratio",
                             "reward/chrf", "reward/len"]
    assert summary["kl"] == 0.01 and math.isnan(summary["length_ratio"])
