"""The labeling database: hashed secrets, queues with k annotators and gold, undo, export, durability."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from rlft.label import auth
from rlft.label.export import export, preference_rows
from rlft.label.sources import load_candidates
from rlft.label.store import Conflict, Store
from rlft.errors import RlftError
from tests.label.label_fixtures import ITEMS, make_db


def test_tokens_are_stored_as_salted_scrypt_hashes(tmp_path):
    tokens = make_db(tmp_path / "l.db")
    stored = sqlite3.connect(tmp_path / "l.db").execute("SELECT name, secret_hash FROM annotators").fetchall()
    for name, hashed in stored:
        assert tokens[name] not in hashed and hashed.startswith("scrypt$16384$8$1$")
        assert auth.verify_secret(tokens[name], hashed) and not auth.verify_secret(tokens[name] + "x", hashed)
    assert len({h.split("$")[4] for _, h in stored}) == 3  # a salt each
    assert not auth.verify_secret("x", "plain") and not auth.verify_secret("x", "md5$1$1$1$00$00")
    assert auth.hash_secret("t", salt=b"s" * 16) == auth.hash_secret("t", salt=b"s" * 16)


def test_login_makes_a_session_stored_only_as_a_hash(tmp_path):
    tokens = make_db(tmp_path / "l.db")
    store = Store(tmp_path / "l.db")
    assert store.login("alice", "wrong") is None and store.login("nobody", tokens["alice"]) is None
    sid, session = store.login("alice", tokens["alice"])
    assert session.annotator.name == "alice" and not session.annotator.admin and len(session.csrf) >= 40
    keys = [k for (k,) in store.db.execute("SELECT key FROM sessions")]
    assert keys == [auth.session_key(sid)] and sid not in keys
    assert store.session(sid).annotator.name == "alice" and store.session(sid + "x") is None
    store.logout(sid)
    assert store.session(sid) is None


def test_queue_gives_each_item_to_k_annotators_and_gold_to_everyone(tmp_path):
    make_db(tmp_path / "l.db", k=1)
    store = Store(tmp_path / "l.db")
    ada, alice, bob = (a.id for a in store.annotators())
    first = store.next_item(alice)
    store.judge(alice, first.id, "skip")                 # a skip does not count towards k
    assert store.next_item(bob).id == first.id
    store.judge(bob, first.id, "a")                      # now it has its k = 1 judgement
    assert store.item_for(ada, first.id) is None and store.next_item(ada).id != first.id
    with pytest.raises(Conflict):
        store.judge(ada, first.id, "b")
    for it in ITEMS[1:]:
        item_id = store.next_item(alice).id
        store.judge(alice, item_id, "b")
    gold = store.db.execute("SELECT id FROM items WHERE gold IS NOT NULL").fetchone()[0]
    assert store.next_item(bob).id == gold               # judged by alice, but gold goes to everyone
    assert store.progress(alice) == (4, 4) and store.progress(bob) == (1, 2)


def test_one_live_judgement_per_item_and_undo_reopens_only_ones_own(tmp_path):
    make_db(tmp_path / "l.db")
    store = Store(tmp_path / "l.db")
    _, alice, bob = (a.id for a in store.annotators())
    item = store.next_item(alice)
    store.judge(alice, item.id, "a", "shorter")
    with pytest.raises(Conflict):
        store.judge(alice, item.id, "b")
    with pytest.raises(sqlite3.IntegrityError):          # the index holds even past the check
        store.db.execute("INSERT INTO judgements (item_id, annotator_id, choice, left_side, created) "
                         "VALUES (?, ?, 'b', 'a', 0)", (item.id, alice))
    assert store.undo(bob) is None                       # bob has nothing to undo; alice's stays
    assert [j.choice for j in store.judgements()] == ["a"]
    assert store.undo(alice) == item.id and store.judgements() == []
    assert store.item_for(alice, item.id) == item
    store.judge(alice, item.id, "tie")
    assert [(j.annotator, j.choice, j.reason) for j in store.judgements()] == [("alice", "tie", "")]
    assert store.counts()["undone"] == 1
    with pytest.raises(ValueError, match="unknown choice"):
        store.judge(alice, item.id, "left")


def test_sides_are_stable_per_annotator_and_item_and_vary(tmp_path):
    make_db(tmp_path / "l.db")
    store = Store(tmp_path / "l.db")
    sides = [store.left_side(a, i) for a in range(1, 4) for i in range(1, 40)]
    assert sides == [store.left_side(a, i) for a in range(1, 4) for i in range(1, 40)]
    assert 20 < sides.count("a") < 97                     # both sides, neither one always


def test_export_writes_the_preference_fields(tmp_path):
    make_db(tmp_path / "l.db")
    store = Store(tmp_path / "l.db")
    _, alice, bob = (a.id for a in store.annotators())
    for who, choices in ((alice, ["a", "b", "tie", "both_bad"]), (bob, ["skip", "b"])):
        for choice in choices:
            store.judge(who, store.next_item(who).id, choice)
    assert export(store, tmp_path / "prefs.jsonl") == 4
    rows = [json.loads(x) for x in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    ls, cp, rm = ITEMS[0], ITEMS[1], ITEMS[2]
    assert rows == [
        {"prompt": ls["prompt"], "chosen": ls["a"], "rejected": ls["b"], "tie": False, "annotator": "alice"},
        {"prompt": cp["prompt"], "chosen": cp["b"], "rejected": cp["a"], "tie": False, "annotator": "alice"},
        {"prompt": rm["prompt"], "chosen": rm["a"], "rejected": rm["b"], "tie": True, "annotator": "alice"},
        {"prompt": cp["prompt"], "chosen": cp["b"], "rejected": cp["a"], "tie": False, "annotator": "bob"}]
    assert preference_rows([]) == []
    preferences = pytest.importorskip("rlft.data.preferences")  # `rlft rm train`'s reader takes it as it is
    pairs = preferences.load_pairs(str(tmp_path / "prefs.jsonl"))
    assert [(p.tie, p.annotator) for p in pairs] == [(False, "alice"), (False, "alice"), (True, "alice"), (False, "bob")]


def test_candidates_file_reads_a_b_or_outputs_and_names_bad_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "p", "a": "x", "b": "y", "gold": "a", "id": 7}\n'
                    '{"prompt": "q", "outputs": ["u", "v", "w"]}\n{"prompt": "r", "outputs": ["s", "s"]}\n')
    items, same = load_candidates(str(path))
    assert same == 1 and [(i["key"], i["a"], i["b"], i["gold"]) for i in items] == [("7", "x", "y", "a"),
                                                                                    (items[1]["key"], "u", "v", None)]
    for line, message in (('{"prompt": "p", "a": "x"}', "c.jsonl:1: field 'b': must be a non-empty string, missing"),
                          ('{"prompt": "p", "a": "x", "b": 3}', "field 'b': must be a non-empty string, got int"),
                          ('{"prompt": "p", "a": "x", "b": "y", "gold": "A"}', "field 'gold': must be one of"),
                          ('{"prompt": "p", "outputs": ["x"]}', "field 'outputs': must be a list of at least two"),
                          ('{"prompt": "p", "a": "x", "b": "' + "y" * 20_001 + '"}', "20001 characters")):
        path.write_text(line + "\n")
        with pytest.raises(RlftError, match=message.replace("(", r"\(")):
            load_candidates(str(path))


_WRITER = """
import os, signal, sys
from rlft.label.store import Store
store = Store(sys.argv[1])
_, alice, _ = (a.id for a in store.annotators())
store.judge(alice, store.next_item(alice).id, "b", "killed right after")
os.kill(os.getpid(), signal.SIGKILL)   # no close, no checkpoint: the WAL alone holds it
"""


def test_a_judgement_survives_the_process_being_killed_after_commit(tmp_path):
    make_db(tmp_path / "l.db")
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path / "l.db")], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.getsize(tmp_path / "l.db-wal") > 0
    assert [(j.annotator, j.choice, j.reason) for j in Store(tmp_path / "l.db").judgements()] == \
        [("alice", "b", "killed right after")]
