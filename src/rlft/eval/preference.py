"""How well a reward model orders held-out pairs: pairwise accuracy with a Wilson interval, and
a calibration table of the probability it gives the chosen completion.

Accuracy counts the pairs labelled with a winner (ties have no right order): 1 when the chosen
completion scores higher, 1/2 for equal scores. Its 95% interval is Wilson's score interval
(Wilson 1927), which stays inside [0, 1] and keeps its coverage near 0 and 1 and for small n,
where the normal approximation does not.

Calibration reads the Bradley-Terry probability P(chosen wins) = sigmoid(r_c - r_j) (the margin
and ties left out). Each pair enters twice, as (p, won) and (1 - p, lost), so the table does not
depend on which completion a file happens to list first; bins are equal-width in p, and the
expected calibration error is the pair-weighted mean |predicted - observed| over the bins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``successes / n`` (95% for the default z);
    ``successes`` may be fractional (half-counted score ties). (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class CalibrationBin:
    low: float
    high: float
    n: int             # predictions in the bin (two per pair)
    predicted: float   # their mean predicted probability
    observed: float    # the share of them that won


@dataclass
class PairwiseAccuracy:
    split: str
    n: int                    # pairs with a winner
    ties: int                 # pairs labelled tie, left out of the accuracy
    accuracy: float
    ci_low: float
    ci_high: float
    mean_margin: float        # mean r_chosen - r_rejected over the pairs with a winner
    ece: float                # expected calibration error
    calibration: list[CalibrationBin] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.split}: pairwise accuracy {100 * self.accuracy:.1f}% (95% CI {100 * self.ci_low:.1f} to "
                f"{100 * self.ci_high:.1f}, Wilson) on {self.n} pairs" + (f", {self.ties} ties left out" if self.ties
                                                                             else "") + f"; ECE {self.ece:.3f}")


def pairwise_accuracy(chosen: list[float], rejected: list[float], tie: list[bool], *, split: str,
                      bins: int = 10) -> PairwiseAccuracy:
    """The held-out figures of one split from the scores of its pairs' completions."""
    won = [(c, r) for c, r, t in zip(chosen, rejected, tie) if not t]
    right = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in won)
    n = len(won)
    low, high = wilson_interval(right, n)
    table = calibration_table([c - r for c, r in won], bins)
    ece = sum(b.n * abs(b.predicted - b.observed) for b in table) / max(1, sum(b.n for b in table))
    return PairwiseAccuracy(split, n, len(tie) - n, right / n if n else math.nan, low, high,
                            sum(c - r for c, r in won) / n if n else math.nan, ece, table)


def calibration_table(differences: list[float], bins: int) -> list[CalibrationBin]:
    """Bins of P(chosen wins) = sigmoid(d) for score differences ``d`` of pairs the chosen won;
    each pair also enters as the mirror prediction (1 - p, lost). Empty bins are left out."""
    points = []
    for d in differences:
        p = 1.0 / (1.0 + math.exp(-d)) if d > -700 else 0.0
        points += [(p, 1.0), (1.0 - p, 0.0)]
    out = []
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (i == bins - 1 and p == 1.0)]
        if inside:
            out.append(CalibrationBin(lo, hi, len(inside), sum(p for p, _ in inside) / len(inside),
                                      sum(y for _, y in inside) / len(inside)))
    return out


def calibration_text(result: PairwiseAccuracy) -> str:
    """The calibration table as aligned text."""
    lines = [f"{'P(chosen wins)':>15} {'n':>6} {'predicted':>10} {'observed':>9}"]
    lines += [f"{b.low:>7.1f} - {b.high:<5.1f} {b.n:>6} {b.predicted:>10.3f} {b.observed:>9.3f}"
              for b in result.calibration]
    return "\n".join(lines)
