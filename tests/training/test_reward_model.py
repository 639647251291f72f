"""`rlft rm train`: a tiny reward model trains, exports a plain from_pretrained checkpoint, reports
held-out accuracy, resumes bit for bit, and bad data is a one-line error."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from rlft.config import load_config
from tests.conftest import write_jsonl

WORDS = "the cat sat on mat a dog ran in park hello world".split()


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    """The chosen completion ends in 'hello', the rejected one does not; every 7th pair a tie."""
    rng = random.Random(0)
    rows = []
    for i in range(48):
        body = " ".join(rng.choice(WORDS) for _ in range(3))
        rows.append({"prompt": f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}", "chosen": body + " hello",
                     "rejected": body, **({"tie": True, "rejected": body + " world"} if i % 7 == 3 else {})})
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def rm_overrides(model_dir: Path, pairs: Path, out: Path, **extra) -> list[str]:
    base = {"model.name_or_path": str(model_dir), "data.train": str(pairs), "run.output_dir": str(out),
            "data.validation_fraction": 0.25, "data.test_fraction": 0.1, "rm.batch_size": 8, "rm.epochs": 5,
            "run.steps": 4, "optim.lr": 3e-3, "run.eval_every": 0, "run.save_every": 0, "run.progress": False,
            "run.tensorboard": False, "run.device": "cpu", "run.precision": "fp32", "rm.max_length": 64}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _scores(model, tokenizer, prompts, completions):
    from rlft.models.reward_model import encode, forward_scores

    with torch.no_grad():
        return forward_scores(model.eval(), encode(tokenizer, prompts, completions, 64))


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_trains_and_exports_a_plain_sequence_classifier(tmp_path, tiny_causal_dir, pairs_file, lora_r):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlft.training.reward_model import train_reward_model

    result = train_reward_model(load_config(None, rm_overrides(tiny_causal_dir, pairs_file, tmp_path / "rm",
                                                               **{"lora.r": lora_r})))
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["tie_param"] != 1.0 for r in train)  # ties present: nu learned
    val = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in val] == [4] and 0 <= val[0]["accuracy_ci_low"] <= val[0]["pairwise_accuracy"]
    held = json.loads((result.run_dir / "eval" / "rm-validation.json").read_text())
    assert held["n"] > 0 and held["ci_low"] <= held["accuracy"] <= held["ci_high"] and held["calibration"]
    assert held["ties_model"] == "davidson" and held["tie_param"] == pytest.approx(train[-1]["tie_param"])
    # final/ loads with plain transformers and scores as the trained model (LoRA: merged, head included)
    model = AutoModelForSequenceClassification.from_pretrained(result.final_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.final_dir)
    assert model.config.num_labels == 1
    from rlft.models.reward_model import load_reward_model, score_texts

    again = load_reward_model(str(result.final_dir))
    prompts, completions = ["the cat 1", "a dog 2"], ["sat on mat hello", "sat on mat"]
    ours = score_texts(again, prompts, completions, batch_size=2, max_length=64)
    tokenizer.padding_side = "right"
    assert torch.allclose(_scores(model, tokenizer, prompts, completions), ours, atol=1e-5)
    fresh = load_reward_model(str(tiny_causal_dir))
    assert not torch.allclose(score_texts(fresh, prompts, completions, batch_size=2, max_length=64), ours)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tiny_causal_dir, pairs_file):
    from safetensors.torch import load_file

    from rlft.training.reward_model import train_reward_model

    common = {"run.steps": 4, "run.save_every": 2}
    full = train_reward_model(load_config(None, rm_overrides(tiny_causal_dir, pairs_file, tmp_path / "full", **common)))
    train_reward_model(load_config(None, rm_overrides(tiny_causal_dir, pairs_file, tmp_path / "cut",
                                                      **{**common, "run.steps": 2})))
    resumed = train_reward_model(load_config(None, rm_overrides(tiny_causal_dir, pairs_file, tmp_path / "cut",
                                                                **{**common, "run.resume": True})))
    assert resumed.step == 4
    a, b = (load_file(str(r.final_dir / "model.safetensors")) for r in (full, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def train_rows(run):
        lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"], r["tie_param"]) for r in map(json.loads, lines) if r["split"] == "train"]

    assert train_rows(full) == train_rows(resumed)  # the tie parameter and its Adam state came back too


def test_rao_kupper_and_a_bad_tie_param(tmp_path, tiny_causal_dir, pairs_file):
    from rlft.errors import RlftError
    from rlft.training.reward_model import train_reward_model

    result = train_reward_model(load_config(None, rm_overrides(tiny_causal_dir, pairs_file, tmp_path / "rk", **{
        "rm.ties": "rao_kupper", "run.steps": 2, "rm.learn_tie_param": False})))
    held = json.loads((result.run_dir / "eval" / "rm-validation.json").read_text())
    assert held["tie_param"] == pytest.approx(2.0)  # fixed theta
    with pytest.raises(RlftError, match="rm.tie_param must be > 1 for rm.ties=rao_kupper"):
        train_reward_model(load_config(None, rm_overrides(tiny_causal_dir, pairs_file, tmp_path / "bad", **{
            "rm.ties": "rao_kupper", "rm.tie_param": 0.5})))


def test_cli_rm_train_reports_bad_data_in_one_line(tmp_path, tiny_causal_dir, capsys):
    from rlft.cli import main

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b", "tie": "maybe"}])
    assert main(["rm", "train", *rm_overrides(tiny_causal_dir, bad, tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rlft: error: {bad}:1: field 'tie': must be true or false (or 1/0), got 'maybe'"
