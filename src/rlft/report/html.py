"""The run report: one self-contained HTML file built from a run directory's outputs.

Reads only files (``metrics.jsonl``, ``eval/<tag>.json``), never training objects, so it works
on a finished run, a run still in progress, or a run copied from another machine. Writes into
``run_dir/report/``: ``report.html`` (PNGs inlined as base64 data URIs, inline CSS, no external
assets, so the file can be mailed or attached to CI as is), the PNGs, ``summary.json`` (the
numbers of the tables) and ``table.txt`` (the plain-text tables).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import os
from pathlib import Path
from typing import Any

from rlft.atomic import atomic_write
from rlft.errors import RlftError
from rlft.eval.bootstrap import Verdict
from rlft.eval.result import read_eval
from rlft.report import monitors, plots
from rlft.report.preference import plot_calibration, read_rm_evals
from rlft.report.compare import Comparison, compare
from rlft.report.table import display_name, fmt, fmt_ci, pick_examples
from rlft.rundir import METRICS_FILE, eval_path, jsonable, read_metrics

_SHOWN_CHARS = 2000  # per text field in the HTML examples; the full text stays in eval/<tag>.json

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1a202c;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #e2e8f0}
.meta{color:#4a5568;font-size:.9em}
.verdict{padding:.6em 1em;border-radius:6px;background:#edf2f7;margin:1em 0;font-weight:600}
.verdict.improved{background:#e6f4ea}.verdict.worse{background:#fdecea}
table{border-collapse:collapse;font-size:.92em;margin:.5em 0}
th,td{padding:.3em .8em;border-bottom:1px solid #e2e8f0;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f7fafc}
td.sig{font-weight:600}
img{max-width:100%;height:auto;border:1px solid #e2e8f0;border-radius:4px}
.ex{border:1px solid #e2e8f0;border-radius:6px;padding:.6em 1em;margin:.8em 0}
.ex pre{white-space:pre-wrap;word-break:break-word;background:#f7fafc;padding:.4em .6em;margin:.2em 0 .6em;
font-size:.88em;border-radius:4px}
.ex .k{font-size:.8em;color:#4a5568;text-transform:uppercase;letter-spacing:.04em}
.note{color:#4a5568;font-size:.85em}
"""


def _summary(run_dir: Path, metrics: list[dict], cmp: Comparison | None, pngs: list[Path]) -> dict:
    train = [m for m in metrics if m.get("split") == "train"]
    evals = [m for m in metrics if m.get("split") not in (None, "train")]
    steps = [m["step"] for m in train if isinstance(m.get("step"), (int, float))]
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "training": {"train_lines": len(train), "last_step": max(steps, default=None),
                     "eval_lines": len(evals), "last_eval": evals[-1] if evals else None},
        "plots": [p.name for p in pngs],
        "monitors": {r.key: dataclasses.asdict(r) for r in monitors.monitor_rows(metrics)},
        "divergence_steps": monitors.divergence_steps(metrics),
    }
    if cmp is not None:
        b, a = cmp.before, cmp.after
        out.update({
            "before_tag": b.tag, "after_tag": a.tag, "before_step": b.step,
            "after_step": a.step, "split": a.split, "metric_name": b.metric_name,
            "n": len(b.per_example), "verdict": cmp.verdicts,
            "rows": {r.key: {"label": r.label, "before": r.before, "after": r.after, "change": r.change,
                             "ci": r.ci} for r in cmp.rows},
            "bootstrap": cmp.bootstrap, "second_bootstrap": cmp.second_bootstrap,
            "buckets": {g.key: g.result for g in cmp.groups},
        })
    return jsonable(out)


