"""Dedup, hash splits, Zipf counts and snapshot writing shared by the task builders."""

from __future__ import annotations

import pytest

from recipes.tasks.common import (Pair, head_size, merge_duplicates, read_snapshot, split_pairs,
                               unit_hash, write_snapshot, zipf_counts)


def make(n: int) -> list[Pair]:
    return [Pair(f"prompt number {i}", [f"ref {i}"]) for i in range(n)]


def test_merge_duplicates_orders_references_by_frequency():
    pairs = [Pair("p", ["x"]), Pair("q", ["z"]), Pair("p", ["y"]), Pair("p", ["y"]), Pair("p", ["w"])]
    merged = {p.prompt: p for p in merge_duplicates(pairs)}
    assert merged["p"].references == ["y", "x", "w"]
    assert merged["p"].count == 4 and merged["q"].count == 1
    assert merge_duplicates(pairs, max_refs=2)[0].references == ["y", "x"]


def test_split_is_by_hash_disjoint_and_deterministic():
    pairs = make(2000)
    splits = split_pairs(pairs)
    again = split_pairs(list(reversed(make(2000))))
    for name in splits:
        assert [p.prompt for p in splits[name]] == [p.prompt for p in again[name]]
    assert all(unit_hash(p.prompt) < 0.05 for p in splits["test"])
    assert all(0.05 <= unit_hash(p.prompt) < 0.10 for p in splits["validation"])
    sizes = {name: len(s) for name, s in splits.items()}
    assert sum(sizes.values()) == 2000 and 50 < sizes["test"] < 150 and 50 < sizes["validation"] < 150


def test_cap_moves_overflow_to_train_and_train_cap_subsamples():
    splits = split_pairs(make(2000), cap=20, train_cap=500)
    assert len(splits["test"]) == 20 and len(splits["validation"]) == 20 and len(splits["train"]) == 500
    full = split_pairs(make(2000), cap=20)
    assert len(full["train"]) == 1960
    kept = {p.prompt for p in splits["train"]}
    assert kept <= {p.prompt for p in full["train"]}


def test_split_rejects_duplicate_prompts():
    with pytest.raises(ValueError, match="unique"):
        split_pairs([Pair("a", ["x"]), Pair("a", ["y"])])


def test_zipf_counts_follow_the_formula():
    splits = split_pairs(make(300))
    zipf_counts(splits, seed=1, scale=100.0)
    counts = sorted((p.count for s in splits.values() for p in s), reverse=True)
    assert counts[:3] == [100, round(100 / 2**1.1), round(100 / 3**1.1)]
    assert counts[-1] == 1 and all(isinstance(c, int) for c in counts)
    other = split_pairs(make(300))
    zipf_counts(other, seed=2, scale=100.0)
    top = lambda s: max((p for v in s.values() for p in v), key=lambda p: p.count).prompt  # noqa: E731
    assert top(splits) != top(other)  # the seed picks which prompts are frequent


def test_head_size_is_the_smallest_set_carrying_the_share():
    counts = [1, 10, 3, 5, 1]
    splits = {"train": [Pair(str(i), ["r"], c) for i, c in enumerate(counts)], "validation": [], "test": []}
    assert head_size(splits, 0.5) == 1  # 10 of 20
    assert head_size(splits, 0.6) == 2  # 15 of 20
    assert head_size(splits, 1.0) == 5


def test_snapshot_is_byte_stable_and_round_trips(tmp_path):
    splits = split_pairs([Pair("héllo 你好", ["x", "y"], 3, {"k": 1})] + make(40))
    write_snapshot("t", splits, tmp_path / "a")
    write_snapshot("t", splits, tmp_path / "b")
    for name in splits:
        assert (tmp_path / "a" / f"{name}.jsonl.gz").read_bytes() == (tmp_path / "b" / f"{name}.jsonl.gz").read_bytes()
    rows = [r for name in splits for r in read_snapshot(tmp_path / "a" / f"{name}.jsonl.gz")]
    special = next(r for r in rows if r["prompt"] == "héllo 你好")
    assert special["references"] == ["x", "y"] and special["count"] == 3 and special["meta"] == {"k": 1}


def test_group_split_keeps_each_group_in_one_split_and_caps_whole_groups():
    pairs = [Pair(f"conv{c} turn{t}", ["r"], 1, {"conversation": f"conv{c}"}) for c in range(300) for t in range(5)]
    group = lambda p: p.meta["conversation"]  # noqa: E731
    for cap in (None, 12, 13):
        splits = split_pairs(pairs, cap=cap, group=group)
        where = {}
        for name, rows in splits.items():
            for row in rows:
                assert where.setdefault(group(row), name) == name
        assert sum(len(rows) for rows in splits.values()) == len(pairs)
        if cap:  # 5 turns per conversation: a cap of 12 or 13 keeps two whole conversations
            assert len(splits["test"]) == len(splits["validation"]) == 10
    assert split_pairs(pairs, group=group) == split_pairs(list(reversed(pairs)), group=group)
