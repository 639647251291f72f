"""Reward functions, spec parsing, user functions and safe scoring."""

import math
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rlft.errors import RlftError
from rlft.rewards import REWARDS, Component, RewardResult, build_reward, score
from rlft.rewards.registry import parse_spec

P2 = ["p", "p"]


def lp(completions, references, **kw):
    return REWARDS["length_penalty"]([""] * len(completions), completions, references, **kw)


def test_length_penalty_values():
    ref = [("one two three four",)]
    assert lp(["a b c d"], ref) == [1.0]
    assert lp(["a b"], ref) == [0.5]
    assert lp(["a b c d e f g h"], ref) == [0.5]
    assert lp(["a b c"], ref) == [pytest.approx(math.exp(-abs(math.log(3 / 4))))]
    assert lp([""], ref) == [0.0]
    assert lp(["   "], ref) == [0.0]
    assert lp(["a b c d e f g h"], ref, target_length_ratio=2.0) == [1.0]
    # The closest of several references counts.
    assert lp(["a b"], [("one two three four", "one two")]) == [1.0]


def test_length_penalty_counts_characters_for_cjk():
    assert lp(["我喜欢吃苹果"], [("我不喜欢吃香蕉",)]) == [pytest.approx(6 / 7)]
    assert lp(["我喜欢吃苹果"], [("我不喜欢吃香蕉",)], cjk="never") == [1.0]  # one "word" each


def test_no_truncation_reads_meta():
    assert REWARDS["no_truncation"](P2, ["a", "b"], [("a",)] * 2, truncated=[True, False]) == [0.0, 1.0]
    assert REWARDS["no_truncation"](P2, ["a", "b"], [("a",)] * 2) == [1.0, 1.0]
    with pytest.raises(ValueError, match="1 flags for 2"):
        REWARDS["no_truncation"](P2, ["a", "b"], [("a",)] * 2, truncated=[True])


@pytest.mark.parametrize("name", sorted(set(REWARDS) - {"embedding"}))
def test_builtin_rewards_ignore_unknown_meta_and_stay_in_unit_range(name):
    out = REWARDS[name](P2, ["the cat sat", "猫坐在垫子上"], [("the cat sat",), ("猫坐在垫子上",)],
                        truncated=[False, False], some_future_key={"x": 1})
    assert len(out) == 2 and all(0.0 <= v <= 1.0 for v in out)
    assert out[0] == pytest.approx(1.0)


COMPLETIONS = ["the cat sat on the mat", "a dog %s", "cat"]
REFERENCES = [("the cat sat on a mat",), ("the dog %s barked",), ("the cat sat",)]
P3 = [""] * 3


def test_weighted_sum_applies_weights_exactly():
    r = build_reward("0.8*chrf + 0.2*length_penalty")
    chrf = REWARDS["chrf"](P3, COMPLETIONS, REFERENCES)
    lpen = REWARDS["length_penalty"](P3, COMPLETIONS, REFERENCES)
    assert r(P3, COMPLETIONS, REFERENCES) == pytest.approx([0.8 * a + 0.2 * b for a, b in zip(chrf, lpen)], abs=1e-12)
    assert r.__name__ == "0.8*chrf + 0.2*length_penalty" and "0.8*chrf" in repr(r)

    plain = build_reward("chrf + placeholders")
    ph = REWARDS["placeholders"](P3, COMPLETIONS, REFERENCES)
    assert plain(P3, COMPLETIONS, REFERENCES) == pytest.approx([a + b for a, b in zip(chrf, ph)], abs=1e-12)
    diff = build_reward("2 * chrf - .5*placeholders")
    assert diff(P3, COMPLETIONS, REFERENCES) == pytest.approx([2 * a - 0.5 * b for a, b in zip(chrf, ph)], abs=1e-12)
    assert diff.__name__ == "2*chrf - 0.5*placeholders"