def write_report(run_dir: str | os.PathLike, *, before_tag: str = "before", after_tag: str = "after",
                 out: str | os.PathLike | None = None, n_resamples: int = 1000, seed: int = 0) -> Path:
    """Write ``<out or run_dir/report>/report.html`` and return its path.

    With both ``eval/<before_tag>.json`` and ``eval/<after_tag>.json`` the report holds the
    comparison table with bootstrap intervals, the bucket table and example outputs; without
    them, the training curves only. Every file is written atomically.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out) if out is not None else run_dir / "report"
    metrics_path = run_dir / METRICS_FILE
    before_path, after_path = eval_path(run_dir, before_tag), eval_path(run_dir, after_tag)
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
    cmp = None
    if before_path.is_file() and after_path.is_file():
        cmp = compare(read_eval(before_path), read_eval(after_path), before_src=str(before_path),
                      after_src=str(after_path), n_resamples=n_resamples, seed=seed)
    rm_evals = read_rm_evals(run_dir)  # a reward-model run (rlft rm train)
    if cmp is None and not metrics:
        raise RlftError(f"{run_dir}: nothing to report: no metrics.jsonl lines and no "
                        f"eval/{before_tag}.json + eval/{after_tag}.json pair")

    pngs: list[Path] = []
    notes: list[str] = []
    if plots.matplotlib_available():
        if cmp is not None:
            pngs.append(plots.plot_before_after(cmp.before, cmp.after, out_dir / "before_after.png",
                                                groups=cmp.groups))
        if metrics:
            named = cmp.before if cmp is not None else (read_eval(after_path) if after_path.is_file() else None)
            pngs.append(plots.plot_curves(metrics, out_dir / "curves.png",
                                          metric_name=display_name(named.metric_name if named is not None else None)))
            keys = monitors.monitor_keys(metrics)
            if keys:
                pngs.append(plots.plot_monitors(metrics, keys, out_dir / "monitors.png"))
        if rm_evals:
            pngs.append(plot_calibration(rm_evals, out_dir / "calibration.png"))
    else:
        notes.append("matplotlib is not installed, so this report has no plots (pip install 'rlft[report]').")
    if cmp is None and not rm_evals:
        notes.append(f"No eval/{before_tag}.json + eval/{after_tag}.json pair in the run directory: "
                     "training curves only.")

    summary = _summary(run_dir, metrics, cmp, pngs)
    if rm_evals:
        summary["reward_model"] = rm_evals
    atomic_write(out_dir / "summary.json", json.dumps(summary, indent=1, allow_nan=False, ensure_ascii=False))
    if cmp is not None:
        atomic_write(out_dir / "table.txt", cmp.text + "\n")
    page = _page(run_dir, summary, cmp, pngs, notes)
    return atomic_write(out_dir / "report.html", page)


# --- HTML -----------------------------------------------------------------------------------

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _table(header: list[str], body: list[list[tuple[str, str]]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f'<td class="{c}">{_e(v)}</td>' if c else f"<td>{_e(v)}</td>"
                                    for v, c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rm_html(evals: list[dict]) -> str:
    """Pairwise accuracy with its Wilson interval per split, then each split's calibration table."""
    out = [_table(["split", "pairs", "ties left out", "pairwise accuracy", "95% CI (Wilson)", "ECE"],
                  [[(e["split"], ""), (str(e["n"]), ""), (str(e["ties"]), ""), (_pct(e["accuracy"]), "sig"),
                    (f"{_pct(e['ci_low'])} to {_pct(e['ci_high'])}", ""), (fmt(e["ece"], 3), "")] for e in evals])]
    for e in evals:
        out.append(f'<p class="note">{_e(e["split"])}: calibration of P(chosen wins) = sigmoid(r_c - r_j), '
                   "each pair counted both ways</p>")
        out.append(_table(["P(chosen wins)", "n", "predicted", "observed"],
                          [[(f"{b['low']:.1f} - {b['high']:.1f}", ""), (str(b["n"]), ""),
                            (f"{b['predicted']:.3f}", ""), (f"{b['observed']:.3f}", "")]
                           for b in e["calibration"]]))
    return "\n".join(out)


def _comparison_html(cmp: Comparison) -> str:
    boot, rows = cmp.bootstrap, cmp.rows
    level = f"{boot.confidence * 100:.4g}%"
    body = [[(r.label, ""), (fmt(r.before, r.digits), ""), (fmt(r.after, r.digits), ""),
             (fmt(r.change, r.digits, sign=True), ""),
             (fmt_ci(r.ci, r.digits), "sig" if r.ci and r.ci.significant else "")] for r in rows]
    parts = [_table(["", "before", "after", "change", f"{level} CI of change"], body),
             f'<p class="note">CI: paired bootstrap (Koehn 2004) of the mean per-example difference, '
             f'{boot.n_resamples} resamples of the {boot.n} examples; * = the interval excludes 0.</p>']
    groups = cmp.groups
    if len(groups) > 1:
        gbody = [[(g.label, ""), (str(g.result.n), ""), (fmt(g.result.mean_before), ""), (fmt(g.result.mean_after), ""),
                  (fmt(g.result.delta, sign=True), ""), (fmt_ci(g.result), "sig" if g.result.significant else "")]
                 for g in groups]
        parts += ["<h2>By traffic bucket</h2>",
                  _table(["bucket", "n", "before", "after", "change", f"{level} CI of change"], gbody),
                  '<p class="note">Buckets: mean per example within the bucket. Traffic-weighted: every '
                  "prompt weighted by its traffic count, i.e. the score users experience.</p>"]
    return "\n".join(parts)


