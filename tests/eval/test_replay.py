"""The traffic replay: its sample, per-request scores and the exact-match cache baseline."""

import math

import pytest

from rlft.data.example import Example
from rlft.errors import RlftError
from rlft.eval import replay as R

TRAIN = [Example("a", ("A",), "t1", 6.0), Example("b", ("B",), "t2", 2.0), Example("c", ("C",), "t3", 1.0),
         Example("d", ("D",), "t4", 1.0)]  # N_log = 10, n1 = 2: P(new) = 0.2
HELD_OUT = [Example(f"new {i}", (f"N{i}",), f"h{i}") for i in range(50)] + [Example("A", ("x",), "dup")]


def test_good_turing_share():
    assert R.unseen_share([6, 2, 1, 1]) == pytest.approx(0.2)
    assert R.unseen_share([1, 1, 1]) == 1.0 and R.unseen_share([2, 3]) == 0.0
    with pytest.raises(RlftError, match="empty"):
        R.unseen_share([])


def test_sample_is_deterministic_in_the_seed():
    one, two = R.replay_sample(TRAIN, HELD_OUT, 40, seed=3), R.replay_sample(TRAIN, HELD_OUT, 40, seed=3)
    assert one == two
    other = R.replay_sample(TRAIN, HELD_OUT, 40, seed=4)
    assert (one.requests, one.examples) != (other.requests, other.examples)


def test_seen_share_and_repeat_mix_follow_the_model_on_a_large_sample():
    n = 20000
    s = R.replay_sample(TRAIN, HELD_OUT, n, seed=0)
    w = s.weights
    seen_requests = sum(k for k, seen in zip(w, s.seen) if seen)
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs((n - seen_requests) - 0.2 * n) < 4 * sd  # new requests ~ Binomial(n, n1/N)
    per_train = {ex.id: k for ex, k, seen in zip(s.examples, w, s.seen) if seen}
    # repeats in proportion to the training counts 6:2:1:1
    assert per_train["t1"] / seen_requests == pytest.approx(0.6, abs=0.02)
    assert per_train["t2"] / seen_requests == pytest.approx(0.2, abs=0.02)
    assert s.pool == 51 and s.pool_reused  # 4000 new requests > 51 pool prompts


def test_each_unique_prompt_once_and_new_prompts_distinct_until_the_pool_runs_out():
    s = R.replay_sample(TRAIN, HELD_OUT, 30, seed=1)
    keys = [(seen, ex.id) for ex, seen in zip(s.examples, s.seen)]
    assert len(keys) == len(set(keys))
    assert sum(s.weights) == 30 and len(s.requests) == 30
    assert all(k == 1 for k, seen in zip(s.weights, s.seen) if not seen)  # 30 * 0.2 << 51: no new prompt twice
    assert all(ex.id.startswith("t") for ex, seen in zip(s.examples, s.seen) if seen)


def test_a_held_out_prompt_matching_training_is_not_new():
    held = [Example("  B ", ("x",), "h1"), Example("fresh", ("y",), "h2")]
    assert R.replay_sample(TRAIN, held, 5, seed=0).pool == 2  # exact match: '  B ' is another prompt
    normalized = R.replay_sample(TRAIN, held, 200, seed=0, normalize=True)
    assert normalized.pool == 1
    assert {ex.id for ex, seen in zip(normalized.examples, normalized.seen) if not seen} == {"h2"}
    with pytest.raises(RlftError, match="every held-out prompt is in training"):
        R.replay_sample(TRAIN, [Example("a", ("A",), "x")], 50, seed=0)


def test_cache_baseline_by_hand():
    # three unique prompts: seen x3 (model 40, cache 100), seen x1 (model 80, cache 50), new x2 (model 30)
    weights, seen = [3, 1, 2], [True, True, False]
    model, cache = [40.0, 80.0, 30.0], [100.0, 50.0, None]
    m = R.per_request(model, weights, seen)
    assert (m.all, m.seen, m.new) == (pytest.approx((120 + 80 + 60) / 6), pytest.approx(50.0), pytest.approx(30.0))
    b = R.baselines(model, cache, weights, seen)
    assert (b["cache"].all, b["cache"].seen, b["cache"].new) == (pytest.approx(350 / 6), pytest.approx(87.5), 0.0)
    fb = b["cache + model"]
    assert (fb.all, fb.seen, fb.new) == (pytest.approx((300 + 50 + 60) / 6), pytest.approx(87.5), pytest.approx(30.0))
    assert R.per_request([1.0], [1], [True]).new is None


def test_evaluate_replay_decodes_each_prompt_once_with_request_counts(monkeypatch):
    import rlft.eval.evaluate as E
    from rlft.eval.result import EvalResult

    seen_calls = []

    def fake_evaluate(parts, examples, **kw):
        seen_calls.append(list(examples))
        return EvalResult.from_dict({"metric_name": "exact_match", "per_example": [0.0] * len(examples),
                                     "counts": [ex.count for ex in examples]})

    monkeypatch.setattr(E, "evaluate", fake_evaluate)
    s = R.replay_sample(TRAIN, HELD_OUT, 25, seed=2)
    out = R.evaluate_replay(None, s)
    (decoded,) = seen_calls
    assert [ex.id for ex in decoded] == [ex.id for ex in s.examples]
    assert [ex.count for ex in decoded] == [float(k) for k in s.weights]
    # the cache answers seen prompts with their training reference (exact match 100), new ones not at all
    assert out.cache_per_example == [100.0 if seen else None for seen in s.seen]
    assert out.replay["seen"] == list(s.seen) and out.replay["p_new"] == pytest.approx(0.2)
    assert list(out)[-2:] == ["cache_per_example", "replay"]  # the file's last two keys, as before
