"""Reward-hacking monitors against hand-computed values."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from rlft.eval import monitors as M
from rlft.rewards import Component

needs_langid = pytest.mark.skipif(importlib.util.find_spec("py3langid") is None, reason="py3langid not installed")


def test_length_ratio_is_a_ratio_of_totals_in_reward_units():
    # words: (2 + 6) / (4 + 2); a mean of ratios would be (0.5 + 3) / 2 = 1.75
    assert M.length_ratio(["a b", "a b c d e f"], [["w x y z"], ["u v"]]) == pytest.approx(8 / 6)
    # CJK references: characters (spaces not counted); two references -> mean length (4 + 2) / 2
    assert M.length_ratio(["打开 文件"], [["打开文件", "打开"]]) == pytest.approx(4 / 3)
    assert math.isnan(M.length_ratio(["a"], [[""]]))


@pytest.mark.parametrize("prompt, completion, copied", [
    ("Open file", "Open file", True),                      # (a) whole completion, short
    ("Open the file now", "the file", True),               # (a) a verbatim run of the prompt
    ("Open the file now", "file the", False),              # tokens present, not as a run
    ("a b c d e f g", "a b c d x y z w", True),            # (b) run of 4 covers 4/8 = 50%
    ("a b c d e f g", "a b c d x y z w v", False),         # run of 4 covers 4/9 < 50%
    ("a b c e f g", "a b c x y z", False),                 # run of 3 < 4 tokens, covers 50%
    ("Cannot open %s", "无法打开 %s", False),               # only the placeholder token is shared
    ("Open file", "", False),                              # empty completion copies nothing
    ("OPEN, file!", "open file", True),                    # case and punctuation ignored
])
def test_copies_prompt(prompt, completion, copied):
    assert M.copies_prompt(prompt, completion) is copied


def test_copy_rate_is_the_share_of_copies():
    assert M.copy_rate(["Open file", "Save", "x y"], ["Open file", "保存", "y"]) == pytest.approx(2 / 3)


def test_distinct_n_over_the_batch():
    # unigrams: a b a | a c -> 5 tokens, 3 unique; bigrams: (a b)(b a) | (a c) -> 3 of 3
    assert M.distinct_n(["a b a", "a c"], 1) == pytest.approx(3 / 5)
    assert M.distinct_n(["a b a", "a c"], 2) == pytest.approx(1.0)
    assert M.distinct_n(["same text", "same text"], 2) == pytest.approx(0.5)
    assert math.isnan(M.distinct_n(["a", ""], 2))


def test_repetition_share_of_repeated_ngrams_within_each_completion():
    # 'a b c a b c': trigrams abc bca cab abc -> 3 unique of 4 -> 0.25; 'x y' is too short -> 0
    assert M.repetition(["a b c a b c", "x y"], 3) == pytest.approx(0.125)
    # 'the the the the' bigrams: 3, one unique -> 2/3
    assert M.repetition(["the the the the"], 2) == pytest.approx(2 / 3)
    # CJK characters are tokens: 好好好 -> bigrams 好好 x2 -> 0.5
    assert M.repetition(["好好好"], 2) == pytest.approx(0.5)


def test_zero_variance_share():
    rewards = torch.tensor([[0.5, 0.5, 0.5], [0.0, 1.0, 0.0], [0.2, 0.2, 0.2], [0.3, 0.3, 0.31]])
    assert M.zero_variance_share(rewards) == pytest.approx(0.5)
    assert math.isnan(M.zero_variance_share(torch.ones(4, 1)))


def test_judged_text_drops_placeholders_and_letterless_text():
    assert M.judged_text("%s: %d") is None
    assert M.judged_text("") is None
    assert M.judged_text("Open %s").strip() == "Open"


@needs_langid
def test_off_language_share():
    texts = ["无法打开文件", "Impossible d'ouvrir le fichier", "Cannot open the file", "%s：%d"]
    # zh: the French and the English sentence are off; the placeholder-only text is not judged
    assert M.off_language_share(texts, "zh") == pytest.approx(2 / 4)
    assert M.off_language_share(texts, "fr") == pytest.approx(2 / 4)
    assert M.off_language_share(texts, "zh-CN") == pytest.approx(2 / 4)


@needs_langid
def test_off_language_unknown_code_is_a_config_error():
    from rlft.errors import RlftError

    with pytest.raises(RlftError, match="eval.language"):
        M.off_language_share(["hello"], "xx")


def test_component_columns_names_and_means():
    comps = [Component("chrf", 0.8, [0.5, 0.7]), Component("pkg.mod:fn", 0.2, [1.0, 0.0]),
             Component("chrf", 1.0, [0.0, 0.0])]
    assert list(M.component_columns(comps)) == ["reward/chrf", "reward/pkg.mod_fn", "reward/chrf_2"]
    assert M.component_means(comps) == pytest.approx({"reward/chrf": 0.6, "reward/pkg.mod_fn": 0.5,
                                                      "reward/chrf_2": 0.0})
    assert M.component_means([Component("chrf", 1.0, [0.5])]) == {}  # a single reward is 'reward' itself


def test_rollout_monitors_keys():
    row = M.rollout_monitors(["a b", "a b"], ["a b", "c d e"], [["x y"], ["x y"]], torch.tensor([[1.0, 1.0]]),
                             [Component("chrf", 0.5, [1.0, 0.0]), Component("placeholders", 0.5, [1.0, 1.0])])
    assert row["zero_var_groups"] == 1.0
    assert row["copy_rate"] == 0.5 and row["length_ratio"] == pytest.approx(5 / 4)
    assert row["reward/chrf"] == 0.5 and row["reward/placeholders"] == 1.0
    assert "off_language" not in row  # no language: off


@pytest.mark.parametrize("history, expected", [
    ([[0.1, 50], [0.2, 49], [0.3, 48]], True),            # reward up, metric down, twice
    ([[0.1, 50], [0.2, 49]], False),                      # only once
    ([[0.1, 50], [0.2, 49], [0.3, 49]], False),           # metric flat at the last evaluation
    ([[0.1, 50], [0.2, 51], [0.3, 50], [0.4, 49]], True), # the last two count
    ([[0.1, 50], [0.2, 49], [0.15, 48]], False),          # reward fell at the last evaluation
    ([[math.nan, 50], [0.2, 49], [0.3, 48]], False),      # no train reward before the first evaluation
])
def test_reward_metric_divergence(history, expected):
    assert M.reward_metric_divergence(history) is expected


def test_divergence_watch_windows_and_resumes():
    watch = M.DivergenceWatch()
    assert watch.update(50.0) == {"train_reward": pytest.approx(math.nan, nan_ok=True), M.DIVERGENCE_KEY: 0}
    for r in (0.1, 0.3):
        watch.add(r)
    assert watch.update(49.0) == {"train_reward": pytest.approx(0.2), M.DIVERGENCE_KEY: 0}
    resumed = M.DivergenceWatch()
    resumed.load_state_dict(watch.state_dict())
    resumed.add(0.5)
    assert resumed.update(48.0) == {"train_reward": pytest.approx(0.5), M.DIVERGENCE_KEY: 0}  # nan -> 0.2: no
    resumed.add(0.6)
    assert resumed.update(47.0)[M.DIVERGENCE_KEY] == 1
    assert "fell (48.00 -> 47.00" not in resumed.message("chrF")
    assert "49.00 -> 48.00 -> 47.00" in resumed.message("chrF") and "0.200 -> 0.500 -> 0.600" in resumed.message("chrF")


def test_normalize_components_is_refused_with_scst():
    from rlft.config import load_config
    from rlft.errors import RlftError

    assert load_config(None, ["reward.normalize_components=true"]).reward.normalize_components is True
    with pytest.raises(RlftError, match="normalize_components"):
        load_config(None, ["reward.normalize_components=true", "algo.name=scst"])


def test_short_english_titles_are_not_off_language_but_other_languages_are():
    pytest.importorskip("py3langid")
    from rlft.eval.monitors import off_language_share

    # the identifier's argmax puts these in it/fr; their English probability (0.18, 0.35) is above 0.1
    titles = ["A file permission mask", "A group command"]
    assert off_language_share(titles, "en") == 0.0
    assert off_language_share(["Impossible d'ouvrir le fichier de configuration",
                               "Le serveur a refusé la connexion"], "en") == 1.0
