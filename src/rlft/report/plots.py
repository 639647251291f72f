"""Training curves and the before/after bar chart, as PNG files.

matplotlib is imported inside the functions (it is the optional ``report`` extra and slow to
import). Figures are built on the Agg canvas directly instead of through ``pyplot``, so plotting
never switches the backend or leaks figures in the caller's process (a notebook keeps its own).
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from rlft.atomic import atomic_write
from rlft.errors import RlftError

if TYPE_CHECKING:
    from rlft.eval.result import EvalResult

_BEFORE_COLOR, _AFTER_COLOR, _RAW_ALPHA = "#9aa5b1", "#2b6cb0", 0.3
_VALIDATION_KEYS = ("metric", "traffic_weighted", "head", "torso", "tail")


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float, right: float = 0.98) -> Any:
    if not matplotlib_available():
        raise RlftError("report: plots need matplotlib: pip install 'rlft[report]'")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins rather than layout="constrained": the layout engine measures every tick
    # label and doubled the drawing time; these figures have a fixed, known structure.
    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=0.07, right=right, bottom=0.14, top=0.88, wspace=0.25)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out_png: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(out_png, buf.getvalue())


def series(metrics: Sequence[dict], split: str, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric on one split, skipping lines where it is missing or not finite."""
    steps, values = [], []
    for line in metrics:
        value = line.get(key)
        if line.get("split") != split or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value) and isinstance(line.get("step"), (int, float)):
            steps.append(float(line["step"]))
            values.append(float(value))
    return steps, values


def smooth(values: Sequence[float]) -> list[float]:
    """Debiased exponential moving average, TensorBoard's smoothing, with a window ~ n/20 steps.

    The window grows with the run so a 30-step smoke test stays readable and a 5000-step run
    is not a band of noise; it is capped at 50 steps so late changes still show.
    """
    window = min(50.0, max(1.0, len(values) / 20))
    weight = 1.0 - 1.0 / window
    out, acc = [], 0.0
    for t, v in enumerate(values, 1):
        acc = weight * acc + (1.0 - weight) * v
        out.append(acc / (1.0 - weight**t) if weight > 0 else v)
    return out


def _eval_split(metrics: Sequence[dict]) -> str | None:
    splits = [line.get("split") for line in metrics if line.get("split") not in (None, "train")]
    return "validation" if "validation" in splits else (splits[0] if splits else None)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_curves(metrics: Sequence[dict], out_png: str | os.PathLike, *, metric_name: str = "metric") -> Path:
    """Train reward and KL (raw and smoothed) and the evaluation metric against step, one panel each."""
    fig = _figure(13.0, 3.6)
    axes = fig.subplots(1, 3)
    for ax, key, title in ((axes[0], "reward", "train reward"), (axes[1], "kl", "train KL to reference")):
        steps, values = series(metrics, "train", key)
        if not steps:
            _empty(ax, f"no train '{key}' logged")
            continue
        ax.plot(steps, values, color=_AFTER_COLOR, alpha=_RAW_ALPHA, linewidth=1, label="raw")
        ax.plot(steps, smooth(values), color=_AFTER_COLOR, linewidth=2, label="smoothed")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax, split = axes[2], _eval_split(metrics)
    plotted = False
    for key in _VALIDATION_KEYS if split else ():
        steps, values = series(metrics, split, key)
        if steps:
            label = metric_name if key == "metric" else key.replace("_", "-")
            ax.plot(steps, values, marker="o", markersize=3, linewidth=2 if key == "metric" else 1, label=label)
            plotted = True
    if plotted:
        ax.set_title(f"{split} {metric_name}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    else:
        _empty(ax, "no evaluation logged")
    return _save(fig, out_png)


def plot_before_after(before: EvalResult, after: EvalResult, out_png: str | os.PathLike, *,
                      groups: Sequence[Any] | None = None, n_resamples: int = 1000, seed: int = 0) -> Path:
    """Bars of the metric before and after, overall and per traffic bucket.

    The error bar sits on the after bar and spans ``before + [low, high]``: the CI of the
    change, drawn where the after value would land, so a bar whose whiskers reach the before
    level is a change the data cannot distinguish from none.
    """
    from rlft.report.table import bucket_groups, display_name

    if groups is None:
        groups = bucket_groups(before, after, n_resamples=n_resamples, seed=seed)
    # Overall first, then the traffic-weighted view, then buckets head -> tail.
    rank = {"unweighted": 0, "traffic_weighted": 1}
    groups = sorted(groups, key=lambda g: rank.get(g.key, 2))
    labels = ["all" if g.key == "unweighted" else g.label for g in groups]
    width = max(5.5, 1.6 * len(groups) + 2.5)
    fig = _figure(width, 3.8, right=1.0 - 1.2 / width)  # room for the legend on the right
    ax = fig.subplots()
    xs = list(range(len(groups)))
    bar = 0.38
    mb = [g.result.mean_before for g in groups]
    ma = [g.result.mean_after for g in groups]
    ax.bar([x - bar / 2 for x in xs], mb, bar, color=_BEFORE_COLOR, label=before.tag or "before")
    lo = [g.result.mean_after - (g.result.mean_before + g.result.low) for g in groups]
    hi = [(g.result.mean_before + g.result.high) - g.result.mean_after for g in groups]
    ax.bar([x + bar / 2 for x in xs], ma, bar, color=_AFTER_COLOR, label=after.tag or "after",
           yerr=[[max(v, 0.0) for v in lo], [max(v, 0.0) for v in hi]], capsize=4, ecolor="#1a202c")
    for x, g in zip(xs, groups):
        top = max(g.result.mean_before, g.result.mean_before + g.result.high, g.result.mean_after)
        mark = "*" if g.result.significant else ""
        ax.annotate(f"{g.result.delta:+.2f}{mark}", (x, top), xytext=(0, 4), textcoords="offset points",
                    ha="center", fontsize=9)
    ax.set_xticks(xs, labels)
    name = display_name(before.metric_name or after.metric_name)
    level = f"{groups[0].result.confidence * 100:.4g}%" if groups else "95%"
    ax.set_ylabel(f"{name} (mean per example)")
    ax.set_title(f"{name} before/after (error bar: {level} CI of the change; * excludes 0)", fontsize=10)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, out_png)


def plot_monitors(metrics: Sequence[dict], keys: Sequence[str], out_png: str | os.PathLike) -> Path:
    """One small panel per reward-hacking monitor: train (raw and smoothed) and evaluation points."""
    cols = min(4, max(1, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig = _figure(3.3 * cols, 2.7 * rows)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.9, wspace=0.3, hspace=0.55)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    split = _eval_split(metrics)
    for ax, key in zip(axes, keys):
        steps, values = series(metrics, "train", key)
        if steps:
            ax.plot(steps, values, color=_AFTER_COLOR, alpha=_RAW_ALPHA, linewidth=1)
            ax.plot(steps, smooth(values), color=_AFTER_COLOR, linewidth=2, label="train")
        if split:
            e_steps, e_values = series(metrics, split, key)
            if e_steps:
                ax.plot(e_steps, e_values, color="#c05621", marker="o", markersize=3, linewidth=1, label=split)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax is axes[0]:
            ax.legend(fontsize=7, loc="best")
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return _save(fig, out_png)
