"""The traffic tables: bucket table or its one-line explanation, and the replay table."""

from rlft.eval.result import EvalResult
from rlft.report import bucket_table, replay_table, traffic_tables


def _eval(per_example, buckets, counts, **extra):
    return EvalResult.from_dict({"tag": "x", "metric_name": "chrf", "per_example": per_example,
                                 "ids": [f"e{i}" for i in range(len(counts))], "buckets": buckets, "counts": counts,
                                 **extra})


def _replay(per_example):
    # unique prompts: seen x3, seen x1, new x2
    return _eval(per_example, ["head", "tail", "unseen"], [3.0, 1.0, 2.0], cache_per_example=[100.0, 50.0, None],
                 replay={"seed": 7, "p_new": 0.2, "singletons": 2, "log_requests": 10.0, "pool": 51,
                         "pool_reused": False, "seen": [True, True, False]})


def test_no_bucket_table_when_every_prompt_is_unseen():
    rule = "head: count >= 2 (4 prompts, 4.0% of training traffic); torso: empty; tail: count < 2"
    before = _eval([10.0, 20.0, 30.0], ["unseen"] * 3, [1.0, 1.0, 1.0], bucket_rule=rule)
    after = _eval([11.0, 21.0, 33.0], ["unseen"] * 3, [1.0, 1.0, 1.0])
    text = bucket_table(before, after)
    assert "\n" not in text and text.startswith("No traffic-bucket table: the 3 evaluated prompts")
    assert "all 'unseen'" in text and "all carry count 1" in text and rule in text


def test_bucket_table_keeps_rows_that_differ_and_states_the_rule():
    before = _eval([10.0, 20.0, 30.0], ["head", "tail", "unseen"], [1.0, 1.0, 1.0], bucket_rule="RULE")
    after = _eval([12.0, 20.0, 27.0], ["head", "tail", "unseen"], [1.0, 1.0, 1.0])
    lines = bucket_table(before, after).splitlines()
    assert [ln.split()[0] for ln in lines[3:6]] == ["head", "tail", "unseen"]
    assert not any(ln.startswith("traffic-weighted") for ln in lines)  # equal counts: no weighted row
    assert lines[-1] == "Buckets by training count: RULE."


def test_replay_table_by_hand():
    before, after = _replay([40.0, 80.0, 30.0]), _replay([46.0, 80.0, 27.0])
    text = replay_table(before, after)
    rows = {ln.split("  ")[0]: ln.split() for ln in text.splitlines()}
    assert "P(new prompt) = n1/N = 2/10 = 0.200" in text and "4 requests repeat training prompts, 2 are new" in text
    # model before: all (120 + 80 + 60) / 6, seen 200 / 4, new 30
    assert rows["model before"][-3:] == ["43.33", "50.00", "30.00"]
    # model after: (138 + 80 + 54) / 6 = 45.33, seen 218 / 4 = 54.50, new 27
    assert rows["model after"][-3:] == ["45.33", "54.50", "27.00"]
    assert rows["exact-match cache"][-3:] == ["58.33", "87.50", "0.00"]
    # the cache on seen prompts, the model after on new ones: (350 + 54) / 6
    assert rows["cache + model after"][-3:] == ["67.33", "87.50", "27.00"]
    change = next(ln for ln in text.splitlines() if ln.startswith("change"))
    assert "+2.00" in change and "+4.50" in change and "-3.00" in change


def test_traffic_tables_joins_both():
    before, after = _replay([40.0, 80.0, 30.0]), _replay([46.0, 80.0, 27.0])
    text = traffic_tables(before, after, before, after)
    assert "by traffic bucket" in text and "replay of 6 future requests" in text
