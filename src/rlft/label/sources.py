"""Where pairs to label come from: a candidates JSONL file, or samples of one or two models.

A candidates row holds ``prompt`` and two completions, as ``a`` and ``b`` or as ``outputs`` (a
list; its first two are used, which reads the output of ``rlft generate --sample 2`` as it is).
Optional: ``id`` (kept across re-imports: an item whose id is already in the database is not
added twice; default, a hash of the texts), ``model_a``/``model_b`` (which model wrote each; kept
for the record, never shown to annotators) and ``gold`` (the known answer: a, b, tie or both_bad).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, Callable

from rlft.errors import RlftError, where
from rlft.label.store import LABELS

MAX_TEXT = 20_000  # characters of a prompt or a completion: longer is not something to read and judge


def load_candidates(path: str) -> tuple[list[dict], int]:
    """(items for ``Store.add_items``, rows skipped because both completions are the same text)."""
    from rlft.data.loading import iter_rows

    items, same = [], 0
    for line, row in iter_rows(path):
        item = candidate(row, path, line)
        if item["a"] == item["b"]:
            same += 1
            continue
        items.append(item)
    if not items:
        raise RlftError(f"{path}: no pairs to label" + (f" ({same} rows had two identical completions)" if same else ""))
    return items, same


def candidate(row: dict, path: str, line: int) -> dict:
    prompt = _text(row.get("prompt"), path, line, "prompt")
    if "outputs" in row:
        outputs = row["outputs"]
        if not isinstance(outputs, list) or len(outputs) < 2:
            raise RlftError(f"{where(path, line, 'outputs')}: must be a list of at least two completions")
        a, b = (_text(o, path, line, "outputs") for o in outputs[:2])
    else:
        a, b = _text(row.get("a"), path, line, "a"), _text(row.get("b"), path, line, "b")
    gold = row.get("gold")
    if gold is not None and gold not in LABELS:
        raise RlftError(f"{where(path, line, 'gold')}: must be one of {', '.join(LABELS)}, got {gold!r}")
    key = row.get("id")
    if key is None:
        key = hashlib.sha256(json.dumps([prompt, a, b]).encode("utf-8")).hexdigest()[:16]
    models = [row.get(f) for f in ("model_a", "model_b")]
    return {"key": str(key), "prompt": prompt, "a": a, "b": b, "gold": gold,
            "model_a": None if models[0] is None else str(models[0]),
            "model_b": None if models[1] is None else str(models[1])}


def _text(value: Any, path: str, line: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else f"got {type(value).__name__} {str(value)[:40]!r}"
        raise RlftError(f"{where(path, line, field)}: must be a non-empty string, {got}")
    if len(value) > MAX_TEXT:
        raise RlftError(f"{where(path, line, field)}: {len(value)} characters; at most {MAX_TEXT}")
    return value


def sample_candidates(config: Any, out: str, generate: Callable[..., list[list[str]]], *, model_b: str | None = None,
                      split: str = "validation", max_prompts: int | None = None) -> str:
    """Write a candidates file for ``split``'s prompts: two samples of ``model.name_or_path`` at the
    rollout temperature, or, with ``model_b``, one greedy completion of each model (two checkpoints
    compared at their best guess). Rows whose two completions are equal are left out.

    ``generate`` is ``rlft.api.generate`` (the command passes it in: the labeling app sits below the
    public API in the layers, so it takes the function rather than importing it)."""
    from rlft.atomic import atomic_write
    from rlft.data.loading import jsonl_text
    from rlft.training.setup import build_parts

    parts = build_parts(config)
    if split not in parts.splits or not parts.splits[split]:
        raise RlftError(f"label sample: the {split!r} split has no prompts (data.{split}, or data.train to carve it)")
    prompts = list(dict.fromkeys(e.prompt for e in parts.splits[split]))[:max_prompts]
    name_a = config.model.name_or_path
    if model_b is None:
        pairs = generate(config, prompts, greedy=False, samples=2, parts=parts)
        names = (f"{name_a} (sample 1)", f"{name_a} (sample 2)")
    else:
        first = generate(config, prompts, greedy=True, parts=parts)
        config_b = replace(config, model=replace(config.model, name_or_path=model_b))
        second = generate(config_b, prompts, greedy=True)
        pairs = [[x[0], y[0]] for x, y in zip(first, second)]
        names = (name_a, model_b)
    rows = [{"id": f"{split}-{i}", "prompt": p, "a": a, "b": b, "model_a": names[0], "model_b": names[1]}
            for i, (p, (a, b)) in enumerate(zip(prompts, pairs)) if a.strip() and b.strip() and a != b]
    atomic_write(out, jsonl_text(rows))
    return f"{out}: {len(rows)} pairs ({len(prompts) - len(rows)} prompts left out: equal or empty completions)"
