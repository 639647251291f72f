"""The human-feedback chain through the command line, as a team would run it: judgements in the
labeling database -> `rlft label export` -> `rlft rm train` (held-out accuracy reported) ->
`rlft train reward.spec=rm:...` (a policy trained against the labels' reward model)."""

from __future__ import annotations

import json
import random

from rlft.label.store import Store
from tests.conftest import tiny_overrides
from tests.training.test_reward_model import rm_overrides

WORDS = "the cat sat on mat a dog ran in park".split()


def _label(db, n_items: int = 40) -> int:
    """Two annotators who prefer the completion that ends in 'hello' (which side it is on varies)."""
    rng = random.Random(1)
    store = Store(db)
    store.set_k(2)
    items = []
    for i in range(n_items):
        body = " ".join(rng.choice(WORDS) for _ in range(3))
        good, bad = body + " hello", body
        a, b = (good, bad) if i % 2 else (bad, good)
        items.append({"key": f"p{i}", "prompt": f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}", "a": a, "b": b,
                      "model_a": None, "model_b": None, "gold": None})
    store.add_items(items)
    for name in ("alice", "bob"):
        store.add_annotator(name)
    judged = 0
    for annotator in store.annotators():
        while (item := store.next_item(annotator.id)) is not None:
            store.judge(annotator.id, item.id, "a" if item.a.endswith("hello") else "b")
            judged += 1
    store.close()
    return judged


def test_labels_export_train_a_reward_model_that_trains_a_policy(tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    from rlft.cli import main

    db, prefs = tmp_path / "labels.db", tmp_path / "prefs.jsonl"
    judged = _label(db)
    assert judged == 80  # 40 items x k=2
    assert main(["label", "export", "--db", str(db), "--out", str(prefs)]) == 0
    rows = [json.loads(x) for x in prefs.read_text().splitlines()]
    assert len(rows) == 80 and all(r["chosen"].endswith("hello") and not r["tie"] for r in rows)
    assert {r["annotator"] for r in rows} == {"alice", "bob"}

    rm_dir = tmp_path / "rm"
    assert main(["rm", "train", *rm_overrides(tiny_causal_dir, prefs, rm_dir, **{"run.steps": 12})]) == 0
    held = json.loads((rm_dir / "eval" / "rm-validation.json").read_text())
    assert held["n"] > 0 and 0 <= held["ci_low"] <= held["accuracy"] <= held["ci_high"] <= 1
    assert "pairwise accuracy" in capsys.readouterr().out

    out = tmp_path / "policy"
    assert main(["train", *tiny_overrides(tiny_causal_dir, tiny_dataset, out,
                                         **{"reward.spec": f"rm:{rm_dir / 'final'}", "run.steps": 2})]) == 0
    train = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(r["reward"] == r["reward"] for r in train)
    assert (out / "final" / "config.json").is_file()
