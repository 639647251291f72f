"""Comparison: the record the report's tables, banner and summary.json are built from."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.report.report_fixtures import make_evals, write_run

from rlft.eval.bootstrap import Verdict
from rlft.report import write_report
from rlft.report.compare import Comparison, compare


def _shifted(after, delta):
    return replace(after, per_example=[b + delta(i) for i, b in enumerate(make_evals()[0].per_example)])


@pytest.mark.parametrize("delta, expected", [(lambda i: 2.0, Verdict.IMPROVED), (lambda i: -2.0, Verdict.WORSE),
                                             (lambda i: 3.0 if i % 2 else -3.0, Verdict.NO_CHANGE)])
def test_the_verdict_is_a_field(delta, expected):
    before, after = make_evals()
    cmp = compare(before, _shifted(after, delta), n_resamples=200)
    assert isinstance(cmp, Comparison) and cmp.verdict is expected
    assert cmp.verdicts[0].startswith("chrF") and cmp.verdicts[1].startswith("BLEU")  # one sentence per metric
    assert cmp.text.startswith("before vs after on 12 validation examples (step 0 -> step 40)")


def test_compare_puts_after_in_the_order_of_before():
    before, after = make_evals()
    order = list(reversed(range(12)))
    shuffled = replace(after, ids=[after.ids[i] for i in order], per_example=[after.per_example[i] for i in order],
                       counts=[after.counts[i] for i in order], buckets=[after.buckets[i] for i in order],
                       second_per_example=[after.second_per_example[i] for i in order])
    cmp = compare(before, shuffled, n_resamples=200)
    assert cmp.after.ids == before.ids and cmp.after.per_example == after.per_example
    assert cmp.bootstrap == compare(before, after, n_resamples=200).bootstrap


@pytest.mark.parametrize("delta, css", [(2.0, "improved"), (-2.0, "worse"), (0.0, "")])
def test_the_report_banner_follows_the_verdict(tmp_path, delta, css):
    before, after = make_evals()
    run = write_run(tmp_path, before, _shifted(after, lambda i: delta))
    page = write_report(run, n_resamples=200).read_text(encoding="utf-8")
    assert f'<div class="verdict {css}">chrF {delta:+.2f}' in page