@pytest.mark.parametrize("spec", ["0.8*chrf+0.2*length_penalty", "  0.8 *chrf   +\t0.2* length_penalty ", "8e-1*chrf + 2E-1*length_penalty"])
def test_spec_whitespace_and_number_formats(spec):
    assert parse_spec(spec) == [(0.8, "chrf"), (0.2, "length_penalty")]


def test_single_name_keeps_function_and_options():
    r = build_reward("rouge_l")
    assert r.__name__ == "rouge_l" and repr(r) == "Reward('rouge_l')"
    assert r([""], ["我喜欢吃苹果"], [("我不喜欢吃香蕉",)]) == [pytest.approx(8 / 13)]
    assert build_reward("rouge_l", cjk="never")([""], ["我喜欢吃苹果"], [("我不喜欢吃香蕉",)]) == [0.0]
    long = build_reward("0.5*length_penalty + 0.5*chrf", target_length_ratio=2.0)
    assert long([""], ["a b c d"], [("a b",)]) == [pytest.approx(0.5 * 1.0 + 0.5 * REWARDS["chrf"]([""], ["a b c d"], [("a b",)])[0])]


@pytest.mark.parametrize("spec", ["", "   ", "0.8**chrf", "chrf placeholders", "0.8*", "chrf +", "chrf + + bleu", "chrf*0.5", "(chrf)"])
def test_bad_syntax_is_a_one_line_error(spec):
    with pytest.raises(RlftError) as err:
        build_reward(spec)
    msg = str(err.value)
    assert msg.startswith("reward.spec: ") and "\n" not in msg


def test_unknown_name_suggests_closest():
    with pytest.raises(RlftError) as err:
        build_reward("0.5*chrff + bleu")
    msg = str(err.value)
    assert msg.startswith("reward.spec: unknown reward 'chrff'; did you mean 'chrf'? (known: ")
    assert "rouge_l" in msg and "length_penalty" in msg
    with pytest.raises(RlftError) as err:
        build_reward("xyzzy")
    assert "did you mean" not in str(err.value) and "unknown reward 'xyzzy'" in str(err.value)


def test_bad_options():
    with pytest.raises(RlftError, match="reward.cjk"):
        build_reward("chrf", cjk="yes")
    with pytest.raises(RlftError, match="reward.target_length_ratio"):
        build_reward("chrf", target_length_ratio=0.0)