def _examples_html(cmp: Comparison) -> str:
    items = []
    for ex in pick_examples(cmp.before, cmp.after):
        score = ""
        if ex["score_before"] is not None and ex["score_after"] is not None:
            score = f" &middot; score {ex['score_before']:.1f} &rarr; {ex['score_after']:.1f}"
        label = f" &middot; {_e(ex['label'])}" if ex["label"] else ""
        names = (("prompt", "prompt"), ("reference", "reference"),
                 (cmp.before.tag or "before", "before"), (cmp.after.tag or "after", "after"))
        fields = "".join(f'<div class="k">{_e(k)}</div><pre>{_e(_cut(ex[f]))}</pre>' for k, f in names)
        items.append(f'<div class="ex"><div class="meta">id {_e(ex["id"])}{score}{label}</div>{fields}</div>')
    return "".join(items) or '<p class="note">No sample outputs stored in the eval files.</p>'


def _monitors_html(summary: dict) -> str:
    parts = []
    if summary["divergence_steps"]:
        steps = ", ".join(str(s) for s in summary["divergence_steps"])
        parts.append(f'<div class="verdict worse">Warning at step {_e(steps)}: the validation metric fell while '
                     "the train reward rose for two evaluations in a row; the reward may be hacked.</div>")
    body = [[(key, ""), (row["what"], ""), (fmt(row["train_start"], 3), ""), (fmt(row["train_end"], 3), ""),
             (fmt(row["eval_start"], 3), ""), (fmt(row["eval_end"], 3), "")]
            for key, row in summary["monitors"].items()]
    parts.append(_table(["monitor", "what", "train start", "train end", "eval start", "eval end"], body))
    parts.append('<p class="note">Train start/end: mean of the first/last tenth of the logged steps; eval: '
                 "the first and last evaluation. Definitions: rlft.eval.monitors.</p>")
    return "\n".join(parts)


def _cut(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + " [...]"


def _page(run_dir: Path, summary: dict, cmp: Comparison | None, pngs: list[Path], notes: list[str]) -> str:
    by_name = {p.name: p for p in pngs}
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    training = summary["training"]
    body = [f"<h1>rlft run report</h1><p class=\"meta\">{_e(run_dir.resolve().name)} &middot; generated {_e(stamp)}"
            f" &middot; {training['train_lines']} train log lines, last step {_e(training['last_step'])}</p>"]
    body += [f'<p class="note">{_e(n)}</p>' for n in notes]
    if cmp is not None:
        b, a = cmp.before, cmp.after
        kind = "" if cmp.verdict is Verdict.NO_CHANGE else cmp.verdict.value  # the CSS class: improved, worse
        body.append(f'<div class="verdict {kind}">{"<br>".join(_e(v) for v in cmp.verdicts)}</div>')
        body.append(f"<h2>{_e(b.tag or 'before')} (step {_e('?' if b.step is None else b.step)}) vs "
                    f"{_e(a.tag or 'after')} (step {_e('?' if a.step is None else a.step)}) on "
                    f"{len(b.per_example)} {_e(a.split or 'eval')} examples</h2>")
        body.append(_comparison_html(cmp))
        if "before_after.png" in by_name:
            body.append(_img(by_name["before_after.png"], "metric before and after"))
    if summary.get("reward_model"):
        body += ["<h2>Reward model: held-out pairs</h2>", _rm_html(summary["reward_model"])]
        if "calibration.png" in by_name:
            body.append(_img(by_name["calibration.png"], "reward-model calibration"))
    if "curves.png" in by_name:
        body += ["<h2>Training curves</h2>", _img(by_name["curves.png"], "training curves")]
    if summary["monitors"]:
        body += ["<h2>Reward-hacking monitors</h2>", _monitors_html(summary)]
        if "monitors.png" in by_name:
            body.append(_img(by_name["monitors.png"], "reward-hacking monitors"))
    if cmp is not None:
        body += ["<h2>Example outputs</h2>", _examples_html(cmp)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>rlft report: {_e(run_dir.resolve().name)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
