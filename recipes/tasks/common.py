"""Shared machinery of the task builders: dedup, hash splits, traffic counts, snapshot files.

Every bundled task goes through the same steps after its own source-specific collection:
``merge_duplicates`` -> ``split_pairs`` -> (``zipf_counts``) -> ``write_snapshot`` and
``write_datasheet``. Keeping them here means the tasks cannot drift apart in how
they split or count. The builders run as ``python -m recipes.tasks [--task NAME]``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rlft.data.counting import PromptCounter

SPLITS = ("train", "validation", "test")


@dataclass
class Pair:
    """One prompt with its references, as collected from a source (before splitting)."""

    prompt: str
    references: list[str]
    count: int = 1
    meta: dict[str, Any] = field(default_factory=dict)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unit_hash(text: str, salt: str = "") -> float:
    """A stable number in [0, 1) from the text: the first 64 bits of sha256."""
    return int(sha256_hex(salt + text)[:16], 16) / 2**64


def squash(text: str) -> str:
    """Collapse runs of whitespace (newlines included) to one space and strip."""
    return re.sub(r"\s+", " ", text).strip()


def merge_duplicates(pairs: Iterable[Pair], max_refs: int | None = None) -> list[Pair]:
    """One Pair per distinct prompt, merged as the data loader merges rows (``PromptCounter``:
    counts added, meta of the first occurrence kept, first-appearance order); a task keeps its
    references most frequent first (ties by first appearance), at most ``max_refs`` of them."""
    counter = PromptCounter(source="pairs")
    for line, pair in enumerate(pairs, start=1):
        counter.add(line, pair.prompt, pair.references, pair.count, meta=pair.meta)
    out = []
    for entry in counter.merged():
        refs = entry.ranked_references()
        out.append(Pair(entry.prompt, refs[:max_refs] if max_refs else refs, entry.count, entry.meta))
    return out


def split_pairs(pairs: list[Pair], test_fraction: float = 0.05, validation_fraction: float = 0.05,
                cap: int | None = None, train_cap: int | None = None,
                group: Callable[[Pair], str] | None = None) -> dict[str, list[Pair]]:
    """Deterministic split by the sha256 of the prompt (or of its ``group`` key).

    A pair whose hash h falls in [0, test) goes to test, [test, test+validation) to
    validation, the rest to train. ``group`` maps a pair to a key (a conversation id) that is
    hashed instead of the prompt, so all pairs of one group land in one split: a dialogue turn
    that is a test reply then never appears in a train prompt's context. ``cap`` keeps at most
    that many validation/test rows (the lowest hashes, whole groups only); the overflow joins
    train, so nothing is lost and the splits stay disjoint. ``train_cap`` subsamples train to
    its lowest hashes (a salted hash, so the subsample is not correlated with the split
    boundary). Each split is sorted by hash. Prompts must already be unique
    (``merge_duplicates``).
    """
    prompts = [p.prompt for p in pairs]
    if len(set(prompts)) != len(prompts):
        raise ValueError("split_pairs: prompts must be unique; call merge_duplicates first")
    key = group or (lambda p: p.prompt)

    def order(pair: Pair) -> tuple[float, float]:
        return unit_hash(key(pair)), unit_hash(pair.prompt)

    out: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in sorted(pairs, key=order):
        h = unit_hash(key(pair))
        if h < test_fraction:
            out["test"].append(pair)
        elif h < test_fraction + validation_fraction:
            out["validation"].append(pair)
        else:
            out["train"].append(pair)
    if cap is not None:
        for name in ("validation", "test"):
            rows = out[name]
            cut = min(cap, len(rows))
            while 0 < cut < len(rows) and key(rows[cut - 1]) == key(rows[cut]):
                cut -= 1  # never cut through a group
            out["train"].extend(rows[cut:])
            out[name] = rows[:cut]
    out["train"].sort(key=order)
    if train_cap is not None and len(out["train"]) > train_cap:
        kept = sorted(out["train"], key=lambda p: unit_hash(p.prompt, "train-subsample:"))[:train_cap]
        out["train"] = sorted(kept, key=order)
    return out


def zipf_counts(splits: dict[str, list[Pair]], seed: int, scale: float, exponent: float = 1.1) -> None:
    """Assign synthetic traffic counts in place: count = max(1, round(scale / rank**exponent)).

    Ranks 1..N come from one seeded permutation over the prompts of all splits together
    (sorted by sha256 of ``f"{seed}:{prompt}"``), so test rows get counts from the same
    model as train rows and a prompt's count does not depend on which split it lands in.
    """
    everything = [pair for name in SPLITS for pair in splits[name]]
    order = sorted(everything, key=lambda p: sha256_hex(f"{seed}:{p.prompt}"))
    for rank, pair in enumerate(order, start=1):
        pair.count = max(1, round(scale / rank**exponent))


def row_of(task: str, pair: Pair) -> dict[str, Any]:
    return {"id": f"{task}-{sha256_hex(pair.prompt)[:12]}", "prompt": pair.prompt,
            "references": pair.references, "count": int(pair.count), "meta": pair.meta}


def write_snapshot(task: str, splits: dict[str, list[Pair]], out_dir: Path) -> dict[str, int]:
    """Write ``{train,validation,test}.jsonl.gz``; returns the number of rows per split.

    The gzip header carries no file name and mtime 0, so a rebuild from the same sources
    gives byte-identical files (no spurious diffs in the repository).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in SPLITS:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            for pair in splits[name]:
                line = json.dumps(row_of(task, pair), ensure_ascii=False, sort_keys=True)
                gz.write((line + "\n").encode("utf-8"))
        (out_dir / f"{name}.jsonl.gz").write_bytes(buf.getvalue())
        sizes[name] = len(splits[name])
    return sizes


