"""Agreement statistics against hand-computed values and the published example."""

from __future__ import annotations

import math

from rlft.label.agreement import agreement_with_majority, krippendorff_alpha, summarize
from rlft.label.store import Judgement


def test_alpha_of_two_annotators_on_three_items_by_hand():
    # (a,a) (a,b) (b,b): o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6;
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (n_a n_b + n_b n_a) = 1 - 5 * 2 / 18 = 4/9
    assert math.isclose(krippendorff_alpha({1: ["a", "a"], 2: ["a", "b"], 3: ["b", "b"]}), 4 / 9)


def test_alpha_reproduces_krippendorffs_published_nominal_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", C: 4 observers, 12 units,
    # missing values; nominal alpha = 0.743 (units with one value, like 12, are left out)
    observers = ["1 2 3 3 2 1 4 1 2 . . .", "1 2 3 3 2 2 4 1 2 5 . 3",
                 ". 3 3 3 2 3 4 2 2 5 1 .", "1 2 3 3 2 4 4 1 2 5 1 ."]
    units: dict[int, list[str]] = {u: [] for u in range(12)}
    for row in observers:
        for u, v in enumerate(row.split()):
            if v != ".":
                units[u].append(v)
    assert round(krippendorff_alpha(units), 3) == 0.743


def test_alpha_is_one_for_perfect_agreement_and_undefined_without_pairs_or_variety():
    assert krippendorff_alpha({1: ["a", "a", "a"], 2: ["b", "b"]}) == 1.0
    assert krippendorff_alpha({1: ["a"], 2: ["b"]}) is None          # no unit with two values
    assert krippendorff_alpha({1: ["a", "a"], 2: ["a", "a"]}) is None  # one label only: expected disagreement 0


def test_agreement_with_the_others_majority_leaves_one_out_and_skips_ties():
    triples = [(1, "alice", "a"), (1, "bob", "a"), (1, "carol", "b"),   # alice's others: a, b: no majority
               (2, "alice", "a"), (2, "bob", "a"),
               (3, "alice", "tie")]                                      # alone: not compared
    assert agreement_with_majority(triples) == {"alice": (1, 1), "bob": (1, 1), "carol": (0, 1)}


def _j(item, who, choice, gold=None):
    return Judgement(item, str(item), who, choice, "", "p", "x", "y", gold, 0.0)


def test_summary_counts_choices_leaves_skips_out_and_scores_gold():
    js = [_j(1, "alice", "a"), _j(1, "bob", "a"), _j(2, "alice", "b", gold="b"), _j(2, "bob", "tie", gold="b"),
          _j(3, "alice", "skip"), _j(3, "bob", "both_bad")]
    s = summarize(js, ["alice", "bob", "carol"])
    rows = {r.name: r for r in s.annotators}
    assert rows["alice"].counts == {"a": 1, "b": 1, "tie": 0, "both_bad": 0, "skip": 1}
    assert rows["carol"].counts["a"] == 0 and rows["carol"].majority == (0, 0)
    assert rows["alice"].gold == (1, 1) and rows["bob"].gold == (0, 1)
    assert rows["alice"].majority == (1, 2) and s.units == 2       # item 3 has one label (the skip is out)
    # units (a,a) and (b,tie): o_aa = 2, o_b,tie = o_tie,b = 1; n = 4; n_a=2, n_b=1, n_tie=1
    # sum n_c n_k (c != k) = 16 - (4 + 1 + 1) = 10; alpha = 1 - 3 * 2 / 10 = 0.4
    assert math.isclose(s.alpha, 0.4)
