"""The before/after numbers of a run, and their plain-text tables.

Inputs are the ``EvalResult`` records of ``run_dir/eval/<tag>.json``. Everything here is computed once as typed
rows (``Row``, ``Group``) so that the console table, the HTML report and ``summary.json`` show
the same numbers. Plain text on purpose: it reads the same in a terminal, a log file and CI.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

from rlft.errors import RlftError, where
from rlft.eval.bootstrap import BootstrapResult, describe, paired_bootstrap
from rlft.eval.result import EvalResult

_DISPLAY = {"chrf": "chrF", "bleu": "BLEU", "rouge_l": "ROUGE-L", "rougel": "ROUGE-L", "rouge1": "ROUGE-1",
            "rouge2": "ROUGE-2", "ter": "TER", "exact_match": "exact match", "meteor": "METEOR"}
BUCKET_ORDER = ("head", "torso", "tail", "seen", "unseen")  # rlft.data.buckets.LABELS
_PER_EXAMPLE_FIELDS = ("per_example", "second_per_example", "ids", "counts", "buckets", "outputs", "train_counts",
                       "cache_per_example")


def display_name(metric_name: str | None) -> str:
    """``chrf`` -> ``chrF``; unknown names are shown as they are."""
    if not metric_name:
        return "metric"
    return _DISPLAY.get(str(metric_name).lower(), str(metric_name))


@dataclass(frozen=True)
class Row:
    """One line of the comparison: a quantity before and after, with an optional CI of the change."""

    key: str  # name in summary.json
    label: str  # name shown to people
    before: float | None
    after: float | None
    digits: int = 2
    ci: BootstrapResult | None = None

    @property
    def change(self) -> float | None:
        if _missing(self.before) or _missing(self.after):
            return None
        return self.after - self.before


@dataclass(frozen=True)
class Group:
    """The metric on one slice of the eval set (a traffic bucket, or all examples weighted or not)."""

    key: str  # 'head', 'torso', 'tail', 'traffic_weighted', 'unweighted'
    label: str
    result: BootstrapResult


def _or(value: Any, default: Any) -> Any:
    """``value``, or ``default`` when it is None (a field the eval file lacks)."""
    return default if value is None else value


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or _missing(x):
        return None
    return float(x)


def fmt(x: float | None, digits: int = 2, *, sign: bool = False) -> str:
    """A number for a table cell; '-' when it is missing."""
    if _missing(x):
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_ci(ci: BootstrapResult | None, digits: int = 2) -> str:
    if ci is None:
        return ""
    mark = " *" if ci.significant else ""
    return f"[{ci.low:+.{digits}f}, {ci.high:+.{digits}f}]{mark}"


def align_pair(before: EvalResult, after: EvalResult, *, before_src: str = "before",
               after_src: str = "after") -> tuple[EvalResult, EvalResult]:
    """Check that two eval results score the same examples, and put ``after`` in ``before``'s order.

    The sources name the files in error messages, e.g. ``eval/after.json``.
    """
    for data, src in ((before, before_src), (after, after_src)):
        scores = data.per_example
        if not isinstance(scores, list) or not scores:
            raise RlftError(f"{where(src, field='per_example')}: missing or empty list of per-example scores")
        for i, s in enumerate(scores):
            if _num(s) is None:
                raise RlftError(f"{where(src, field='per_example')}: item {i} is not a finite number ({s!r})")
        for key in _PER_EXAMPLE_FIELDS[1:]:
            value = getattr(data, key)
            if value is not None and len(value) != len(scores):
                raise RlftError(f"{where(src, field=key)}: {len(value)} items for {len(scores)} per-example scores")
    ids_b, ids_a = before.ids, after.ids
    if ids_b is not None and ids_a is not None and list(ids_b) != list(ids_a):
        if len(set(map(str, ids_b))) != len(ids_b) or sorted(map(str, ids_b)) != sorted(map(str, ids_a)):
            missing = len(set(map(str, ids_b)) ^ set(map(str, ids_a)))
            raise RlftError(f"{where(after_src, field='ids')}: not the same examples as {before_src} "
                            f"({missing} ids in only one of them)")
        pos = {str(i): k for k, i in enumerate(ids_a)}
        order = [pos[str(i)] for i in ids_b]
        after = dataclasses.replace(after, **{key: [getattr(after, key)[k] for k in order]
                                              for key in _PER_EXAMPLE_FIELDS if getattr(after, key) is not None})
    elif len(before.per_example) != len(after.per_example):
        raise RlftError(f"{where(after_src, field='per_example')}: {len(after.per_example)} scores but "
                        f"{before_src} has {len(before.per_example)}; they must be the same examples")
    return before, after


def comparison_rows(before: EvalResult, after: EvalResult, *, bootstrap: BootstrapResult | None,
                    second_bootstrap: BootstrapResult | None = None) -> list[Row]:
    """Metric (with the CI of its change), second metric, reward, KL, mean length, truncation rate."""
    rows: list[Row] = []
    for key, ci in (("metric", bootstrap), ("second_metric", second_bootstrap)):
        name = getattr(before, f"{key}_name") or getattr(after, f"{key}_name")
        b, a = _num(getattr(before, key)), _num(getattr(after, key))
        if key != "metric" and name is None and b is None and a is None:
            continue
        label = display_name(name)
        # The CI is of the mean per-example score. When the file's metric is another statistic
        # (e.g. a corpus score) the CI goes on its own row so it never decorates the wrong number.
        same = ci is not None and b is not None and a is not None and \
            abs(ci.mean_before - b) < 1e-6 and abs(ci.mean_after - a) < 1e-6
        rows.append(Row(key, label, b, a, 2, ci if same else None))
        if ci is not None and not same:
            rows.append(Row(f"{key}_mean", f"{label} (mean per example)", ci.mean_before, ci.mean_after, 2, ci))
        if key == "metric" and (before.corpus_metric is not None or after.corpus_metric is not None):
            rows.append(Row("corpus_metric", f"{label} (corpus)", _num(before.corpus_metric),
                            _num(after.corpus_metric), 2))
    kl_n, n = after.kl_n, after.n
    kl_label = f"KL to reference (first {kl_n} rows)" if kl_n and n and kl_n < n else "KL to reference"
    for key, label, digits in (("reward", "reward", 3), ("kl", kl_label, 4),
                               ("length", "mean length (tokens)", 1), ("truncation_rate", "truncation rate", 3)):
        rows.append(Row(key, label, _num(getattr(before, key)), _num(getattr(after, key)), digits))
    return rows


def _render(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[c]) for r in [header, *body]) for c in range(len(header))]
    line = lambda r: "  ".join(  # noqa: E731 - first column left-aligned, numbers right-aligned
        (cell.ljust(w) if c == 0 else cell.rjust(w)) for c, (cell, w) in enumerate(zip(r, widths))).rstrip()
    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _clip(text: Any, limit: int = 120) -> str:
    flat = " ".join(str(text if text is not None else "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def pick_examples(before: EvalResult, after: EvalResult, k: int = 3) -> list[dict]:
    """Up to ``k`` examples shown side by side: the largest gain, the largest drop, a typical one.

    Only examples with a stored sample (prompt, reference, output) in both files qualify.
    Showing the largest drop next to the largest gain keeps the examples honest.
    """
    samples_b = {str(s.get("id")): s for s in before.samples or []}
    samples_a = {str(s.get("id")): s for s in after.samples or []}
    common = [i for i in samples_b if i in samples_a]
    score_b = dict(zip(map(str, before.ids or []), before.per_example or []))
    score_a = dict(zip(map(str, after.ids or []), after.per_example or []))
    scored = [i for i in common if _num(score_b.get(i)) is not None and _num(score_a.get(i)) is not None]
    chosen: list[tuple[str, str]] = []
    if len(common) > k and len(scored) >= k:
        by_gain = sorted(scored, key=lambda i: score_a[i] - score_b[i])
        for label, i in (("largest gain", by_gain[-1]), ("largest drop", by_gain[0]),
                         ("typical", by_gain[len(by_gain) // 2])):
            change = score_a[i] - score_b[i]
            if label != "typical" and (change == 0 or (change > 0) != (label == "largest gain")):
                # e.g. nothing got worse: the "largest drop" is really the smallest change
                label = "unchanged" if change == 0 else ("smallest drop" if change < 0 else "smallest gain")
            if i not in [c for _, c in chosen]:
                chosen.append((label, i))
        chosen = chosen[:k]
    else:
        chosen = [("", i) for i in common[:k]]
    out = []
    for label, i in chosen:
        sb, sa = samples_b[i], samples_a[i]
        out.append({"id": i, "label": label, "prompt": sb.get("prompt", ""), "reference": sb.get("reference", ""),
                    "before": sb.get("output", ""), "after": sa.get("output", ""),
                    "score_before": _num(score_b.get(i)), "score_after": _num(score_a.get(i))})
    return out


def comparison_table(before: EvalResult, after: EvalResult, *, bootstrap: BootstrapResult | None,
                     second_bootstrap: BootstrapResult | None = None) -> str:
    """The before/after table, the verdict line and three example outputs, as plain text."""
    rows = comparison_rows(before, after, bootstrap=bootstrap, second_bootstrap=second_bootstrap)
    level = f"{(bootstrap or second_bootstrap).confidence * 100:.4g}%" if (bootstrap or second_bootstrap) else "95%"
    body = [[r.label, fmt(r.before, r.digits), fmt(r.after, r.digits), fmt(r.change, r.digits, sign=True),
             fmt_ci(r.ci, r.digits)] for r in rows]
    steps = f"step {_or(before.step, '?')} -> step {_or(after.step, '?')}"
    n = len(before.per_example or []) or (bootstrap.n if bootstrap else "?")
    parts = [f"{_or(before.tag, 'before')} vs {_or(after.tag, 'after')} on {n} "
             f"{after.split or before.split or 'eval'} examples ({steps})",
             _render(["", "before", "after", "change", f"{level} CI of change"], body)]
    notes = []
    if bootstrap is not None:
        notes.append(describe(bootstrap, display_name(before.metric_name or after.metric_name)))
    if second_bootstrap is not None:
        notes.append(describe(second_bootstrap, display_name(before.second_metric_name or after.second_metric_name)))
    if bootstrap is not None:
        notes.append(f"CI: paired bootstrap of the mean per-example difference ({bootstrap.n_resamples} "
                     f"resamples, n={bootstrap.n}); * = interval excludes 0.")
    parts.append("\n".join(notes))
    examples = pick_examples(before, after)
    if examples:
        lines = ["Examples:"]
        for j, ex in enumerate(examples, 1):
            score = ""
            if ex["score_before"] is not None and ex["score_after"] is not None:
                score = f"  score {ex['score_before']:.1f} -> {ex['score_after']:.1f}"
            label = f" ({ex['label']})" if ex["label"] else ""
            lines.append(f"[{j}] id {ex['id']}{score}{label}")
            for field in ("prompt", "reference", "before", "after"):
                lines.append(f"    {field + ':':<11}{_clip(ex[field])}")
        parts.append("\n".join(lines))
    return "\n\n".join(p for p in parts if p)


def bucket_groups(before: EvalResult, after: EvalResult, *, n_resamples: int = 1000, seed: int = 0,
                  confidence: float = 0.95) -> list[Group]:
    """The metric per traffic bucket, traffic-weighted and unweighted, each with a paired CI.

    Buckets are unweighted means within the bucket (each unique prompt counts once); the
    traffic-weighted row weights every prompt by its count, which is what users experience.
    Only slices that differ are kept: no bucket rows when every prompt has one label (e.g. a
    held-out split, all 'unseen' in training), no traffic-weighted row when all counts are equal.
    """
    before, after = align_pair(before, after)
    b, a = before.per_example, after.per_example
    counts = before.counts if before.counts is not None else after.counts
    buckets = before.buckets if before.buckets is not None else after.buckets
    kw = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    groups: list[Group] = []
    if buckets is not None and len({str(x) for x in buckets}) > 1:
        names = list(BUCKET_ORDER) + sorted({str(x) for x in buckets} - set(BUCKET_ORDER))
        for name in names:
            idx = [i for i, x in enumerate(buckets) if str(x) == name]
            if idx:
                result = paired_bootstrap([b[i] for i in idx], [a[i] for i in idx], **kw)
                groups.append(Group(name, name, result))
    if counts is not None and len(set(counts)) > 1:
        groups.append(Group("traffic_weighted", "traffic-weighted", paired_bootstrap(b, a, weights=counts, **kw)))
    groups.append(Group("unweighted", "unweighted", paired_bootstrap(b, a, **kw)))
    return groups


def bucket_table(before: EvalResult, after: EvalResult, *, n_resamples: int = 1000, seed: int = 0) -> str:
    """Metric per traffic bucket (head, torso, tail, traffic-weighted, unweighted) as plain text.

    Buckets come from the training counts (``bucket_rule``, see ``rlft.data.buckets``). Returns ''
    when the eval files carry neither buckets nor traffic counts, and one line saying why when
    their slices do not differ (no table of one bucket).
    """
    groups = bucket_groups(before, after, n_resamples=n_resamples, seed=seed)
    rule = before.bucket_rule or after.bucket_rule
    if len(groups) <= 1:
        return _no_bucket_note(before if before.buckets is not None else after, rule)
    name = display_name(before.metric_name or after.metric_name)
    body = [[g.label, str(g.result.n), fmt(g.result.mean_before), fmt(g.result.mean_after),
             fmt(g.result.delta, sign=True), fmt_ci(g.result)] for g in groups]
    level = f"{groups[0].result.confidence * 100:.4g}%"
    title = f"{name} by traffic bucket (mean per example; * = {level} CI excludes 0)"
    text = title + "\n" + _render(["bucket", "n", "before", "after", "change", f"{level} CI of change"], body)
    return text + (f"\nBuckets by training count: {rule}." if rule else "")


def _no_bucket_note(data: EvalResult, rule: str | None) -> str:
    """Why there is no bucket table: every evaluated prompt has one label and one count."""
    labels, counts = data.buckets, data.counts
    if labels is None and counts is None:
        return ""
    n = len(data.per_example or [])
    why = []
    if labels is not None and labels:
        label = str(labels[0])
        why.append("none appears in the training log: all 'unseen'" if label == "unseen" else
                   f"all are in the training bucket '{label}'")
    if counts is not None and counts:
        why.append(f"all carry count {counts[0]:g}")
    text = f"No traffic-bucket table: the {n} evaluated prompts do not differ by traffic ({'; '.join(why)})."
    return text + (f" Training buckets: {rule}." if rule else "")
