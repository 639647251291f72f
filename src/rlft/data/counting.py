"""Counting a traffic log: repeated prompts become one Example each, carrying their traffic count.

Real traffic is imbalanced: a few prompts make up most requests. rlft trains on the U *unique*
prompts, each carrying its count, so a prompt seen a million times is one row with a weight.
Counting keeps one entry per unique prompt, never the log, so memory scales with U. ``PromptCounter``
is the one merge of repeated prompts: the data loader and the task builders both go through it. The
weights, sampler (``rlft.data.sampling``) and buckets (``rlft.data.buckets``) work from these counts.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rlft.data.example import Example
from rlft.errors import RlftError, where
from rlft.rundir import jsonable

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


@dataclass
class Merged:
    """One unique prompt as merged so far: its first row's text, id, line and extra columns, the
    summed count, and each distinct reference with the number of times rows gave it (first-seen order)."""

    prompt: str
    id: str
    line: int
    count: float
    references: Counter[str]
    meta: dict[str, Any]

    def ranked_references(self) -> list[str]:
        """Most frequent first, ties in first-seen order (``Counter.most_common`` sorts stably)."""
        return [ref for ref, _ in self.references.most_common()]

    def example(self) -> Example:
        return Example(prompt=self.prompt, references=tuple(self.references), id=self.id, count=self.count,
                       meta=self.meta)


class PromptCounter:
    """The one merge of repeated prompts: the data loader (datasets and traffic logs alike,
    ``rlft.data.loading.rows_to_examples``) and the task builders (``recipes.tasks.common``) feed it.

    ``add`` takes one row's checked fields; ``examples()`` (or ``merged()``) gives the result:

    - prompts merge when equal, or equal under ``normalize_prompt`` with ``normalize``;
    - the first row of a prompt gives its text, id, line and extra columns (``meta``, made JSON by
      ``rlft.rundir.jsonable``: a value JSON cannot hold becomes its ``str``, so an Example can be
      saved; a NaN cell stays NaN, which a template shows as 'nan');
    - counts add up (integer counts stay exact ints however long the log);
    - references are the union over the rows, in first-seen order;
    - unique prompts come out in order of first appearance;
    - the id is the first row's, or ``{file name}:{line}`` when it has none; an id that already
      names a different prompt is an error naming both lines.

    Memory holds one entry per unique prompt, never the rows, so a traffic log larger than memory
    streams through, in any number of chunks.
    """

    def __init__(self, *, normalize: bool = False, source: str = "data", id_field: str = "id"):
        self.normalize, self.source, self.id_field = normalize, source, id_field
        self._base = os.path.basename(source.rstrip("/\\")) or source
        self._entries: dict[str, Merged] = {}  # key -> entry, in first-seen order
        self._id_lines: dict[str, int] = {}    # id -> the line that gave it

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, line: int, prompt: str, references: Iterable[str], count: float = 1, *,
            id: Any = None, meta: Mapping[str, Any] | None = None) -> None:
        key = prompt_key(prompt, self.normalize)
        entry = self._entries.get(key)
        if entry is None:
            meta = {k: jsonable(v, default=str, allow_nan=True) for k, v in (meta or {}).items()}
            entry = self._entries[key] = Merged(prompt, self._new_id(id, line), line, 0, Counter(), meta)
        entry.count += count
        entry.references.update(references)

    def merged(self) -> list[Merged]:
        return list(self._entries.values())

    def examples(self) -> list[Example]:
        return [entry.example() for entry in self._entries.values()]

    def _new_id(self, value: Any, line: int) -> str:
        blank = value is None or (isinstance(value, str) and not value.strip())
        ex_id = f"{self._base}:{line}" if blank else str(value)
        if ex_id in self._id_lines:
            raise RlftError(f"{where(self.source, line, self.id_field)}: duplicate id '{ex_id}' (first at line "
                            f"{self._id_lines[ex_id]}) for a different prompt; fix the ids or set data.id_field")
        self._id_lines[ex_id] = line
        return ex_id
