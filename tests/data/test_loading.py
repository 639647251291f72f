"""Reading every supported format, validation errors and duplicate merging."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from rlft.config import DataConfig
from rlft.data.loading import iter_rows, load_examples, rows_to_examples
from rlft.errors import RlftError

CFG = DataConfig()
RECORDS = [
    {"prompt": "What is 2+2?", "reference": "4", "id": "q1", "topic": "math"},
    {"prompt": "Capital of France?", "references": ["Paris", "paris"], "topic": "geo"},
    {"prompt": "What is 2+2?", "reference": "four", "count": 3},
]


def write_jsonl(path, records, raw_lines=()):
    lines = [json.dumps(r) for r in records] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def load(path, cfg=CFG):
    return load_examples(str(path), cfg)


def error_of(path, cfg=CFG) -> str:
    with pytest.raises(RlftError) as info:
        load(path, cfg)
    return str(info.value)


# ---------------------------------------------------------------------------- formats


def test_jsonl_merges_duplicates_and_keeps_meta(tmp_path):
    examples = load(write_jsonl(tmp_path / "train.jsonl", RECORDS))
    assert [e.prompt for e in examples] == ["What is 2+2?", "Capital of France?"]
    first, second = examples
    assert first.references == ("4", "four")
    assert first.count == 4.0  # 1 (no count) + 3
    assert first.id == "q1"
    assert first.meta == {"topic": "math"}
    assert second.references == ("Paris", "paris")
    assert second.id == "train.jsonl:2"
    assert second.count == 1.0


def test_jsonl_line_numbers_skip_empty_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('\n{"prompt": "a", "reference": "x"}\n\n  \n{"prompt": "b", "reference": "y"}\n')
    assert [line for line, _ in iter_rows(str(path))] == [2, 5]
    assert [e.id for e in load(path)] == ["t.jsonl:2", "t.jsonl:5"]


def test_jsonl_gz(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in RECORDS:
            f.write(json.dumps(r) + "\n")
    examples = load(path)
    assert len(examples) == 2 and examples[0].count == 4.0


def test_csv_line_numbers_with_multiline_quoted_field(tmp_path):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "reference", "count"])
        writer.writerow(["first\nspans\nthree lines", "r1", "2"])  # lines 2-4
        writer.writerow(["second", "r2", ""])  # line 5
        writer.writerow(["third", "r3", "5.0"])  # line 6
    rows = list(iter_rows(str(path)))
    assert [line for line, _ in rows] == [2, 5, 6]
    examples = load(path)
    assert examples[0].prompt == "first\nspans\nthree lines"
    assert [e.count for e in examples] == [2.0, 1.0, 5.0]
    assert [e.id for e in examples] == ["train.csv:2", "train.csv:5", "train.csv:6"]


def test_csv_error_reports_record_start_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('prompt,reference\n"multi\nline",ok\nfine,\n', encoding="utf-8")
    assert error_of(path) == f"{path}:4: field 'reference': empty reference"


def test_csv_gz_and_json_list_references(tmp_path):
    path = tmp_path / "train.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "references"])
        writer.writerow(["p", json.dumps(["a", "b"])])
    assert load(path)[0].references == ("a", "b")


def test_csv_wrong_column_count(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("prompt,reference\na,b,c\n", encoding="utf-8")
    message = error_of(path)
    assert "ragged.csv:2:" in message and "expected 2 columns" in message


def test_parquet_streams_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 2500  # more than one 1024-row batch
    table = pa.table({"prompt": [f"p{i}" for i in range(n)], "reference": [f"r{i}" for i in range(n)],
                      "count": list(range(1, n + 1))})
    path = tmp_path / "train.parquet"
    pq.write_table(table, path, row_group_size=700)
    rows = list(iter_rows(str(path)))
    assert [line for line, _ in rows] == list(range(1, n + 1))
    examples = load(path)
    assert len(examples) == n
    assert examples[1500].prompt == "p1500" and examples[1500].count == 1501.0
    assert examples[1500].id == "train.parquet:1501"


def test_parquet_null_reference_falls_back_to_references(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"prompt": ["a", "b"], "reference": ["x", None], "references": [None, ["y", "z"]]})
    path = tmp_path / "mixed.parquet"
    pq.write_table(table, path)
    assert [e.references for e in load(path)] == [("x",), ("y", "z")]


def test_datasets_directory_dataset_and_dict(tmp_path):
    import datasets

    train = datasets.Dataset.from_list([{"prompt": "a", "reference": "x"}, {"prompt": "b", "reference": "y"}])
    other = datasets.Dataset.from_list([{"prompt": "c", "reference": "z"}])
    train.save_to_disk(str(tmp_path / "plain"))
    datasets.DatasetDict({"train": train, "dev": other}).save_to_disk(str(tmp_path / "dict"))

    assert [e.prompt for e in load(tmp_path / "plain")] == ["a", "b"]
    assert [e.id for e in load(tmp_path / "plain")] == ["plain:1", "plain:2"]
    assert [e.prompt for e in load(tmp_path / "dict")] == ["a", "b"]
    assert [e.prompt for e in load(tmp_path / "dict", DataConfig(hub_split="dev"))] == ["c"]
    message = error_of(tmp_path / "dict", DataConfig(hub_split="nope"))
    assert "no split 'nope'" in message and "dev" in message and "data.hub_split" in message


def test_hub_name_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list([{"prompt": "hub prompt", "reference": "r"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_examples("some-org/some-data", DataConfig(hub_split="validation"))
    assert calls == [("some-org/some-data", "validation")]
    assert examples[0].prompt == "hub prompt" and examples[0].id == "some-data:1"


def test_hub_failure_is_one_line_error(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError("Couldn't reach the Hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RlftError, match=r"^squad: could not load hub dataset split 'train' \(Couldn't reach the Hub\)$"):
        load_examples("squad", CFG)


@pytest.mark.parametrize("source", ["missing.jsonl", "./nope", "data/absent.csv"])
def test_missing_local_path(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(RlftError, match="no such file or directory"):
        list(iter_rows(source))


def test_mistyped_path_under_existing_folder_is_not_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(RlftError, match="^data/train: no such file or directory$"):
        list(iter_rows("data/train"))


def test_unknown_suffix_lists_formats(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_text("x")
    message = error_of(path)
    assert "unsupported format" in message
    for suffix in (".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".parquet"):
        assert suffix in message


def test_not_a_datasets_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "not a `datasets` directory" in error_of(tmp_path / "empty")


# ---------------------------------------------------------------------------- bad rows


def test_malformed_json_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", RECORDS[:2], raw_lines=['{"prompt": "x" "reference": "y"}'])
    message = error_of(path)
    assert message.startswith(f"{path}:3: malformed JSON (Expecting ',' delimiter")
    assert "\n" not in message


def test_json_line_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [], raw_lines=['["a", "b"]'])
    assert error_of(path) == f"{path}:1: expected a JSON object, got an array"


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"prompt": "caf\u00e9", "reference": "x"}\n'.encode("latin-1"))
    assert "not UTF-8" in error_of(path)


@pytest.mark.parametrize("record, expected", [
    ({"reference": "x"}, "field 'prompt': missing"),
    ({"prompt": None, "reference": "x"}, "field 'prompt': missing"),
    ({"prompt": "   ", "reference": "x"}, "field 'prompt': empty"),
    ({"prompt": 42, "reference": "x"}, "field 'prompt': must be a string"),
    ({"prompt": "p"}, "no reference; expected field 'reference'"),
    ({"prompt": "p", "reference": ""}, "field 'reference': empty reference"),
    ({"prompt": "p", "reference": ["ok", " "]}, "field 'reference': empty reference"),
    ({"prompt": "p", "references": ["ok", ""]}, "field 'references': empty reference"),
    ({"prompt": "p", "reference": 3}, "field 'reference': must be a string or a list of strings"),
    ({"prompt": "p", "references": []}, "field 'references': no references"),
])
def test_bad_row_errors(tmp_path, record, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], record])
    message = error_of(path)
    assert message.startswith(f"{path}:2: ")
    assert expected in message


def test_missing_reference_names_both_fields():
    cfg = DataConfig(reference_field="answer", references_field="answers")
    with pytest.raises(RlftError) as info:
        rows_to_examples([(7, {"prompt": "p", "reference": "wrong column"})], cfg, "d.jsonl")
    message = str(info.value)
    assert message.startswith("d.jsonl:7:") and "'answer'" in message and "'answers'" in message


@pytest.mark.parametrize("value, ok", [
    (5, 5.0), (5.0, 5.0), ("7", 7.0), (5.5, None), (0, None), (-2, None), (True, None), ("abc", None),
    (float("nan"), None), ([1], None),
])
def test_count_validation(value, ok):
    rows = [(4, {"prompt": "p", "reference": "r", "count": value})]
    if ok is None:
        with pytest.raises(RlftError) as info:
            rows_to_examples(rows, CFG, "c.jsonl")
        assert str(info.value).startswith("c.jsonl:4: field 'count': must be a positive integer")
    else:
        assert rows_to_examples(rows, CFG, "c.jsonl")[0].count == ok


@pytest.mark.parametrize("value, ok", [(0.25, 0.25), (2, 2.0), (0, None), (-0.5, None), (False, None), ("x", None)])
def test_weight_validation(value, ok):
    rows = [(9, {"prompt": "p", "reference": "r", "weight": value})]
    if ok is None:
        with pytest.raises(RlftError, match=r"^w\.jsonl:9: field 'weight': must be a positive number"):
            rows_to_examples(rows, CFG, "w.jsonl")
    else:
        assert rows_to_examples(rows, CFG, "w.jsonl")[0].count == ok


def test_empty_dataset(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert error_of(path) == f"{path}: no examples"


def test_duplicate_id_for_different_prompts(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"prompt": "a", "reference": "x", "id": 1},
                                                {"prompt": "b", "reference": "y", "id": 1}])
    message = error_of(path)
    assert message.startswith(f"{path}:2: field 'id': duplicate id '1' (first at line 1)")


# ---------------------------------------------------------------------------- configuration


def test_configurable_field_names(tmp_path):
    cfg = DataConfig(prompt_field="question", reference_field="answer", references_field="answers",
                     id_field="qid", count_field="freq")
    records = [
        {"question": "q", "answers": ["a1", "a2"], "qid": "x-1", "freq": 2, "prompt": "a column, not the prompt"},
        {"question": "q", "answer": "a3", "freq": 4},
        {"question": "r", "answer": "b", "weight": 0.5},
    ]
    first, second = load(write_jsonl(tmp_path / "qa.jsonl", records), cfg)
    assert first.prompt == "q" and first.id == "x-1" and first.count == 6.0
    assert first.references == ("a1", "a2", "a3")
    assert first.meta == {"prompt": "a column, not the prompt"}
    assert second.count == 0.5


def test_merge_unions_references_in_first_seen_order():
    rows = [(1, {"prompt": "p", "references": ["b", "a"]}), (2, {"prompt": "p", "reference": ["a", "c"]}),
            (3, {"prompt": "p", "reference": "b", "id": "late"})]
    (ex,) = rows_to_examples(rows, CFG, "m.jsonl")
    assert ex.references == ("b", "a", "c")
    assert ex.count == 3.0
    assert ex.id == "m.jsonl:1"


def test_meta_values_are_json_serializable():
    import datetime

    rows = [(1, {"prompt": "p", "reference": "r", "when": datetime.date(2024, 1, 2), "tags": ["x"]})]
    (ex,) = rows_to_examples(rows, CFG, "m.jsonl")
    assert ex.meta == {"when": "2024-01-02", "tags": ["x"]}
    json.dumps(ex.meta)


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    (tmp_path / "saved").mkdir()
    with pytest.raises(RlftError, match=r"needs the 'datasets' package; pip install 'rlft\[data\]'"):
        load(tmp_path / "saved")


def test_traffic_log_normalized_repeats_merge(tmp_path):
    from rlft.config import DataConfig
    from rlft.data.loading import load_examples

    log = tmp_path / "log.jsonl"
    log.write_text('{"prompt": "Error 404 at  line 12", "reference": "a"}\n'
                   '{"prompt": "error 500 at line 7", "reference": "b"}\n'
                   '{"prompt": "Other", "reference": "c"}\n'
                   '{"prompt": "error 404 at line 12", "reference": "a"}\n', encoding="utf-8")
    exact = load_examples(str(log), DataConfig())
    assert [e.count for e in exact] == [1, 1, 1, 1]
    merged = load_examples(str(log), DataConfig(), normalize=True)
    assert [(e.prompt, e.count, e.references) for e in merged] == [
        ("Error 404 at  line 12", 3, ("a", "b")), ("Other", 1, ("c",))]
