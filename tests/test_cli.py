"""The `rlft` command: cheap --help, a tiny run end to end, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlft.cli import main
from tests.conftest import tiny_overrides


def test_help_is_cheap_and_lists_settings():
    code = ("import sys, io, contextlib\n"
            "from rlft.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try: main(['--help'])\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'tensorboard', 'matplotlib', 'datasets') if m in sys.modules]\n"
            "print(heavy); print('algo.kl_coef' in buf.getvalue())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"


def test_train_eval_generate_from_the_command_line(tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    over = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{"run.steps": 2})
    assert main(["train", *over]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    final = tmp_path / "run" / "final"
    assert (final / "model.safetensors").exists() and (tmp_path / "run" / "config.yaml").exists()
    over_eval = tiny_overrides(final, tiny_dataset, tmp_path / "ev", **{"eval.split": "test"})
    assert main(["eval", *over_eval, "--tag", "t"]) == 0
    result = json.loads((tmp_path / "ev" / "eval" / "t.json").read_text())
    # the whole split (10 prompts); eval.max_examples=4 bounds validation during training only
    assert result["split"] == "test" and result["n"] == 10 and 0 <= result["metric"] <= 100
    capsys.readouterr()
    assert main(["generate", f"model.name_or_path={final}", "data.template=reverse: {prompt} =>",
                 "rollout.max_new_tokens=4", "--prompt", "the cat"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["prompt"] == "the cat" and len(line["outputs"]) == 1


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("rlft: error: ")
    return err[-1]


def test_bad_inputs_get_one_line_errors(tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    base = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run")
    assert "did you mean 'rollout.group_size'" in _error(capsys, ["train", *base, "rollout.group_sise=4"])
    assert "unknown algorithm 'ppoo'" in _error(capsys, ["train", *base, "algo.name=ppoo"])
    assert "unknown reward 'chrff'; did you mean 'chrf'" in _error(capsys, ["train", *base, "reward.spec=chrff"])
    assert "does not exist" in _error(capsys, ["train", *base, f"model.name_or_path={tmp_path / 'nope'}"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a b c", "reference": "c b a"}\n{"prompt": "x", "reference": \n')
    msg = _error(capsys, ["train", *base, f"data.train={bad}"])
    assert "bad.jsonl:2" in msg and "malformed JSON" in msg
    empty = tmp_path / "empty_ref.jsonl"
    empty.write_text('{"prompt": "a b c", "reference": "c b a"}\n{"prompt": "x y", "reference": "  "}\n')
    msg = _error(capsys, ["train", *base, f"data.train={empty}"])
    assert "empty_ref.jsonl:2" in msg and "field 'reference'" in msg
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "a b c", "reference": "c b a"}\n')
    msg = _error(capsys, ["train", *base, f"data.train={missing}"])
    assert "missing.jsonl:1" in msg and "field 'prompt'" in msg
    msg = _error(capsys, ["train", *base, "data.max_prompt_tokens=2", "data.overlong=reject"])
    assert "longer than data.max_prompt_tokens=2" in msg
    assert not (tmp_path / "run" / "final").exists()  # nothing half-written


def test_reward_that_raises_is_skipped_then_stops(tmp_path, tiny_causal_dir, tiny_dataset, capsys, monkeypatch):
    (tmp_path / "boom.py").write_text("def reward(prompts, completions, references, **meta):\n"
                                      "    raise ValueError('scorer down')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        "reward.spec": "boom:reward", "run.skip_bad_reward_limit": 2, "data.validation": "null",
        "data.validation_fraction": 0.0})
    msg = _error(capsys, ["train", *base])
    assert "2 consecutive steps skipped" in msg and "scorer down" in msg


def test_prompt_budget_respects_the_context_window(tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    import warnings

    from rlft.config import load_config
    from rlft.training.setup import build_parts

    # the tiny model has 256 positions: 250 + 8 new tokens does not fit
    over = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{"data.max_prompt_tokens": 250})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = build_parts(load_config(None, over))
    assert parts.max_prompt_tokens == 248 and any("context window" in str(w.message) for w in caught)
    msg = _error(capsys, ["train", *over, "data.overlong=reject"])
    assert "exceeds the model's context window of 256" in msg


def test_python_api_train_is_callable_every_time(tmp_path, tiny_causal_dir, tiny_dataset):
    import rlft

    for run in ("a", "b"):  # a subpackage named like the function would shadow it after the first call
        cfg = rlft.load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / run, **{"run.steps": 1}))
        assert rlft.train(cfg).step == 1


def test_overrides_may_follow_options():
    from rlft.cli import _parse, _parser

    ns = _parse(_parser(), ["eval", "a.b=1", "--max-examples", "3", "run.seed=2", "--kl"])
    assert ns.args == ["a.b=1", "run.seed=2"] and ns.max_examples == 3 and ns.kl
    ns = _parse(_parser(), ["demo", "--base", "--quick", "run.steps=1"])
    assert ns.base and ns.quick and ns.args == ["run.steps=1"]


def test_a_stray_word_after_options_is_still_an_error(capsys):
    import pytest

    from rlft.cli import _parse, _parser

    with pytest.raises(SystemExit):
        _parse(_parser(), ["eval", "a.b=1", "--kl", "oops"])
    assert "unrecognized arguments: oops" in capsys.readouterr().err


def test_python_dash_m_rlft_is_the_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "rlft", "tasks"], capture_output=True, text=True, check=True)
    assert "summarization" in out.stdout and "translation_fr" in out.stdout


def test_subcommands_are_the_table_and_dispatch_through_it(monkeypatch):
    import argparse
    import dataclasses

    from rlft import cli

    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(cli.COMMANDS)
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "tasks", dataclasses.replace(cli.COMMANDS["tasks"],
                                                                   run=lambda ns: seen.append(ns.args) or 7))
    assert cli.main(["tasks", "run.seed=1"]) == 7 and seen == [["run.seed=1"]]