def read_snapshot(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of one ``*.jsonl.gz`` snapshot file."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# ---------------------------------------------------------------------------------------------
# Datasheet

def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


def _stat_row(label: str, values: list[float]) -> str:
    mean = statistics.fmean(values) if values else 0.0
    return f"| {label} | {mean:.1f} | {_percentile(values, 0.5):.0f} | {_percentile(values, 0.95):.0f} |"


def length_table(splits: dict[str, list[Pair]], cjk_reference: bool = False) -> str:
    """Markdown table of chars/words (mean, p50, p95) of prompts and first references."""
    pairs = [p for name in SPLITS for p in splits[name]]
    prompts = [p.prompt for p in pairs]
    refs = [p.references[0] for p in pairs]
    lines = ["| measure (all splits, first reference) | mean | p50 | p95 |", "| --- | ---: | ---: | ---: |"]
    lines.append(_stat_row("prompt chars", [len(t) for t in prompts]))
    lines.append(_stat_row("prompt words", [len(t.split()) for t in prompts]))
    lines.append(_stat_row("reference chars", [len(t) for t in refs]))
    if cjk_reference:
        lines.append(_stat_row("reference CJK characters", [len(re.findall(r"[\u3400-\u9fff]", t)) for t in refs]))
    else:
        lines.append(_stat_row("reference words", [len(t.split()) for t in refs]))
    lines.append(_stat_row("reference UTF-8 bytes", [len(t.encode("utf-8")) for t in refs]))
    lines.append(_stat_row("references per prompt", [len(p.references) for p in pairs]))
    lines.append(_stat_row("count", [p.count for p in pairs]))
    return "\n".join(lines)


def split_table(splits: dict[str, list[Pair]]) -> str:
    lines = ["| split | rows (unique prompts) | traffic (sum of count) |", "| --- | ---: | ---: |"]
    for name in SPLITS:
        lines.append(f"| {name} | {len(splits[name])} | {sum(p.count for p in splits[name])} |")
    return "\n".join(lines)


def write_datasheet(out_dir: Path, title: str, intro: str, splits: dict[str, list[Pair]],
                    counts_note: str, cap: int | None = None, train_cap: int | None = None,
                    extra: str = "", cjk_reference: bool = False) -> Path:
    """Write DATASHEET.md: the task's fixed description plus statistics of this build."""
    caps = f" Validation and test keep at most {cap} prompts each (lowest hashes; the overflow joins train)." if cap else ""
    if train_cap:
        caps += (f" Train is subsampled to at most {train_cap} prompts: the lowest values of a second, "
                 "salted sha256 of the prompt.")
    text = "\n\n".join(part for part in [
        f"# {title}",
        intro.strip(),
        "## Splits\n\n" + split_table(splits) + "\n\nSplits are made by the sha256 of the prompt after "
        "deduplication (prompts are unique within and across splits; the references of duplicate "
        "prompts are merged): the first 64 bits of the hash as a number h in [0, 1); h < 0.05 -> "
        "test, h < 0.10 -> validation, else train." + caps,
        "## Lengths\n\n" + length_table(splits, cjk_reference),
        "## Counts\n\n" + counts_note.strip() + "\n\n" + REPLAY_NOTE,
        extra.strip(),
        "Rebuild with `python -m recipes.tasks --task NAME`; the numbers above are written by "
        "the build, so they describe the committed snapshot.",
    ] if part)
    path = out_dir / "DATASHEET.md"
    path.write_text(text + "\n", encoding="utf-8")
    return path


REPLAY_NOTE = (
    "Splits are disjoint by prompt, so every validation and test prompt is 'unseen' by the training "
    "counts that define head, torso and tail (`rlft.data.buckets`); repeated traffic is evaluated by "
    "the traffic replay (`rlft.eval.replay`, `eval.replay=N`), which draws repeats from train in "
    "proportion to `count` and new prompts from a held-out split with the Good-Turing probability "
    "n1/N of the train split."
)

ZIPF_NOTE = (
    "**Synthetic counts** (not observed traffic). The source has no traffic signal, so `count` follows a Zipf traffic model: the prompts of all "
    "three splits are ranked 1..N by the sha256 of `\"{seed}:\" + prompt` (a seeded permutation), and "
    "`count = max(1, round(C / rank**{exponent}))` with seed {seed}, C = {scale:g} and exponent "
    "{exponent}. Test and validation rows get counts from the same model. Resulting head: the top "
    "{head} prompts carry half of all traffic."
)


def write_zipf_task(task: str, title: str, intro: str, splits: dict[str, list[Pair]], out_dir: Path, *,
                    seed: int, scale: float, dropped: Counter, drops_title: str, unit: str,
                    cap: int | None = None, train_cap: int | None = None, preface: str = "") -> dict[str, int]:
    """The tail of every Zipf-counted task's build: counts, snapshot, and a datasheet with a
    table of what was left out; returns rows per split."""
    zipf_counts(splits, seed, scale)
    sizes = write_snapshot(task, splits, out_dir)
    drops = [f"## {drops_title}\n"] + ([preface] if preface else []) + [f"| {unit[0]} | {unit[1]} |", "| --- | ---: |"]
    drops += [f"| {reason} | {n} |" for reason, n in dropped.most_common()]
    note = ZIPF_NOTE.format(seed=seed, scale=scale, exponent=1.1, head=head_size(splits))
    write_datasheet(out_dir, title, intro, splits, note, cap=cap, train_cap=train_cap, extra="\n".join(drops))
    return sizes


def head_size(splits: dict[str, list[Pair]], share: float = 0.5) -> int:
    """How many of the most frequent prompts make up ``share`` of the traffic."""
    counts = sorted((p.count for name in SPLITS for p in splits[name]), reverse=True)
    total, running = sum(counts), 0
    for i, c in enumerate(counts, start=1):
        running += c
        if running >= share * total:
            return i
    return len(counts)