USER_MODULE = """
NOT_CALLABLE = 3

def brevity(prompts, completions, references, **meta):
    return [1.0 / (1 + len(c)) for c in completions]

def wants_cjk(prompts, completions, references, *, cjk="auto", **meta):
    return [1.0 if cjk == "always" else 0.0 for _ in completions]

def short(prompts, completions, references, **meta):
    return [1.0]

def no_meta(prompts, completions, references):
    return [0.0 for _ in completions]

class Scorer:
    def score(self, prompts, completions, references, **meta):
        return [0.25] * len(completions)

SCORER = Scorer()
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "rlft_test_user_rewards"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_user_function_by_path(user_module):
    r = build_reward(f"{user_module}:brevity")
    assert r.__name__ == f"{user_module}:brevity"
    assert r(P2, ["abc", ""], [("x",)] * 2, truncated=[False, True]) == [0.25, 1.0]
    assert build_reward(f"{user_module}:wants_cjk", cjk="always")(P2, ["a", "b"], [("x",)] * 2) == [1.0, 1.0]
    assert build_reward(f"{user_module}:SCORER.score")(P2, ["a", "b"], [("x",)] * 2) == [0.25, 0.25]
    mixed = build_reward(f"0.5*chrf + 2*{user_module}:brevity")
    assert mixed([""], ["abc"], [("abc",)]) == [pytest.approx(0.5 + 2 * 0.25)]


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("missing", "has no attribute 'missing'"),
        ("NOT_CALLABLE", "is not callable (it is a int)"),
        ("no_meta", "must have the signature fn(prompts, completions, references, **meta)"),
    ],
)
def test_user_function_errors(user_module, attr, message):
    with pytest.raises(RlftError, match=r"^reward\.spec: .*" + re.escape(message)):
        build_reward(f"{user_module}:{attr}")


def test_user_module_not_found():
    with pytest.raises(RlftError, match=r"^reward\.spec: cannot import module 'rlft_no_such_module_xyz'"):
        build_reward("rlft_no_such_module_xyz:fn")


def _named(name, fn):
    fn.__name__ = name
    return fn


def test_score_ok_and_numpy_output():
    res = score(build_reward("exact_match"), P2, ["a", "b"], [("a",), ("c",)])
    assert res == RewardResult([1.0, 0.0], None, [Component("exact_match", 1.0, [1.0, 0.0])])
    res = score(_named("np", lambda p, c, r, **m: np.array([0.5, 1.0], dtype=np.float32)), P2, ["a", "b"], [("a",)] * 2)
    assert res.rewards == [0.5, 1.0] and all(type(v) is float for v in res.rewards)


def test_score_catches_exceptions():
    def boom(prompts, completions, references, **meta):
        raise ValueError("bad\n  thing")

    res = score(boom, P2, ["a", "b"], [("a",)] * 2)
    assert res.rewards is None and res.error == "reward 'boom' raised ValueError: bad thing"


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([1.0], "reward 'bad' returned 1 values for 2 completions"),
        ("ab", "reward 'bad' returned str, expected a list of 2 floats"),
        ([1.0, "x"], "reward 'bad' returned a non-number at index 1: 'x'"),
        ([1.0, None], "reward 'bad' returned a non-number at index 1: None"),
        ([math.nan, math.inf], "reward 'bad' returned NaN/inf for 2 of 2 completions"),
        ([0.5, -math.inf], "reward 'bad' returned NaN/inf for 1 of 2 completions"),
    ],
)
def test_score_rejects_bad_output(values, error):
    res = score(_named("bad", lambda p, c, r, **m: values), P2, ["a", "b"], [("a",)] * 2)
    assert res == RewardResult(None, error)


def test_score_names_the_failing_term_of_a_sum(user_module):
    res = score(build_reward(f"chrf + 0.1*{user_module}:short"), P2, ["a", "b"], [("a",)] * 2)
    assert res == RewardResult(None, f"reward '{user_module}:short' returned 1 values for 2 completions")


def test_score_reports_each_component_of_a_sum():
    r = build_reward("0.8*chrf + 0.2*placeholders - length_penalty")
    res = score(r, P3, COMPLETIONS, REFERENCES)
    chrf = REWARDS["chrf"](P3, COMPLETIONS, REFERENCES)
    ph = REWARDS["placeholders"](P3, COMPLETIONS, REFERENCES)
    lpen = REWARDS["length_penalty"](P3, COMPLETIONS, REFERENCES)
    assert [(c.name, c.weight) for c in res.components] == [("chrf", 0.8), ("placeholders", 0.2),
                                                            ("length_penalty", -1.0)]
    assert res.components[1].values == ph and res.components[2].values == lpen
    # the total is the weighted sum of the components, and what calling the reward returns
    assert res.rewards == pytest.approx([0.8 * a + 0.2 * b - c for a, b, c in zip(chrf, ph, lpen)], abs=1e-12)
    assert res.rewards == pytest.approx(r(P3, COMPLETIONS, REFERENCES), abs=1e-12)


def test_score_lets_configuration_errors_through():
    def needs_setup(prompts, completions, references, **meta):
        raise RlftError("reward 'x': run `pip install x`")

    with pytest.raises(RlftError, match="pip install x"):
        score(needs_setup, P2, ["a", "b"], [("a",)] * 2)


def test_import_is_cheap():
    code = ("import sys, rlft.rewards; heavy = ('sacrebleu', 'rouge_score', 'nltk', 'sentence_transformers'); "
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
