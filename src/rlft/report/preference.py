"""The reward-model part of the run report: held-out pairwise accuracy and calibration, read from
``eval/rm-<split>.json`` (written by ``rlft rm train``, ``rlft.eval.preference``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rlft.report.plots import _figure, _save
from rlft.rundir import eval_path

SPLITS = ("validation", "test")


def read_rm_evals(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The reward model's held-out evaluations of the run, validation first; [] for another kind of run."""
    paths = [eval_path(run_dir, f"rm-{split}") for split in SPLITS]
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]


def plot_calibration(evals: list[dict[str, Any]], out_png: str | os.PathLike) -> Path:
    """Reliability diagram: mean predicted P(chosen wins) per bin against the observed rate, one line
    per split, point size by the bin's count; the diagonal is perfect calibration."""
    fig = _figure(5.0, 4.2)
    fig.subplots_adjust(left=0.14, top=0.9)  # room for the y label
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="#a0aec0", linestyle="--", linewidth=1, label="perfectly calibrated")
    for i, ev in enumerate(evals):
        bins = ev.get("calibration") or []
        xs, ys = [b["predicted"] for b in bins], [b["observed"] for b in bins]
        total = max(1, sum(b["n"] for b in bins))
        ax.plot(xs, ys, color=f"C{i}", linewidth=1.2)
        ax.scatter(xs, ys, color=f"C{i}", s=[20 + 300 * b["n"] / total for b in bins],
                   label=f"{ev['split']} (ECE {ev['ece']:.3f}, {ev['n']} pairs)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(chosen wins) = sigmoid(r_chosen - r_rejected)")
    ax.set_ylabel("observed rate")
    ax.set_title("reward-model calibration (pairs counted both ways)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out_png)
