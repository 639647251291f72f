"""Agreement between annotators: Krippendorff's alpha, agreement with the majority, gold accuracy.

Pure functions over (item, annotator, label) triples, standard library only. Skips are not labels
and are left out before any of these is computed; "both bad" is a label like the others.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

from rlft.label.store import CHOICES, Judgement


def krippendorff_alpha(units: Mapping[Hashable, Sequence[Hashable]]) -> Optional[float]:
    """Krippendorff's alpha for nominal labels (Krippendorff 2011, "Computing Krippendorff's
    Alpha-Reliability", section C): units -> the labels the unit got, any number per unit.

        o_ck = sum_u (number of c-k pairs of values in u) / (m_u - 1)      coincidences, m_u >= 2
        n_c  = sum_k o_ck,  n = sum_c n_c
        alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k

    Units with one label carry no pair and are left out, as in the paper. None when alpha is
    undefined: fewer than two pairable values, or every pairable value the same label.
    """
    o: Counter = Counter()
    for values in units.values():
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c in counts:
            for k in counts:
                o[c, k] += counts[c] * (counts[k] - (c == k)) / (m - 1)
    n_c: Counter = Counter()
    for (c, _), v in o.items():
        n_c[c] += v
    n = sum(n_c.values())
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    if n < 2 or expected == 0:
        return None
    return 1 - (n - 1) * sum(v for (c, k), v in o.items() if c != k) / expected


def agreement_with_majority(triples: Iterable[tuple[Hashable, str, Hashable]]) -> dict[str, tuple[int, int]]:
    """annotator -> (agreed, compared): on each item an annotator labelled together with others,
    whether their label is the most frequent label of the *other* annotators (leave-one-out, so
    an annotator does not make their own majority). Items where the others tie for the most
    frequent label have no majority and are not compared."""
    by_item: dict[Hashable, dict[str, Hashable]] = defaultdict(dict)
    for item, who, label in triples:
        by_item[item][who] = label
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for labels in by_item.values():
        for who, label in labels.items():
            top = Counter(v for w, v in labels.items() if w != who).most_common(2)
            if not top or (len(top) == 2 and top[0][1] == top[1][1]):
                continue
            out[who][0] += label == top[0][0]
            out[who][1] += 1
    return {who: (a, n) for who, (a, n) in out.items()}


@dataclass(frozen=True)
class AnnotatorRow:
    name: str
    counts: dict[str, int]                   # choice -> judgements (skips included)
    majority: tuple[int, int] = (0, 0)       # (agreed, compared)
    gold: tuple[int, int] = (0, 0)           # (correct, gold items judged)


@dataclass(frozen=True)
class Summary:
    alpha: Optional[float]
    units: int                               # items with two or more labels (what alpha is over)
    annotators: list[AnnotatorRow] = field(default_factory=list)


def summarize(judgements: Sequence[Judgement], names: Sequence[str] = ()) -> Summary:
    """The admin page's figures from the live judgements; ``names`` lists annotators with none yet too."""
    labelled = [j for j in judgements if j.choice != "skip"]
    units: dict[int, list[str]] = defaultdict(list)
    for j in labelled:
        units[j.item_id].append(j.choice)
    majority = agreement_with_majority((j.item_id, j.annotator, j.choice) for j in labelled)
    gold: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for j in labelled:
        if j.gold is not None:
            gold[j.annotator][0] += j.choice == j.gold
            gold[j.annotator][1] += 1
    counts: dict[str, Counter] = {name: Counter() for name in names}
    for j in judgements:
        counts.setdefault(j.annotator, Counter())[j.choice] += 1
    rows = [AnnotatorRow(name, {c: c_counts[c] for c in CHOICES}, majority.get(name, (0, 0)),
                         tuple(gold.get(name, (0, 0)))) for name, c_counts in counts.items()]
    return Summary(krippendorff_alpha(units), sum(len(v) >= 2 for v in units.values()), rows)
