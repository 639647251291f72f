"""dialogue builder: contexts of up to 3 turns tagged relative to the reply."""

from __future__ import annotations

import json

from recipes.tasks.common import SPLITS, merge_duplicates, read_snapshot
from recipes.tasks.dialogue import MAX_TARGET_WORDS, build, collect, pairs_from_conversation


def msg(*texts: str, sender: str = "s") -> list[dict]:
    return [{"text": t, "sender": sender} for t in texts]


CONV = [msg("Hello", "How are you?", sender="u1"), msg("good", "you?", sender="u2"),
        msg("fine", sender="u1"), msg("cool", sender="u2"), msg("bye  now", sender="u1")]


def test_context_is_the_last_three_turns_tagged_from_the_reply():
    pairs, _ = pairs_from_conversation("c1", CONV)
    assert [p.references for p in pairs] == [["good you?"], ["fine"], ["cool"], ["bye now"]]
    assert pairs[0].prompt == "A: Hello How are you?"
    assert pairs[1].prompt == "B: Hello How are you?\nA: good you?"
    assert pairs[3].prompt == "A: good you?\nB: fine\nA: cool"  # the first turn fell out
    assert pairs[3].meta == {"conversation": "c1", "turn": 4}


def test_long_replies_dropped_and_long_context_clipped():
    long_turn = " ".join(f"w{i}" for i in range(MAX_TARGET_WORDS + 30))
    pairs, dropped = pairs_from_conversation("c", [msg("hi"), msg(long_turn), msg("ok then")])
    assert dropped[f"reply over {MAX_TARGET_WORDS} words"] == 1
    assert [p.references for p in pairs] == [["ok then"]]
    context = pairs[0].prompt.splitlines()
    assert context[0] == "B: hi" and context[1].startswith("A: ... w")
    assert context[1].endswith(f"w{MAX_TARGET_WORDS + 29}") and len(context[1].split()) == 52


def test_build_merges_openers_and_caps_train(tmp_path):
    data = {f"conv{i}": {"messages": [msg("Hi!"), msg(f"reply {i % 3}"), msg(f"topic {i}"), msg(f"answer {i}")]}
            for i in range(200)}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    pairs, _ = collect(path)
    assert len(pairs) == 600
    opener = next(p for p in merge_duplicates(pairs) if p.prompt == "A: Hi!")
    assert opener.count == 200 and opener.references == ["reply 0", "reply 1", "reply 2"]
    sizes = build(tmp_path / "out", path=path, cap=10, train_cap=50)
    assert sizes["train"] == 50 and sizes["validation"] <= 10 and sizes["test"] <= 10
    rows = [r for s in SPLITS for r in read_snapshot(tmp_path / "out" / f"{s}.jsonl.gz")]
    assert len({r["prompt"] for r in rows}) == len(rows) == sum(sizes.values())
    assert all(r["count"] >= 1 for r in rows)


def test_split_by_conversation_keeps_held_out_replies_out_of_train_contexts(tmp_path):
    data = {f"conv{i}": {"messages": [msg(f"open {i}"), msg(f"second {i}"), msg(f"third {i}"), msg(f"fourth {i}")]}
            for i in range(400)}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    build(tmp_path / "out", path=path, cap=1000)
    rows = {s: list(read_snapshot(tmp_path / "out" / f"{s}.jsonl.gz")) for s in SPLITS}
    assert rows["test"] and rows["validation"]
    train_turns = {line[3:] for r in rows["train"] for line in r["prompt"].splitlines()}
    for name in ("validation", "test"):
        for row in rows[name]:
            assert row["references"][0] not in train_turns
    sheet = (tmp_path / "out" / "DATASHEET.md").read_text()
    assert "0 of" in sheet and "by conversation" in sheet
