"""The committed snapshots of the bundled tasks: files, fields, splits, counts, config."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache

import pytest

from recipes.tasks.common import SPLITS, read_snapshot
from recipes.tasks.translation import FR, LANGUAGES, _mnemonics, placeholders
from rlft.errors import RlftError
from rlft.tasks import TASKS, get_task, task_config, task_dir


@lru_cache(maxsize=None)
def rows(task: str, split: str) -> tuple[dict, ...]:
    return tuple(read_snapshot(task_dir(task) / f"{split}.jsonl.gz"))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_snapshot_rows_have_the_fields(task):
    for split in SPLITS:
        data = rows(task, split)
        assert len(data) >= 100, f"{task}/{split} has only {len(data)} rows"
        for row in data:
            assert isinstance(row["prompt"], str) and row["prompt"].strip() == row["prompt"] != ""
            refs = row["references"]
            assert isinstance(refs, list) and refs and all(isinstance(r, str) and r.strip() for r in refs)
            assert len(set(refs)) == len(refs)
            assert type(row["count"]) is int and row["count"] >= 1
            assert row["id"].startswith(f"{task}-")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_disjoint_and_unique(task):
    seen: dict[str, str] = {}
    ids = set()
    for split in SPLITS:
        for row in rows(task, split):
            assert row["prompt"] not in seen, f"{task}: prompt in {seen.get(row['prompt'])} and {split}"
            seen[row["prompt"]] = split
            ids.add(row["id"])
    assert len(ids) == len(seen)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_datasheet_reports_the_committed_counts(task):
    sheet = (task_dir(task) / "DATASHEET.md").read_text(encoding="utf-8")
    for heading in ("## Source and licence", "## Cleaning rules", "## Splits", "## Lengths", "## Counts"):
        assert heading in sheet
    for split in SPLITS:
        assert f"| {split} | {len(rows(task, split))} |" in sheet


def test_validation_and_test_are_capped():
    for task in TASKS:
        for split in ("validation", "test"):
            assert len(rows(task, split)) <= 1000
    assert len(rows("dialogue", "train")) <= 20_000


@pytest.mark.parametrize("task", sorted(LANGUAGES))
def test_translation_pairs_keep_their_placeholders(task):
    for split in SPLITS:
        for row in rows(task, split):
            for ref in row["references"]:
                assert placeholders(ref) == placeholders(row["prompt"]), row


@pytest.mark.parametrize("task", sorted(LANGUAGES))
def test_translation_counts_are_catalog_counts(task):
    data = [row for split in SPLITS for row in rows(task, split)]
    assert all(row["count"] == len(set(row["meta"]["catalogs"])) for row in data)
    assert max(row["count"] for row in data) >= 5  # messages shared by many programs exist
    assert sum(row["count"] > 1 for row in data) >= 100


def test_french_snapshot_has_no_accelerators_or_no_break_spaces_left():
    for split in SPLITS:
        for row in rows("translation_fr", split):
            assert "\xa0" not in row["prompt"] and row["prompt"] not in row["references"], row
            for ref in row["references"]:
                assert "\xa0" not in ref and "\u202f" not in ref, row
                assert not _mnemonics(FR, ref, row["prompt"]), row  # each recognized one was removed


@pytest.mark.parametrize("task", ["summarization", "dialogue", "code_summary"])
def test_zipf_counts_have_a_head_and_a_tail(task):
    counts = sorted((row["count"] for split in SPLITS for row in rows(task, split)), reverse=True)
    assert counts[0] > 100 * counts[len(counts) // 2]
    assert counts[-1] == 1


def test_snapshot_stays_small():
    total = sum(p.stat().st_size for t in TASKS for p in task_dir(t).glob("*.jsonl.gz"))
    assert total < 15e6


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_config_is_accepted_by_load_config(task):
    from rlft.config import load_config

    config = load_config(base=task_config(task))
    assert config.data.template == TASKS[task].template and "{prompt}" in config.data.template
    assert config.reward.spec == TASKS[task].reward
    assert config.eval.metric == TASKS[task].metric
    assert config.eval.language == TASKS[task].language  # the off_language monitor's target
    assert config.rollout.max_new_tokens == TASKS[task].max_new_tokens
    for split in SPLITS:
        assert (task_dir(task) / f"{split}.jsonl.gz").samefile(getattr(config.data, split))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_has_a_chat_instruction(task):
    """Chat models get an instruction saying what to write; it needs only the prompt, so
    ``rlft generate`` (prompts without the row's other columns) can render it too."""
    from rlft.data.templates import render_prompt
    from tests.tiny import tiny_chat_tokenizer

    instruction = TASKS[task].instruction
    # says what to write beside the prompt (the wording is tuned per task on validation)
    assert instruction != "{prompt}" and len(instruction.replace("{prompt}", "").split()) >= 5
    text = render_prompt("chat", "PROMPT", tiny_chat_tokenizer(), instruction)
    assert text.startswith("<|im_start|>user\n") and "PROMPT" in text and text.endswith("<|im_start|>assistant\n")
    assert task_config(task)["data"]["instruction"] == instruction


def test_unknown_task_names_the_known_ones():
    with pytest.raises(RlftError, match="did you mean 'dialogue'"):
        get_task("dialog")


def test_import_builds_nothing():
    code = ("import sys, rlft.tasks as t; t.task_config('translation'); "
            "print(sorted(m for m in sys.modules if m.startswith(('rlft.tasks.', 'recipes'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
