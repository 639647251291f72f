"""Counting a traffic log: repeated prompts become one Example each, carrying their traffic count.

Real traffic is imbalanced: a few prompts make up most requests. rlft trains on the U *unique*
prompts, each carrying its count, so a prompt seen a million times is one row with a weight.
Counting keeps one entry per unique prompt, never the log, so memory scales with U; the
weights, sampler (``rlft.data.sampling``) and buckets (``rlft.data.buckets``) work from these counts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from rlft.config import DataConfig
from rlft.data import loading
from rlft.data.example import Example
from rlft.errors import RlftError, where

_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"\d+")  # Unicode decimal digits, so Arabic-Indic digits merge as well


def normalize_prompt(text: str) -> str:
    """The key under which near-duplicate prompts are merged: 'Error 404 at line 12' -> 'error 0 at line 0'.

    NFKC first, so fullwidth digits and letters ('１２３', 'Ａ') and the ideographic space become
    their ASCII forms; then casefold, one '0' per digit run, whitespace runs to one space, strip.
    """
    # NFKC again after casefold, as Unicode's NFKC_Casefold does: folding can denormalize.
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    text = _DIGITS.sub("0", text)
    return _SPACES.sub(" ", text).strip()


def prompt_key(text: str, normalize: bool = False) -> str:
    """The key two prompts must share to count as one: the text, or ``normalize_prompt`` of it."""
    return normalize_prompt(text) if normalize else text


class PromptCounter:
    """Count a traffic log incrementally: ``add(line, row)`` per raw row, then ``examples()``.

    Memory holds one entry per unique prompt (its first text, id, extra fields, count and the
    distinct references), never the log, so a log can be fed in any number of chunks.
    A row counts ``row[count_field]`` (a positive integer) or ``row[weight_field]`` (a positive
    number) or 1; missing, null and empty-string cells count as absent (CSV, Parquet).
    """

    def __init__(self, *, prompt_field: str = "prompt", reference_field: str = "reference",
                 references_field: str = "references", count_field: str = "count",
                 weight_field: str = "weight", id_field: str = "id", normalize: bool = False,
                 require_reference: bool = True, source: str = "log"):
        self.prompt_field, self.reference_field, self.references_field = prompt_field, reference_field, references_field
        self.count_field, self.weight_field, self.id_field = count_field, weight_field, id_field
        self.normalize, self.require_reference, self.source = normalize, require_reference, source
        self._known = {prompt_field, reference_field, references_field, count_field, weight_field, id_field}
        # The row checks are the data loader's own, so a log and a dataset fail the same way.
        self._cfg = DataConfig(prompt_field=prompt_field, reference_field=reference_field,
                               references_field=references_field, count_field=count_field, id_field=id_field)
        self._entries: dict[str, dict[str, Any]] = {}  # key -> entry, in first-seen order

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, line: int, row: dict) -> None:
        if not isinstance(row, dict):
            raise RlftError(f"{where(self.source, line)}: expected an object, got {type(row).__name__}")
        prompt = self._prompt(line, row)
        references = self._references(line, row)
        count = self._count(line, row)
        key = prompt_key(prompt, self.normalize)
        entry = self._entries.get(key)
        if entry is None:
            raw_id = row.get(self.id_field)
            entry = {"prompt": prompt, "line": line, "count": 0, "references": {},
                     "id": None if raw_id is None or str(raw_id).strip() == "" else str(raw_id),
                     "meta": {k: loading._jsonable(v) for k, v in row.items() if k not in self._known}}
            self._entries[key] = entry
        entry["count"] += count
        # A dict used as an ordered set keeps references in first-seen order.
        entry["references"].update(dict.fromkeys(references))

    def examples(self) -> list[Example]:
        """Unique prompts by descending count; ties keep first appearance (the sort is stable)."""
        ranked = sorted(self._entries.values(), key=lambda e: -e["count"])
        seen: dict[str, int] = {}
        out = []
        for rank, e in enumerate(ranked, start=1):
            if self.require_reference and not e["references"]:
                raise RlftError(f"{where(self.source, e['line'])}: no reference for this prompt in any of its rows "
                                f"(fields '{self.reference_field}' or '{self.references_field}')")
            ex_id = e["id"] if e["id"] is not None else f"p{rank}"
            if ex_id in seen:
                raise RlftError(f"{where(self.source, e['line'], self.id_field)}: id '{ex_id}' also names a "
                                f"different prompt (line {seen[ex_id]})")
            seen[ex_id] = e["line"]
            out.append(Example(prompt=e["prompt"], references=tuple(e["references"]), id=ex_id,
                               count=float(e["count"]), meta=dict(e["meta"])))
        return out

    def _prompt(self, line: int, row: dict) -> str:
        return loading._prompt(row, self._cfg, self.source, line)

    def _references(self, line: int, row: dict) -> list[str]:
        return loading._references(row, self._cfg, self.source, line, required=False)

    def _count(self, line: int, row: dict) -> float:
        return loading._count(row, self._cfg, self.source, line, weight_field=self.weight_field)


def count_prompts(rows: Iterable[tuple[int, dict]], *, prompt_field: str = "prompt",
                  reference_field: str = "reference", references_field: str = "references",
                  count_field: str = "count", weight_field: str = "weight", id_field: str = "id",
                  normalize: bool = False, require_reference: bool = True, source: str = "log") -> list[Example]:
    """One streaming pass over ``(line, row)`` pairs of a traffic log -> unique prompts with counts.

    Repeats (exact, or equal under ``normalize_prompt`` with ``normalize=True``) merge into one
    Example that keeps the first-seen prompt text, id and extra fields (``meta``), sums the
    counts and unions the references in first-seen order. Ids are the first row's ``id_field``
    or ``p{rank}`` (1 = most frequent). Order: descending count, ties by first appearance.
    """
    counter = PromptCounter(prompt_field=prompt_field, reference_field=reference_field,
                            references_field=references_field, count_field=count_field,
                            weight_field=weight_field, id_field=id_field, normalize=normalize,
                            require_reference=require_reference, source=source)
    for line, row in rows:
        counter.add(line, row)
    return counter.examples()
