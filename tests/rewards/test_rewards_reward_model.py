"""A reward model as a reward: `rm:PATH` in a spec, batched scoring, the running normalization
and its checkpointing, and an RL run with it that resumes bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlft.config import load_config
from rlft.rewards import build_reward, score
from rlft.rewards.registry import parse_spec, stateful_terms
from rlft.rewards.reward_model import RunningMoments
from tests.conftest import tiny_overrides


@pytest.fixture
def rm_dir(tmp_path, tiny_causal_dir) -> Path:
    """A tiny reward model: the tiny Llama with a seeded scalar head, saved as a sequence classifier."""
    from rlft.models.reward_model import load_reward_model

    torch.manual_seed(0)
    rm = load_reward_model(str(tiny_causal_dir))
    with torch.no_grad():
        rm.model.score.weight.mul_(20.0)  # spread the scores so normalization has something to do
    rm.model.save_pretrained(tmp_path / "rm")
    rm.tokenizer.save_pretrained(tmp_path / "rm")
    return tmp_path / "rm"


def test_spec_names_a_reward_model_by_path():
    assert parse_spec("0.5*rm:runs/rm-v2/final + 0.5*rouge_l") == [(0.5, "rm:runs/rm-v2/final"), (0.5, "rouge_l")]
    assert parse_spec("rm:/abs/path - 0.1*length_penalty") == [(1.0, "rm:/abs/path"), (-0.1, "length_penalty")]


def test_running_moments_match_the_whole_sample():
    values = [0.5, -1.0, 2.0, 3.5, 0.0, 1.25, -2.0]
    m = RunningMoments()
    for part in (values[:3], values[3:4], values[4:]):
        m.update(part)
    whole = torch.tensor(values, dtype=torch.float64)
    assert m.count == 7 and m.mean == pytest.approx(whole.mean().item())
    assert m.std == pytest.approx(whole.std(unbiased=False).item())
    again = RunningMoments()
    again.load_state_dict(json.loads(json.dumps(m.state_dict())))
    assert again.state_dict() == m.state_dict()


def test_scores_batched_normalizes_on_training_calls_only(rm_dir):
    prompts = ["the cat", "a dog", "hello", "the park", "numbers"]
    completions = ["sat on the mat", "ran", "world", "in the park and the cat", ""]
    refs = [["x"]] * 5
    raw = build_reward(f"rm:{rm_dir}", rm_normalize=False, rm_batch_size=2)
    one_by_one = build_reward(f"rm:{rm_dir}", rm_normalize=False, rm_batch_size=1)
    r = raw(prompts, completions, refs)
    assert r == pytest.approx(one_by_one(prompts, completions, refs), abs=1e-5)  # batching does not change a score
    assert len(set(r)) == 5
    reward = build_reward(f"rm:{rm_dir}", rm_batch_size=2)
    assert reward(prompts, completions, refs) == pytest.approx(r)  # no statistics yet: raw
    normalized = reward(prompts, completions, refs, training=True)
    t = torch.tensor(r, dtype=torch.float64)
    assert normalized == pytest.approx(((t - t.mean()) / t.std(unbiased=False)).tolist(), abs=1e-5)
    (term,) = stateful_terms(reward).values()
    saved = term.state_dict()
    reward(prompts[:2], completions[:2], refs[:2])  # an evaluation: the statistics do not move
    assert term.state_dict() == saved
    reward(prompts[:2], completions[:2], refs[:2], training=True)
    assert term.state_dict()["moments"]["count"] == 7


def test_a_weighted_sum_with_metric_rewards_reports_each_term(rm_dir):
    reward = build_reward(f"0.5*rm:{rm_dir} + 0.5*exact_match", rm_normalize=False)
    result = score(reward, ["p", "q"], ["the cat", "dog"], [["the cat"], ["x"]])
    rm_values = result.components[0].values
    assert [c.name for c in result.components] == [f"rm:{rm_dir}", "exact_match"]
    assert result.rewards == pytest.approx([0.5 * rm_values[0] + 0.5, 0.5 * rm_values[1]])
    assert list(stateful_terms(reward)) == [f"reward:rm:{rm_dir}"]


def test_a_missing_reward_model_is_a_one_line_error(tmp_path):
    from rlft.errors import RlftError

    with pytest.raises(RlftError, match="reward.spec: .*does not exist"):
        build_reward(f"rm:{tmp_path}/nope")
    with pytest.raises(RlftError, match="cannot parse 'rm:'"):
        build_reward("rm:")


def test_rl_with_a_reward_model_resumes_exactly_with_its_statistics(tmp_path, tiny_causal_dir, tiny_dataset, rm_dir):
    from safetensors.torch import load_file

    from rlft.training.loop import train

    common = {"run.steps": 4, "run.save_every": 2, "reward.spec": f"0.5*rm:{rm_dir} + 0.5*chrf",
              "run.eval_every": 2}

    def cfg(out, **extra):
        return load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / out, **{**common, **extra}))

    full = train(cfg("full"))
    train(cfg("cut", **{"run.steps": 2}))
    resumed = train(cfg("cut", **{"run.resume": True}))

    def rewards(run):
        lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["reward"], r["loss"]) for r in map(json.loads, lines) if r["split"] == "train"]

    assert rewards(full) == rewards(resumed) and all(math.isfinite(r) for _, r, _ in rewards(full))
    a, b = (load_file(str(r.final_dir / "model.safetensors")) for r in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    extra = torch.load(full.run_dir / "checkpoints" / "step-00000004" / "extra.pt", weights_only=True)["extra"]
    moments = extra[f"reward:rm:{rm_dir}"]["moments"]
    assert moments["count"] == 4 * 4 * 3  # 4 steps of B=4 prompts x G=3 samples; evaluations left out
