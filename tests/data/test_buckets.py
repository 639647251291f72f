"""Head/torso/tail buckets, per-bucket scores and the tail guard."""

import math

import pytest
import torch

from rlft.data.buckets import TailGuard, apply_tail_boost, assign_buckets, stratified_scores
from rlft.errors import RlftError
from tests.data.traffic_fixtures import assert_close


# ---------------------------------------------------------------------------- buckets and scores


def test_buckets_by_hand_with_a_tie_crossing_the_head_boundary():
    counts = [5, 20, 40, 3, 20, 8, 3, 1]  # total 100; sorted 40, 20, 20, 8, 5, 3, 3, 1
    # 40 and the first 20 reach 60 >= 50; the second 20 (a tie, later in input order) starts the torso.
    assert assign_buckets(counts, 0.5, 0.35) == ["tail", "head", "head", "tail", "torso", "torso", "tail", "tail"]
    # Without the tie, the same prefix rule: 40 + 19 reach the head, 18 falls in the torso.
    assert assign_buckets([5, 19, 40, 3, 18, 8, 3, 4], 0.5, 0.35)[4] == "torso"


def test_tie_groups_are_cut_in_input_order():
    assert assign_buckets([50, 10, 10, 10, 10, 10]) == ["head"] + ["torso"] * 3 + ["tail"] * 2
    assert assign_buckets([1, 1, 1, 1]) == ["head", "head", "torso", "torso"]
    assert assign_buckets([0.1, 0.2, 0.7], 0.7, 0.2) == ["tail", "torso", "head"]  # 0.7 of 1.0 is reached
    assert assign_buckets([]) == []
    with pytest.raises(RlftError, match="head_share"):
        assign_buckets([1, 2], 0.8, 0.3)


def test_stratified_scores_by_hand():
    scores, counts = [0.9, 0.5, 0.4, 0.1], [10, 5, 4, 1]
    out = stratified_scores(scores, counts, ["head", "torso", "torso", "tail"])
    assert out["traffic_weighted"] == pytest.approx((9 + 2.5 + 1.6 + 0.1) / 20)
    assert out["unweighted"] == pytest.approx(0.475)
    assert (out["head"], out["torso"], out["tail"]) == (pytest.approx(0.9), pytest.approx(0.45), pytest.approx(0.1))
    assert (out["n_head"], out["n_torso"], out["n_tail"]) == (1, 2, 1)
    empty = stratified_scores([0.5, 0.7], [3, 1], ["head", "head"])
    assert empty["torso"] is None and empty["tail"] is None and empty["n_tail"] == 0
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
