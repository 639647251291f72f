"""Preference pairs for reward models: read, validate and split.

A row holds ``prompt``, ``chosen`` and ``rejected`` (non-empty strings) and optionally ``tie``
(true/false, 1/0; the two completions are equally good, in either order), ``margin`` (a
non-negative number: how clearly ``chosen`` wins, for the Bradley-Terry margin; not on a tie) and
``annotator`` (who labelled it). Any format ``rlft.data.loading.iter_rows`` reads (JSONL, CSV,
Parquet, a `datasets` directory or hub name); every error names the file, the line and the field.
Pairs are split by a hash of their prompt, so no prompt is in two splits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from rlft.config import DataConfig
from rlft.data.loading import iter_rows
from rlft.data.splits import SPLITS, hash_fraction
from rlft.errors import RlftError, where

_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}
PAIR_SPLIT_SALT = "rlft-preference-pairs\n"


@dataclass(frozen=True)
class Pair:
    """One labelled comparison of two completions of a prompt."""

    prompt: str
    chosen: str
    rejected: str
    tie: bool = False
    margin: float = 0.0
    annotator: Optional[str] = None
    id: str = ""           # '{file}:{line}', for messages


def load_pairs(source: str, *, hub_split: str = "train") -> list[Pair]:
    """Read and validate every pair of ``source`` (streamed)."""
    return rows_to_pairs(iter_rows(source, hub_split=hub_split), source)


def rows_to_pairs(rows: Iterable[tuple[int, dict]], source: str) -> list[Pair]:
    pairs = []
    for line, row in rows:
        prompt, chosen, rejected = (_text(row, name, source, line) for name in ("prompt", "chosen", "rejected"))
        tie, margin = _tie(row, source, line), _margin(row, source, line)
        if tie and margin:
            raise RlftError(f"{where(source, line, 'margin')}: a tie has no margin, got {margin!r}")
        if chosen == rejected and not tie:
            raise RlftError(f"{where(source, line, 'rejected')}: the same text as 'chosen'; mark the row "
                            "tie: true or drop it")
        annotator = row.get("annotator")
        pairs.append(Pair(prompt, chosen, rejected, tie, margin, None if annotator is None else str(annotator),
                          f"{source}:{line}"))
    if not pairs:
        raise RlftError(f"{source}: no preference pairs")
    return pairs


def _text(row: dict, name: str, source: str, line: int) -> str:
    value = row.get(name)
    if value is None:
        raise RlftError(f"{where(source, line, name)}: missing (columns: {', '.join(map(str, row)) or 'none'})")
    if not isinstance(value, str):
        raise RlftError(f"{where(source, line, name)}: must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RlftError(f"{where(source, line, name)}: empty")
    return value


def _tie(row: dict, source: str, line: int) -> bool:
    value = row.get("tie")
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:  # CSV cells are text
        return value.strip().lower() in _TRUE
    raise RlftError(f"{where(source, line, 'tie')}: must be true or false (or 1/0), got {value!r}")


def _margin(row: dict, source: str, line: int) -> float:
    value: Any = row.get("margin")
    if value is None or value == "":
        return 0.0
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise RlftError(f"{where(source, line, 'margin')}: must be a non-negative number, got {value!r}")
    return number


def split_pairs(pairs: list[Pair], validation_fraction: float, test_fraction: float) -> dict[str, list[Pair]]:
    """Assign each pair by a hash of its prompt, as ``rlft.data.splits.split_examples`` does for
    prompts: test below ``test_fraction``, then validation, else train. Order is kept.

    The hash is salted: pairs made from a prompt split carved by ``split_examples`` (``rlft rm
    pairs`` on a task's training prompts) all have unsalted hashes above that split's fractions,
    and would all land in train."""
    out: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        h = hash_fraction(PAIR_SPLIT_SALT + pair.prompt)
        out["test" if h < test_fraction else "validation" if h < test_fraction + validation_fraction
            else "train"].append(pair)
    return out


def load_pair_splits(cfg: DataConfig) -> dict[str, list[Pair]]:
    """``train``, ``validation`` and ``test`` pairs from ``data.train`` (and ``data.validation`` /
    ``data.test`` when given; a split without a file is carved from train by prompt hash). A train
    pair whose prompt is in a given held-out file is dropped, as ``load_splits`` does for prompts."""
    if cfg.train is None:
        raise RlftError("data.train: no preference data given; set data.train=PAIRS.jsonl")
    given = {name: load_pairs(path, hub_split=cfg.hub_split)
             for name, path in (("validation", cfg.validation), ("test", cfg.test)) if path is not None}
    splits = {**split_pairs(load_pairs(cfg.train, hub_split=cfg.hub_split),
                            0.0 if "validation" in given else cfg.validation_fraction,
                            0.0 if "test" in given else cfg.test_fraction), **given}
    held = {p.prompt for name in given for p in given[name]}
    kept = [p for p in splits["train"] if p.prompt not in held]
    if len(kept) < len(splits["train"]):
        warnings.warn(f"data.train: dropped {len(splits['train']) - len(kept)} pair(s) whose prompt is in a "
                      "held-out file", stacklevel=2)
    splits["train"] = kept if cfg.max_examples is None else kept[: cfg.max_examples]
    if not splits["train"]:
        raise RlftError(f"{cfg.train}: no training pairs left after holding out validation and test")
    return splits
