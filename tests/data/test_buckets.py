"""Head/torso/tail buckets, per-bucket scores and the tail guard."""

import math

import pytest
import torch

from rlft.data.buckets import (TailGuard, apply_tail_boost, assign_buckets, bucket_examples, count_buckets,
                               stratified_scores)
from rlft.data.example import Example
from rlft.errors import RlftError
from tests.data.traffic_fixtures import assert_close


# ---------------------------------------------------------------------------- buckets and scores


def test_buckets_by_hand_keep_a_tie_whole():
    counts = [5, 20, 40, 3, 20, 8, 3, 1]  # total 100; levels 40 | 20 x2 | 8 | 5 | 3 x2 | 1
    # cumulative traffic by level: .40 .80 .88 .93 .99 1.0. Head: .40 is nearer .5 than .80;
    # torso: .88 is nearest .85; both 20s land together, as do both 3s.
    assert assign_buckets(counts, 0.5, 0.35) == ["tail", "torso", "head", "tail", "torso", "torso", "tail", "tail"]
    b = count_buckets(counts, 0.5, 0.35)
    assert (b.head_min, b.torso_min, b.levels, b.sizes) == (40, 8, 6, (1, 3, 4))
    assert b.shares == pytest.approx((0.40, 0.48, 0.12))
    # a tie crossing the head boundary: 60 + 2 x 15 = 90 of 100 is nearer .5 as .60 (head = 60 alone)
    assert assign_buckets([15, 60, 15, 5, 5]) == ["torso", "head", "torso", "tail", "tail"]


def test_ties_are_never_split_and_head_and_tail_are_never_empty():
    # The old rule cut the tie of 10s by input order (3 torso, 2 tail); now they share one bucket.
    assert assign_buckets([50, 10, 10, 10, 10, 10]) == ["head"] + ["tail"] * 5
    # translation-like: 96% of prompts at count 1; the head is every repeat, the tail every singleton
    counts = [1] * 96 + [2, 2, 3, 5]
    labels = assign_buckets(counts)
    assert set(labels[:96]) == {"tail"} and set(labels[96:]) == {"head"}
    assert count_buckets(counts).sizes == (4, 0, 96)
    assert assign_buckets([0.1, 0.2, 0.7], 0.7, 0.2) == ["tail", "torso", "head"]
    assert assign_buckets([]) == []
    with pytest.raises(RlftError, match="head_share"):
        assign_buckets([1, 2], 0.8, 0.3)


def test_equal_counts_collapse_to_seen_and_say_so():
    b = count_buckets([3, 3, 3])
    assert b.flat and assign_buckets([3, 3, 3]) == ["seen"] * 3
    assert "no frequency signal" in b.describe()
    assert b.label(0) == "unseen" and b.label(None) == "unseen"


def test_eval_prompts_take_their_training_bucket_or_unseen():
    train = [Example("Error 404 at line 12", ("r",), "a", 9.0), Example("hello", ("r",), "b", 1.0),
             Example("bye", ("r",), "c", 1.0)]
    evals = [Example("hello", ("x",), "e1", 5.0), Example("error 500 at  line 3", ("x",), "e2"),
             Example("new one", ("x",), "e3")]
    _, counts, labels = bucket_examples(evals, train)
    assert (counts, labels) == ([1.0, 0.0, 0.0], ["tail", "unseen", "unseen"])  # exact match only
    rule, counts, labels = bucket_examples(evals, train, normalize=True)  # 'error 0 at line 0' matches
    assert (counts, labels) == ([1.0, 9.0, 0.0], ["tail", "head", "unseen"])
    assert rule.describe().startswith("head: count >= 9 (1 prompts, 81.8% of training traffic)")


def test_stratified_scores_by_hand():
    scores, counts = [0.9, 0.5, 0.4, 0.1], [10, 5, 4, 1]
    out = stratified_scores(scores, counts, ["head", "torso", "torso", "tail"])
    assert out["traffic_weighted"] == pytest.approx((9 + 2.5 + 1.6 + 0.1) / 20)
    assert out["unweighted"] == pytest.approx(0.475)
    assert (out["head"], out["torso"], out["tail"]) == (pytest.approx(0.9), pytest.approx(0.45), pytest.approx(0.1))
    assert (out["n_head"], out["n_torso"], out["n_tail"]) == (1, 2, 1)
    empty = stratified_scores([0.5, 0.7], [3, 1], ["head", "head"])
    assert empty["torso"] is None and empty["tail"] is None and empty["n_tail"] == 0 and empty["rare"] is None
    mixed = stratified_scores([0.8, 0.2, 0.6], [1, 1, 1], ["head", "tail", "unseen"])
    assert (mixed["unseen"], mixed["n_unseen"], mixed["rare"]) == (pytest.approx(0.6), 1, pytest.approx(0.4))
    with pytest.raises(RlftError, match="unknown buckets"):
        stratified_scores([1.0], [1], ["middle"])


# ---------------------------------------------------------------------------- tail guard


def test_tail_guard_triggers_holds_and_releases():
    guard = TailGuard(1.0, 2.0, metric="rouge_l")
    assert guard.update(43.0).message is None  # the start
    quiet = guard.update(42.1)  # within delta
    assert (quiet.active, quiet.multiplier, quiet.message) == (False, 1.0, None)
    hit = guard.update(41.2)
    assert (hit.active, hit.multiplier) == (True, 2.0)
    assert hit.message == "tail guard: tail rouge_l 41.2 < start 43.0 - 1.0; tail weight x2"
    assert guard.update(None).active  # an empty tail carries no news
    assert guard.update(41.9).active
    released = guard.update(42.0)
    assert (released.active, released.multiplier) == (False, 1.0) and "released" in released.message
    assert guard.update(42.5).message is None


def test_tail_guard_resumes_and_can_be_disabled():
    guard = TailGuard(0.5, 3.0)
    guard.update(10.0)
    guard.update(9.0)
    fresh = TailGuard(0.5, 3.0)
    fresh.load_state_dict(guard.state_dict())
    assert fresh.update(9.4).multiplier == 3.0 and fresh.start == 10.0
    off = TailGuard(-1.0, 2.0)
    assert all(off.update(m).multiplier == 1.0 for m in (50.0, 10.0, 0.0))
    with pytest.raises(RlftError, match="tail_guard_boost"):
        TailGuard(1.0, 0.5)


def test_apply_tail_boost_renormalizes():
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    boosted = apply_tail_boost(p, torch.tensor([False, True, True]), 2.0)
    assert_close(boosted, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert_close(apply_tail_boost(p, torch.tensor([False, True, True]), 1.0), p)
    assert math.isclose(float(apply_tail_boost(p, torch.tensor([True, False, False]), 3.0)[0]), 0.75)
