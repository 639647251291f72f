"""Counting a traffic log: the one merge of repeated prompts (PromptCounter), as the loader and the
task builders use it: normalization, counts and weights, ids, order, row errors, streaming."""

import pytest

from rlft.config import DataConfig
from rlft.data.counting import PromptCounter, normalize_prompt
from rlft.data.loading import rows_to_examples
from rlft.errors import RlftError
from tests.data.traffic_fixtures import r, rows


def count(log, *, normalize=False, source="log"):
    """A traffic log through the loader, as `rlft train` reads one."""
    return rows_to_examples(log, DataConfig(), source, normalize=normalize)


def test_exact_counts_in_order_of_first_appearance():
    log = rows(r("c"), r("a"), r("b"), r("a"), r("b"), r("d"), r("c"), r("e", count=2))
    examples = count(log)
    assert [(e.prompt, e.count) for e in examples] == [("c", 2), ("a", 2), ("b", 2), ("d", 1), ("e", 2)]
    assert [e.id for e in examples] == ["log:1", "log:2", "log:3", "log:6", "log:8"]  # file name:first line


def test_count_column_and_weights_and_csv_text():
    log = rows(r("a", count=3), r("b", count="5"), r("a", count=2.0), r("c", weight=0.5), r("c", count=""),
               r("d", count=None, weight="1.5"))
    counts = {e.prompt: e.count for e in count(log)}
    assert counts == {"a": 5, "b": 5, "c": 1.5, "d": 1.5}
    assert type(counts["a"]) is int  # integer counts stay exact however long the log


def test_first_row_id_and_extra_fields_are_kept():
    log = rows(r("a", id=17, lang="en"), r("a", id=18, lang="de"), r("b"))
    a, b = count(log)
    assert (a.id, a.meta) == ("17", {"lang": "en"})
    assert b.id == "log:3"


def test_duplicate_id_for_different_prompts_is_an_error():
    with pytest.raises(RlftError, match=r"^log:3: field 'id': duplicate id 'x' \(first at line 1\) for a different"):
        count(rows(r("a", id="x"), r("a", id="x"), r("b", id="x")))


def test_unicode_prompts_and_nfkc_digits():
    assert normalize_prompt("错误 ４０４ 在第 １２ 行") == "错误 0 在第 0 行"
    assert normalize_prompt("  Error\t404\n at  LINE 12 ") == "error 0 at line 0"
    assert normalize_prompt("ＡＢＣ\u3000x") == "abc x"  # fullwidth letters, ideographic space
    log = rows(r("翻译：你好"), r("翻译：你好"), r("翻译：再见"), r("第１２行"), r("第3行"))
    plain = count(log)
    assert [(e.prompt, e.count) for e in plain] == [("翻译：你好", 2), ("翻译：再见", 1), ("第１２行", 1), ("第3行", 1)]
    merged = count(log, normalize=True)
    assert [(e.prompt, e.count) for e in merged] == [("翻译：你好", 2), ("翻译：再见", 1), ("第１２行", 2)]


def test_normalization_merges_only_when_on():
    log = rows(r("Error 404  at line 12"), r("error 500 at LINE 7"), r(" ERROR 1 at line 2\n"), r("other"))
    off = count(log)
    assert len(off) == 4 and all(e.count == 1 for e in off)
    on = count(log, normalize=True)
    assert [(e.prompt, e.count) for e in on] == [("Error 404  at line 12", 3), ("other", 1)]


def test_references_are_unioned_across_repeats_in_first_seen_order():
    log = rows(r("q", "x"), {"prompt": "q", "references": ["y", "x"]}, r("q", ["z", "y"]),
               {"prompt": "q", "references": '["w"]'}, r("other", "o"))
    q, other = count(log)
    assert q.references == ("x", "y", "z", "w")
    assert q.count == 4 and other.references == ("o",)


