"""Held-out pairwise accuracy, its Wilson interval and the calibration table (rlft.eval.preference)."""

from __future__ import annotations

import math

import pytest

from rlft.eval.preference import calibration_table, pairwise_accuracy, wilson_interval


def test_wilson_interval_hand_values():
    # 8 of 10 at z = 1.96: centre (0.8 + 0.192) / 1.384, half-width 1.96 / 1.384 * sqrt(0.016 + 0.0096)
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[0] == pytest.approx(0.0)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_accuracy_leaves_ties_out_and_counts_equal_scores_half():
    ev = pairwise_accuracy([1.0, 0.0, 0.5, 3.0], [0.0, 1.0, 0.5, 3.0], [False, False, False, True], split="test")
    assert (ev.n, ev.ties) == (3, 1)
    assert ev.accuracy == pytest.approx(1.5 / 3)
    assert (ev.ci_low, ev.ci_high) == pytest.approx(wilson_interval(1.5, 3))
    assert "50.0%" in ev.describe() and "1 ties left out" in ev.describe()


def test_calibration_is_symmetric_and_perfect_at_even_odds():
    table = calibration_table([0.0, 0.0], bins=10)
    assert len(table) == 1 and table[0].n == 4
    assert (table[0].predicted, table[0].observed) == (0.5, 0.5)
    # a confident right pair: p = sigmoid(5) in the top bin, observed 1; its mirror in the bottom bin, observed 0
    table = calibration_table([5.0], bins=4)
    assert [(b.low, b.n, b.observed) for b in table] == [(0.0, 1, 0.0), (0.75, 1, 1.0)]
    assert pairwise_accuracy([0.0], [0.0], [False], split="v").ece == 0.0
