"""The before/after comparison of two evaluations, computed once: the HTML report, ``table.txt``
and ``summary.json`` all show this record."""

from __future__ import annotations

from dataclasses import dataclass

from rlft.errors import RlftError, where
from rlft.eval.bootstrap import BootstrapResult, Verdict, describe, paired_bootstrap, verdict
from rlft.eval.result import EvalResult
from rlft.report.table import Group, Row, align_pair, bucket_groups, bucket_table, comparison_rows, \
    comparison_table, display_name


@dataclass(frozen=True)
class Comparison:
    """``after`` against ``before`` on the same examples, with paired bootstrap intervals."""

    before: EvalResult
    after: EvalResult                        # in before's example order (align_pair)
    bootstrap: BootstrapResult               # of the task metric's mean per-example change
    second_bootstrap: BootstrapResult | None  # of the second metric's, when both files have its scores
    groups: list[Group]                      # the task metric per traffic bucket (bucket_groups)
    rows: list[Row]                          # the comparison table (comparison_rows)
    verdict: Verdict                         # the task metric's: what the report's banner says
    verdicts: list[str]                      # one sentence per metric (task metric, second metric)
    text: str                                # the plain-text tables, as in table.txt


def compare(before: EvalResult, after: EvalResult, *, before_src: str = "before", after_src: str = "after",
            n_resamples: int = 1000, seed: int = 0) -> Comparison:
    """Align the two results, bootstrap the change of both metrics and build every table.

    ``before_src``/``after_src`` name the files in error messages (``eval/after.json``).
    """
    before, after = align_pair(before, after, before_src=before_src, after_src=after_src)
    boot = paired_bootstrap(before.per_example, after.per_example, n_resamples=n_resamples, seed=seed)
    second = None
    sb, sa = before.second_per_example, after.second_per_example
    if sb and sa:
        try:
            second = paired_bootstrap(sb, sa, n_resamples=n_resamples, seed=seed)
        except RlftError as err:
            raise RlftError(f"{where(after_src, field='second_per_example')}: {err}") from None
    groups = bucket_groups(before, after, n_resamples=n_resamples, seed=seed)
    verdicts = [describe(boot, display_name(before.metric_name or after.metric_name))]
    if second is not None:
        verdicts.append(describe(second, display_name(before.second_metric_name)))
    text = comparison_table(before, after, bootstrap=boot, second_bootstrap=second)
    buckets_text = bucket_table(before, after, n_resamples=n_resamples, seed=seed)
    return Comparison(before, after, boot, second, groups,
                      comparison_rows(before, after, bootstrap=boot, second_bootstrap=second),
                      verdict(boot), verdicts, "\n\n".join(t for t in (text, buckets_text) if t))