def test_every_row_needs_a_reference():
    with pytest.raises(RlftError, match=r"^log:2: no reference; expected field 'reference'"):
        count(rows(r("a"), {"prompt": "a"}))


@pytest.mark.parametrize("row, message", [
    ({"reference": "r"}, "field 'prompt': missing"),
    ({"prompt": 3, "reference": "r"}, "field 'prompt': must be a string"),
    ({"prompt": "  ", "reference": "r"}, "field 'prompt': empty prompt"),
    ({"prompt": "p", "reference": " "}, "field 'reference': empty reference"),
    ({"prompt": "p", "references": []}, "field 'references': no references"),
    ({"prompt": "p", "reference": ["a", 1]}, "field 'reference': must be a string or a list of strings"),
])
def test_row_errors_name_line_and_field(row, message):
    with pytest.raises(RlftError, match=f"^traffic.jsonl:2: {message}"):
        count(rows(r("ok"), row), source="traffic.jsonl")


@pytest.mark.parametrize("field, value", [
    ("count", -3), ("count", 0), ("count", 2.5), ("count", "2.5"), ("count", "abc"), ("count", True),
    ("count", float("nan")), ("weight", 0), ("weight", "abc"), ("weight", False), ("weight", float("inf")),
])
def test_invalid_counts_name_line_and_field(field, value):
    kind = "integer" if field == "count" else "number"
    with pytest.raises(RlftError, match=rf"^log.jsonl:3: field '{field}': must be a positive {kind}, got "):
        count(rows(r("a"), r("b", count=4), r("c", **{field: value})), source="log.jsonl")


def test_chunked_counter_equals_one_pass():
    prompts = ["a", "B", "b", "c  d", "e 1", "E 2", "a"]
    log = rows(*(r(prompts[i % 7], f"ref{i % 3}", count=1 + i % 4) for i in range(40)))
    for normalize in (False, True):
        counter = PromptCounter(normalize=normalize, source="log")
        for start in (0, 7, 19, 33):  # uneven chunks, as a log split across files or batches
            for line, row in log[start:start + {0: 7, 7: 12, 19: 14, 33: 7}[start]]:
                counter.add(line, row["prompt"], [row["reference"]], row["count"])
        whole = count(log, normalize=normalize)
        assert counter.examples() == whole
        assert sum(e.count for e in whole) == sum(1 + i % 4 for i in range(40))


def test_streaming_log_keeps_one_entry_per_unique_prompt():
    consumed = 0

    def log():  # a generator: the log is never materialized
        nonlocal consumed
        for i in range(200_000):
            consumed += 1
            yield i + 1, {"prompt": f"question {i % 50}", "reference": f"answer {i % 50}"}

    counter = PromptCounter()
    for line, row in log():
        counter.add(line, row["prompt"], [row["reference"]])
    assert len(counter) == 50 and consumed == 200_000
    examples = counter.examples()
    assert [e.count for e in examples] == [4000] * 50
    assert examples[0].references == ("answer 0",)


def test_loader_and_task_builders_merge_alike():
    """One merge: the task builders' `merge_duplicates` gives the loader's prompts, counts, order and
    meta; only the reference order differs (a task ranks its references by frequency)."""
    from recipes.tasks.common import Pair, merge_duplicates

    data = [("p", ["x"], 1, {"k": 1}), ("q", ["z"], 2, {"k": 2}), ("p", ["y"], 3, {"k": 3}), ("p", ["y", "w"], 1, {})]
    pairs = merge_duplicates([Pair(*d) for d in data])
    examples = count(rows(*({"prompt": p, "references": refs, "count": c, **meta} for p, refs, c, meta in data)))
    assert [(p.prompt, p.count, p.meta) for p in pairs] == [(e.prompt, e.count, e.meta) for e in examples]
    assert [p.references for p in pairs] == [["y", "x", "w"], ["z"]]
    assert [e.references for e in examples] == [("x", "y", "w"), ("z",)]
