"""rlft.env: the Gymnasium environment (token and sequence modes, vector env, example)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from rlft.data.example import Example  # noqa: E402
from rlft.rewards import build_reward, score  # noqa: E402
from tests.tiny import EOS, PAD, tiny_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [Example("the cat sat on the", ("mat",), "cat"), Example("hello", ("world", "there"), "hello"),
           Example("a dog ran in the", ("park",), "dog")]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer("causal")


def make(tok, **kw):
    from rlft.env import TextGenEnv

    kw = {"max_new_tokens": 4, "max_prompt_tokens": 16, **kw}
    return TextGenEnv(PROMPTS, tok, **kw)


@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_check_env_passes(tok, mode):
    from gymnasium.utils.env_checker import check_env

    env = make(tok, mode=mode)
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (20,)
    assert env.action_space.shape == (() if mode == "token" else (4,))


def test_registered_id_makes_the_env(tok):
    import rlft.env

    env = gym.make(rlft.env.ENV_ID, prompts=PROMPTS, tokenizer=tok, max_new_tokens=3)
    assert isinstance(env.unwrapped, rlft.env.TextGenEnv)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_reset_is_deterministic_given_seed(tok):
    env = make(tok)
    picks = [env.reset(seed=s)[1]["index"] for s in range(12)]
    again = [env.reset(seed=s)[1]["index"] for s in range(12)]
    assert picks == again
    assert len(set(picks)) > 1  # seeds do sample different prompts
    obs, info = env.reset(options={"index": 1})
    ids = tok("hello")["input_ids"]
    assert info["prompt_length"] == info["length"] == len(ids)
    assert obs[:len(ids)].tolist() == ids and (obs[len(ids):] == PAD).all()


def test_token_mode_terminates_on_eos_with_the_score_of_the_text(tok):
    env = make(tok, reward="exact_match")
    env.reset(options={"index": 0})
    mat = tok("mat", add_special_tokens=False)["input_ids"]
    for t in mat:
        obs, reward, terminated, truncated, info = env.step(t)
        assert (reward, terminated, truncated) == (0.0, False, False)
    obs, reward, terminated, truncated, info = env.step(EOS)
    assert terminated and not truncated and info["truncated"] is False
    assert info["completion"] == "mat"
    expected = score(build_reward("exact_match"), [""], ["mat"], [["mat"]]).rewards[0]
    assert reward == expected == 1.0
    assert obs[info["prompt_length"]:info["length"]].tolist() == mat + [EOS]
    with pytest.raises(Exception, match="reset"):
        env.step(EOS)


def test_token_mode_truncates_at_the_limit_and_tells_the_reward(tok):
    env = make(tok, reward="no_truncation", max_new_tokens=3)
    env.reset(options={"index": 1})
    word = tok("the", add_special_tokens=False)["input_ids"][0]
    results = [env.step(word) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert results[-1][1] == 0.0 and results[-1][4]["truncated"] is True


def test_sequence_mode_scores_a_whole_completion(tok):
    env = make(tok, mode="sequence", reward="chrf")
    env.reset(options={"index": 1})
    ids = tok("world", add_special_tokens=False)["input_ids"]
    action = np.array(ids + [EOS] + [PAD] * (4 - len(ids) - 1))
    obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and info["completion"] == "world" and reward == pytest.approx(1.0)
    env.reset(options={"index": 1})
    obs, reward, terminated, truncated, info = env.step("there")  # a string, the second reference
    expected = score(build_reward("chrf"), [""], ["there"], [["world", "there"]]).rewards[0]
    assert terminated and reward == pytest.approx(expected) and reward > 0.9
    env.reset(options={"index": 1})
    obs, reward, terminated, truncated, info = env.step("the cat sat on the mat")  # over 4 tokens: cut
    assert terminated and info["truncated"] and info["length"] == info["prompt_length"] + 4


def test_a_failing_reward_gives_zero_and_says_why(tok, monkeypatch):
    env = make(tok, mode="sequence", reward="tests.test_env:_broken")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("mat")
    assert reward == 0.0 and "boom" in info["reward_error"]


def _broken(prompts, completions, references, **meta):
    raise ValueError("boom")


def test_bundled_task_supplies_prompts_and_defaults(tok):
    from rlft.env import TextGenEnv
    from rlft.tasks import get_task

    env = TextGenEnv("summarization", tok, max_prompt_tokens=32)
    task = get_task("summarization")
    assert len(env.examples) > 100 and env.max_new_tokens == task.max_new_tokens
    assert env.reward_fn.__name__ == build_reward(task.reward).__name__
    obs, info = env.reset(seed=3)
    assert 0 < info["prompt_length"] <= 32


def test_vector_env_batches_three(tok):
    from rlft.env import make_vec

    envs = make_vec(3, prompts=PROMPTS, tokenizer=tok, max_new_tokens=2, max_prompt_tokens=16)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, 18) and info["length"].shape == (3,)
    obs, rewards, terminated, truncated, info = envs.step(np.array([EOS, 5, 5]))
    assert terminated.tolist() == [True, False, False] and rewards.shape == (3,)
    obs, rewards, terminated, truncated, info = envs.step(np.array([5, 5, EOS]))
    assert truncated.tolist()[1] and terminated.tolist()[2]
    envs.close()


def test_import_rlft_does_not_import_gymnasium():
    code = "import rlft, rlft.rewards, sys; assert 'gymnasium' not in sys.modules, 'gymnasium imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_trains_a_tabular_policy(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "gym_reinforce.py"), "--tokenizer",
                          str(tmp_path / "tok"), "--episodes", "600"],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["last"] > result["first"] + 0.3
    assert set(result["greedy"]) == {"the cat sat on the", "hello"}
    assert "world" in result["greedy"].values()
