from dataclasses import replace

import pytest
from tests.report.report_fixtures import BUCKETS, COUNTS, SHIFT, make_evals

from rlft.errors import RlftError
from rlft.eval.bootstrap import paired_bootstrap
from rlft.report import bucket_table, comparison_table
from rlft.report.table import align_pair, bucket_groups, comparison_rows, pick_examples


@pytest.fixture
def evals():
    return make_evals()


def _boots(before, after):
    return (paired_bootstrap(before["per_example"], after["per_example"]),
            paired_bootstrap(before["second_per_example"], after["second_per_example"]))


def test_comparison_table_shows_the_numbers(evals):
    before, after = evals
    boot, second = _boots(before, after)
    text = comparison_table(before, after, bootstrap=boot, second_bootstrap=second)
    lines = text.splitlines()
    chrf = next(line for line in lines if line.startswith("chrF "))
    assert f"{before['metric']:.2f}" in chrf and f"{after['metric']:.2f}" in chrf
    assert f"{boot.delta:+.2f}" in chrf and f"[{boot.low:+.2f}, {boot.high:+.2f}]" in chrf
    bleu = next(line for line in lines if line.startswith("BLEU "))
    assert "+1.00" in bleu and "[+1.00, +1.00] *" in bleu  # constant +1 shift: exact, significant
    reward = next(line for line in lines if line.startswith("reward"))
    assert reward.split()[1:4] == ["0.250", "0.500", "+0.250"]
    kl = next(line for line in lines if line.startswith("KL"))
    assert kl.split()[-3:] == ["-", "0.0123", "-"]  # no KL before: no change either
    assert next(line for line in lines if line.startswith("truncation")).split()[-3:] == ["0.250", "0.000", "-0.250"]
    assert "BLEU +1.00 (95% CI +1.00 to +1.00): improved" in text
    assert "on 12 validation examples (step 0 -> step 40)" in text


def test_examples_are_truncated_and_paired(evals):
    before, after = evals
    text = comparison_table(before, after, bootstrap=_boots(before, after)[0])
    prompt_lines = [line for line in text.splitlines() if line.strip().startswith("prompt:")]
    assert len(prompt_lines) == 3
    assert all(line.endswith("...") and len(line.strip()) <= 11 + 120 for line in prompt_lines)
    assert "old output" in text and "new output" in text


def test_pick_examples_shows_largest_gain_and_drop(evals):
    before, after = evals
    picked = pick_examples(before, after)
    labels = {p["label"]: p for p in picked}
    # Samples exist for ex0..ex4: ex0-2 are head (+10), ex3-4 torso (0).
    assert labels["largest gain"]["score_after"] - labels["largest gain"]["score_before"] == 10.0
    # Nothing got worse, so the example at the bottom is labelled for what it is.
    assert "largest drop" not in labels
    assert labels["unchanged"]["score_after"] == labels["unchanged"]["score_before"]
    after = replace(after, per_example=[s - 20.0 if i == 4 else s for i, s in enumerate(after["per_example"])])
    drop = next(p for p in pick_examples(before, after) if p["label"] == "largest drop")
    assert drop["id"] == "ex4" and drop["score_after"] - drop["score_before"] == -20.0
    assert len({p["id"] for p in picked}) == 3


def test_ci_gets_its_own_row_when_metric_is_not_the_per_example_mean(evals):
    before, after = evals
    before, after = replace(before, metric=41.0, corpus_metric=40.0), replace(after, metric=44.0, corpus_metric=43.5)
    rows = {r.key: r for r in comparison_rows(before, after, bootstrap=_boots(before, after)[0])}
    assert rows["metric"].ci is None and rows["metric"].change == 3.0
    assert rows["metric_mean"].ci is not None and rows["metric_mean"].label == "chrF (mean per example)"
    assert rows["corpus_metric"].change == 3.5


def test_bucket_table_per_bucket_numbers(evals):
    before, after = evals
    groups = {g.key: g.result for g in bucket_groups(before, after)}
    assert [k for k in groups] == ["head", "torso", "tail", "traffic_weighted", "unweighted"]
    for name, shift in SHIFT.items():
        r = groups[name]
        assert (r.delta, r.low, r.high) == (shift, shift, shift)
        assert r.n == BUCKETS.count(name)
    want_tw = sum(c * SHIFT[b] for c, b in zip(COUNTS, BUCKETS)) / sum(COUNTS)
    assert groups["traffic_weighted"].delta == pytest.approx(want_tw)
    text = bucket_table(before, after)
    head = next(line for line in text.splitlines() if line.startswith("head"))
    assert "+10.00" in head and "[+10.00, +10.00] *" in head
    torso = next(line for line in text.splitlines() if line.startswith("torso"))
    assert "[+0.00, +0.00]" in torso and "*" not in torso


def test_bucket_table_empty_without_buckets_or_counts(evals):
    before, after = evals
    strip = lambda d: replace(d, buckets=None, counts=None)  # noqa: E731
    assert bucket_table(strip(before), strip(after)) == ""


def test_align_pair_reorders_by_id_and_rejects_other_examples(evals):
    before, after = evals
    order = list(reversed(range(12)))
    shuffled = replace(after, ids=[after.ids[i] for i in order], per_example=[after.per_example[i] for i in order])
    _, aligned = align_pair(before, shuffled)
    assert aligned.per_example == after.per_example and aligned.ids == after.ids
    other = replace(after, ids=[f"zz{i}" for i in range(12)])
    with pytest.raises(RlftError, match=r"eval/after.json: field 'ids': not the same examples"):
        align_pair(before, other, after_src="eval/after.json")
    with pytest.raises(RlftError, match=r"field 'per_example'"):
        align_pair(before, replace(after, per_example=[1.0, None] + after.per_example[2:]))
