"""Hash splits: deterministic, disjoint, roughly the asked fractions; held-out files win over train."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlft.config import DataConfig
from rlft.data.example import Example
from rlft.data.splits import hash_fraction, load_splits, split_examples
from rlft.errors import RlftError

N = 2000
EXAMPLES = [Example(prompt=f"synthetic prompt number {i}", references=(f"r{i}",), id=str(i)) for i in range(N)]


def write_jsonl(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p, "reference": "r"}) + "\n" for p in prompts))
    return str(path)


def test_hash_fraction_is_stable_across_processes():
    code = "from rlft.data.splits import hash_fraction; print(repr(hash_fraction('héllo')))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert float(other) == hash_fraction("héllo")
    assert 0.0 <= hash_fraction("") < 1.0
    assert hash_fraction("a") != hash_fraction("b")


def test_split_fractions_disjoint_and_order_preserving():
    splits = split_examples(EXAMPLES, validation_fraction=0.1, test_fraction=0.2)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) == N
    # Binomial std at N=2000 is ~13 for p=0.1 and ~18 for p=0.2; allow ~4 sigma.
    assert abs(sizes["validation"] - 200) < 55
    assert abs(sizes["test"] - 400) < 70
    ids = [{e.id for e in v} for v in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for part in splits.values():
        positions = [int(e.id) for e in part]
        assert positions == sorted(positions)


def test_split_is_deterministic_and_independent_of_other_rows():
    full = split_examples(EXAMPLES, 0.1, 0.1)
    again = split_examples(EXAMPLES, 0.1, 0.1)
    assert full == again
    subset = split_examples(EXAMPLES[::3], 0.1, 0.1)
    for name in full:
        assert [e.id for e in subset[name]] == [e.id for e in full[name] if int(e.id) % 3 == 0]


def test_split_thresholds_follow_the_hash():
    splits = split_examples(EXAMPLES, 0.15, 0.05)
    assert all(hash_fraction(e.prompt) < 0.05 for e in splits["test"])
    assert all(0.05 <= hash_fraction(e.prompt) < 0.2 for e in splits["validation"])
    assert all(hash_fraction(e.prompt) >= 0.2 for e in splits["train"])


@pytest.mark.parametrize("val, test", [(0.6, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_bad_fractions(val, test):
    with pytest.raises(RlftError, match="fraction"):
        split_examples(EXAMPLES, val, test)


def test_load_splits_carves_both_from_train(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [e.prompt for e in EXAMPLES[:500]])
    splits = load_splits(DataConfig(train=train, validation_fraction=0.1, test_fraction=0.1))
    assert sum(map(len, splits.values())) == 500
    assert splits["validation"] and splits["test"]
    expected = split_examples(EXAMPLES[:500], 0.1, 0.1)
    assert [e.prompt for e in splits["test"]] == [e.prompt for e in expected["test"]]


def test_given_validation_file_and_leakage_removed_from_train(tmp_path):
    prompts = [e.prompt for e in EXAMPLES[:300]]
    train = write_jsonl(tmp_path / "train.jsonl", prompts)
    val = write_jsonl(tmp_path / "val.jsonl", prompts[:7] + ["only in validation"])
    cfg = DataConfig(train=train, validation=val, validation_fraction=0.5, test_fraction=0.1)
    with pytest.warns(UserWarning, match=r"dropped 7 prompt\(s\) that also appear in data\.validation"):
        splits = load_splits(cfg)
    assert [e.prompt for e in splits["validation"]] == prompts[:7] + ["only in validation"]
    train_prompts = {e.prompt for e in splits["train"]}
    assert not train_prompts & set(prompts[:7])
    # Only test was carved (validation_fraction ignored): train keeps ~90% of the rest.
    carved = split_examples(EXAMPLES[7:300], 0.0, 0.1)
    assert [e.prompt for e in splits["test"]] == [e.prompt for e in carved["test"]]
    assert len(splits["train"]) == len(carved["train"])


def test_given_validation_and_test(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ["a", "b", "c"])
    val = write_jsonl(tmp_path / "val.jsonl", ["v", "t"])
    test = write_jsonl(tmp_path / "test.jsonl", ["t", "c"])
    with pytest.warns(UserWarning) as record:
        splits = load_splits(DataConfig(train=train, validation=val, test=test))
    assert [e.prompt for e in splits["train"]] == ["a", "b"]
    assert [e.prompt for e in splits["validation"]] == ["v"]
    assert [e.prompt for e in splits["test"]] == ["t", "c"]
    assert len(record) == 2


def test_max_examples_caps_train(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [e.prompt for e in EXAMPLES[:200]])
    full = load_splits(DataConfig(train=train))
    capped = load_splits(DataConfig(train=train, max_examples=10))
    assert capped["train"] == full["train"][:10]
    assert capped["validation"] == full["validation"]
    with pytest.raises(RlftError, match="data.max_examples"):
        load_splits(DataConfig(train=train, max_examples=0))


def test_no_train_given():
    with pytest.raises(RlftError, match=r"^data\.train: no training data given; set data\.task or data\.train$"):
        load_splits(DataConfig())


def test_paths_resolve_against_task_dir(tmp_path, monkeypatch):
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    write_jsonl(task_dir / "train.jsonl", ["x", "y"])
    write_jsonl(task_dir / "test.jsonl", ["z"])
    monkeypatch.chdir(tmp_path)
    splits = load_splits(DataConfig(train="train.jsonl", test="test.jsonl", validation_fraction=0.0),
                         task_dir=str(task_dir))
    assert [e.prompt for e in splits["train"]] == ["x", "y"] and [e.prompt for e in splits["test"]] == ["z"]
    with pytest.raises(RlftError, match="no such file"):
        load_splits(DataConfig(train="train.jsonl"))


def test_everything_held_out_leaves_no_training_data(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ["a"])
    test = write_jsonl(tmp_path / "test.jsonl", ["a"])
    with pytest.warns(UserWarning), pytest.raises(RlftError, match="no training examples left"):
        load_splits(DataConfig(train=train, test=test, validation_fraction=0.0))
