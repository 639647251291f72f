"""Preference pairs: reading, the errors that name file, line and field, and the prompt-hash split."""

from __future__ import annotations

import pytest

from rlft.config import DataConfig
from rlft.data.preferences import load_pair_splits, load_pairs
from rlft.errors import RlftError
from tests.conftest import write_jsonl


def row(**kw):
    return {"prompt": "p", "chosen": "good", "rejected": "bad", **kw}


def test_reads_optional_fields_and_csv(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [row(), row(tie=True), row(margin=0.5, annotator="ann-1"), row(tie=0)])
    pairs = load_pairs(str(path))
    assert [(p.tie, p.margin, p.annotator) for p in pairs] == [(False, 0.0, None), (True, 0.0, None),
                                                               (False, 0.5, "ann-1"), (False, 0.0, None)]
    assert pairs[1].id == f"{path}:2"
    csv = tmp_path / "p.csv"
    csv.write_text("prompt,chosen,rejected,tie,margin\np,a,b,true,\np,a,b,,1.5\n", encoding="utf-8")
    assert [(p.tie, p.margin) for p in load_pairs(str(csv))] == [(True, 0.0), (False, 1.5)]


@pytest.mark.parametrize("bad, message", [
    ({"chosen": None}, "p.jsonl:2: field 'chosen': missing"),
    ({"chosen": "  "}, "p.jsonl:2: field 'chosen': empty"),
    ({"rejected": 3}, "p.jsonl:2: field 'rejected': must be a string, got int"),
    ({"tie": "maybe"}, "p.jsonl:2: field 'tie': must be true or false (or 1/0), got 'maybe'"),
    ({"tie": 2}, "p.jsonl:2: field 'tie': must be true or false"),
    ({"margin": -1}, "p.jsonl:2: field 'margin': must be a non-negative number, got -1"),
    ({"margin": "x"}, "p.jsonl:2: field 'margin': must be a non-negative number"),
    ({"tie": True, "margin": 1.0}, "p.jsonl:2: field 'margin': a tie has no margin"),
    ({"rejected": "good"}, "p.jsonl:2: field 'rejected': the same text as 'chosen'"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad, message):
    r = row(**bad)
    r = {k: v for k, v in r.items() if v is not None}
    path = write_jsonl(tmp_path / "p.jsonl", [row(), r])
    with pytest.raises(RlftError) as err:
        load_pairs(str(path))
    assert message in str(err.value)


def test_splits_keep_each_prompt_in_one_split(tmp_path):
    rows = [row(prompt=f"prompt {i}", chosen=f"a{j}", rejected=f"b{j}") for i in range(40) for j in range(2)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    splits = load_pair_splits(DataConfig(train=str(path), validation_fraction=0.25, test_fraction=0.25))
    prompts = {name: {p.prompt for p in pairs} for name, pairs in splits.items()}
    assert all(prompts[name] for name in prompts)
    assert not (prompts["train"] & prompts["validation"]) and not (prompts["train"] & prompts["test"])
    assert sum(map(len, splits.values())) == 80
    with pytest.raises(RlftError, match="data.train: no preference data"):
        load_pair_splits(DataConfig())


def test_pairs_from_a_hash_carved_prompt_split_still_reach_every_split(tmp_path):
    from rlft.data.splits import hash_fraction

    # training prompts of a split carved by the unsalted hash: every one of them has h >= 0.3
    prompts = [p for p in (f"prompt {i}" for i in range(400)) if hash_fraction(p) >= 0.3][:60]
    path = write_jsonl(tmp_path / "p.jsonl", [row(prompt=p) for p in prompts])
    splits = load_pair_splits(DataConfig(train=str(path), validation_fraction=0.2, test_fraction=0.1))
    assert splits["validation"] and splits["test"] and splits["train"]
