"""The unit of data that every stage sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One unique prompt with its reference(s).

    ``count`` is how often the prompt occurs in traffic (1 when the data has no counts);
    the frequency-aware sampler and the traffic-weighted metrics read it.
    """

    prompt: str
    references: tuple[str, ...]
    id: str
    count: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
