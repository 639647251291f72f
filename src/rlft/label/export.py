"""Judgements as preference pairs: the JSONL that `rlft rm train` and TRL's reward trainer read.

One row per live judgement with a preference: ``prompt``, ``chosen``, ``rejected``, ``tie``
(a tie keeps the item's a as chosen and b as rejected) and ``annotator``. Skips and "both bad"
say nothing about which completion is better and are left out; several annotators on one item
give several rows, so a trainer can weigh or aggregate them as it likes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rlft.label.store import Judgement, Store


def preference_rows(judgements: Iterable[Judgement]) -> list[dict]:
    rows = []
    for j in judgements:
        if j.choice not in ("a", "b", "tie"):
            continue
        chosen, rejected = (j.b, j.a) if j.choice == "b" else (j.a, j.b)
        rows.append({"prompt": j.prompt, "chosen": chosen, "rejected": rejected, "tie": j.choice == "tie",
                     "annotator": j.annotator})
    return rows


def export(store: Store, out: str | Path) -> int:
    """Write the preference JSONL (atomically); returns the number of rows."""
    from rlft.atomic import atomic_write
    from rlft.data.loading import jsonl_text

    rows = preference_rows(store.judgements())
    atomic_write(out, jsonl_text(rows))
    return len(rows)
