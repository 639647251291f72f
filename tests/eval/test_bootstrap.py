"""Paired bootstrap: intervals against hand-computed cases, weights, blocking, bad input."""

import numpy as np
import pytest

from rlft.errors import RlftError
from rlft.eval import bootstrap as bs
from rlft.eval.bootstrap import BootstrapResult, describe, paired_bootstrap


def test_identical_systems_give_zero_interval_not_significant():
    scores = np.random.default_rng(1).uniform(0, 100, size=300)
    r = paired_bootstrap(scores, scores.copy())
    assert r.delta == 0.0 and r.low == 0.0 and r.high == 0.0
    assert not r.significant
    assert r.n == 300 and r.n_resamples == 1000


def test_constant_shift_gives_exact_interval_and_is_significant():
    before = np.random.default_rng(2).integers(0, 95, size=250).astype(float)
    r = paired_bootstrap(before, before + 5.0)
    assert (r.low, r.high, r.delta) == (5.0, 5.0, 5.0)
    assert r.significant
    assert r.mean_after - r.mean_before == pytest.approx(5.0)


def test_noisy_difference_is_covered_with_the_right_sign():
    rng = np.random.default_rng(3)
    before = rng.normal(50, 10, size=500)
    after = before + 1.5 + rng.normal(0, 3, size=500)
    r = paired_bootstrap(before, after, seed=7)
    assert r.low < 1.5 < r.high
    assert 0 < r.low and r.significant
    # Pairing matters: the interval is about as wide as the noise of the difference (sd 3), far
    # narrower than two independent intervals of sd-10 scores would be.
    assert r.high - r.low < 4 * 1.96 * 3 / np.sqrt(500)


def test_pure_noise_is_not_significant():
    rng = np.random.default_rng(4)
    before = rng.normal(50, 10, size=400)
    r = paired_bootstrap(before, before + rng.normal(0, 3, size=400), seed=0)
    assert r.low < 0 < r.high and not r.significant


def test_interval_coverage_is_close_to_nominal():
    # 200 independent data sets with a true shift of 1: a 90% interval should cover it ~90% of the time.
    rng = np.random.default_rng(5)
    covered = 0
    for k in range(200):
        before = rng.normal(50, 10, size=100)
        after = before + 1.0 + rng.normal(0, 4, size=100)
        r = paired_bootstrap(before, after, n_resamples=400, seed=k, confidence=0.9)
        covered += r.low <= 1.0 <= r.high
    assert 0.82 <= covered / 200 <= 0.97


def test_deterministic_under_seed():
    rng = np.random.default_rng(6)
    before, after = rng.normal(size=200), rng.normal(size=200)
    assert paired_bootstrap(before, after, seed=11) == paired_bootstrap(before, after, seed=11)
    assert paired_bootstrap(before, after, seed=11).low != paired_bootstrap(before, after, seed=12).low


def test_weighted_means_by_hand():
    r = paired_bootstrap([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], weights=[1.0, 0.0, 3.0])
    assert r.mean_before == pytest.approx((1 * 1 + 3 * 3) / 4)
    assert r.mean_after == pytest.approx((1 * 2 + 3 * 5) / 4)
    assert r.delta == pytest.approx(1.75)
    # Every resample has a weighted mean difference between the smallest and largest example diff.
    assert 0.0 <= r.low <= r.high <= 2.0


def test_unit_weights_equal_unweighted():
    rng = np.random.default_rng(8)
    before, after = rng.normal(size=150), rng.normal(size=150)
    plain = paired_bootstrap(before, after, seed=3)
    weighted = paired_bootstrap(before, after, seed=3, weights=np.ones(150))
    assert weighted.low == pytest.approx(plain.low) and weighted.high == pytest.approx(plain.high)


def test_weights_move_the_mean_towards_heavy_examples():
    before = [0.0, 0.0]
    after = [10.0, 0.0]
    assert paired_bootstrap(before, after, weights=[9, 1]).delta == pytest.approx(9.0)
    assert paired_bootstrap(before, after).delta == pytest.approx(5.0)


def test_blocked_resampling_matches_constant_shift_and_is_close(monkeypatch):
    rng = np.random.default_rng(9)
    before = rng.normal(50, 10, size=2000)
    after = before + 1.0 + rng.normal(0, 3, size=2000)
    whole = paired_bootstrap(before, after)
    monkeypatch.setattr(bs, "_BLOCK_ELEMENTS", 2000 * 7)  # 7 resamples per block
    blocked = paired_bootstrap(before, after)
    assert abs(blocked.low - whole.low) < 0.05 and abs(blocked.high - whole.high) < 0.05
    assert paired_bootstrap(np.zeros(2000), np.full(2000, 5.0)).low == 5.0


@pytest.mark.parametrize("kwargs, match", [
    ({"before": [1.0, 2.0], "after": [1.0]}, "paired"),
    ({"before": [], "after": []}, "no examples"),
    ({"before": [1.0, float("nan")], "after": [1.0, 2.0]}, "before: value 1"),
    ({"before": [1.0], "after": [2.0], "weights": [1.0, 2.0]}, "weights"),
    ({"before": [1.0], "after": [2.0], "weights": [-1.0]}, "weights"),
    ({"before": [1.0], "after": [2.0], "confidence": 1.5}, "confidence"),
])
def test_bad_input_raises_rlft_error(kwargs, match):
    with pytest.raises(RlftError, match=match):
        paired_bootstrap(**kwargs)


def _result(delta, low, high):
    return BootstrapResult(50.0, 50.0 + delta, delta, low, high, low > 0 or high < 0, 100)


def test_describe_wording():
    assert describe(_result(2.31, 0.84, 3.80), "chrF") == "chrF +2.31 (95% CI +0.84 to +3.80): improved"
    assert describe(_result(0.5, -0.2, 1.2), "chrF") == \
        "chrF +0.50 (95% CI -0.20 to +1.20): no significant change (interval contains 0)"
    assert describe(_result(-1.2, -2.0, -0.4), "BLEU") == "BLEU -1.20 (95% CI -2.00 to -0.40): worse"
    # A zero-width interval at 0 contains 0.
    assert describe(_result(0.0, 0.0, 0.0), "chrF").endswith("no significant change (interval contains 0)")
    # For an error-style metric a drop is the improvement.
    assert describe(_result(-1.2, -2.0, -0.4), "TER", higher_is_better=False).endswith(": improved")


def test_verdict_is_an_explicit_value():
    from rlft.eval.bootstrap import Verdict, verdict

    assert verdict(_result(2.31, 0.84, 3.80)) is Verdict.IMPROVED
    assert verdict(_result(-1.2, -2.0, -0.4)) is Verdict.WORSE
    assert verdict(_result(-1.2, -2.0, -0.4), higher_is_better=False) is Verdict.IMPROVED
    assert verdict(_result(0.5, -0.2, 1.2)) is Verdict.NO_CHANGE
    undefined = BootstrapResult(50.0, 50.0, 0.0, float("nan"), float("nan"), False, 1)
    assert verdict(undefined) is Verdict.NO_CHANGE and describe(undefined, "chrF").endswith("): no significant change")
