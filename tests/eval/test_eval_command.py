"""`rlft eval`: the whole split by default, and KL to the starting model (not to a copy of itself)."""

from __future__ import annotations

import json

import pytest

from rlft.cli import main
from rlft.config import load_config
from tests.conftest import tiny_overrides


@pytest.fixture
def trained_run(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.training.loop import train

    over = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{"run.steps": 2, "optim.lr": 0.03})
    return train(load_config(None, over))


def test_eval_scores_the_whole_split_and_kl_is_to_the_starting_model(tmp_path, tiny_dataset, trained_run, capsys):
    final = trained_run.final_dir
    n_test = len(open(tiny_dataset["test"]).read().splitlines())
    over = [o for o in tiny_overrides(final, tiny_dataset, tmp_path / "eval") if not o.startswith("eval.split")]
    # eval.max_examples (4 here) bounds validation during training, not `rlft eval`
    assert main(["eval", *over, "eval.split=test", "--kl", "--tag", "changed"]) == 0
    out = capsys.readouterr().out
    assert f"examples  {n_test}" in out
    changed = json.loads((tmp_path / "eval" / "eval" / "changed.json").read_text())
    assert changed["n"] == n_test and changed["kl"] > 1e-4  # the run's starting model, from its config.yaml
    # the evaluated model as its own reference: identical, so exactly 0
    assert main(["eval", *over, "eval.split=test", "--ref", str(final), "--tag", "same"]) == 0
    same = json.loads((tmp_path / "eval" / "eval" / "same.json").read_text())
    assert same["kl"] == pytest.approx(0.0, abs=1e-7)
    assert main(["eval", *over, "eval.split=test", "--max-examples", "3", "--tag", "three"]) == 0
    assert json.loads((tmp_path / "eval" / "eval" / "three.json").read_text())["n"] == 3


def test_kl_without_a_known_starting_model_is_a_one_line_error(tmp_path, tiny_causal_dir, tiny_dataset, capsys):
    over = tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "eval")
    assert main(["eval", *over, "--kl"]) == 2
    assert "--ref PATH" in capsys.readouterr().err


def test_kl_rows_limits_the_exact_kl_to_the_first_batches(tmp_path):
    from rlft.config import load_config
    from rlft.eval.evaluate import evaluate
    from rlft.models.loading import load_reference
    from rlft.training.setup import build_parts
    from tests.conftest import tiny_overrides, write_jsonl
    from tests.tiny import tiny_causal

    data = {k: str(write_jsonl(tmp_path / f"{k}.jsonl", [{"prompt": f"{k} {w} {i}", "reference": w}
                                                          for i, w in enumerate("a b c d e f g h".split())]))
            for k in ("train", "validation", "test")}
    config = load_config(None, tiny_overrides(tiny_causal(tmp_path), data, tmp_path / "out") + ["eval.batch_size=3"])
    parts = build_parts(config)
    with_ref = load_reference(parts.policy)
    test = parts.splits["test"]
    full = evaluate(parts, test, reference=with_ref, split="test")
    part = evaluate(parts, test, reference=with_ref, split="test", kl_rows=3)
    assert full["kl_n"] == len(test) and part["kl_n"] == 3
    assert part["kl"] is not None and part["metric"] == full["metric"]
