"""Metrics agree with sacrebleu / rouge-score on English and make sense on Chinese."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from rlft.errors import RlftError
from rlft.rewards import METRICS, REWARDS
from rlft.rewards import metrics as M

HYPS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog!",
    "Hello world",
    "It's 5 o'clock; time for tea.",
]
REFS = [
    ("The cat is sitting on the mat.", "A cat sat on a mat."),
    ("The quick brown fox jumped over the lazy dog.",),
    ("Goodbye, world!", "hello there world"),
    ("At 5 o'clock it is time for tea.",),
]
# sacrebleu's reference streams, written out by hand: single-reference rows repeat their reference.
STREAMS = [
    [REFS[0][0], REFS[1][0], REFS[2][0], REFS[3][0]],
    [REFS[0][1], REFS[1][0], REFS[2][1], REFS[3][0]],
]
P = [""] * len(HYPS)


@pytest.mark.parametrize(("name", "key"), [("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL")])
def test_rouge_equals_rouge_score_on_english(name, key):
    scorer = rouge_scorer.RougeScorer([key])
    expected = [scorer.score_multi(list(r), h)[key].fmeasure for h, r in zip(HYPS, REFS)]
    assert REWARDS[name](P, HYPS, REFS) == expected
    assert METRICS[name].sentence(HYPS, REFS) == pytest.approx([100 * e for e in expected], abs=1e-9)
    assert METRICS[name].corpus(HYPS, REFS) == pytest.approx(100 * sum(expected) / len(expected), abs=1e-9)
    assert 0 < max(expected) < 1 and len(set(expected)) > 2  # the examples are informative


def test_bleu_equals_sacrebleu_on_english():
    expected = [sacrebleu.sentence_bleu(h, list(r)).score for h, r in zip(HYPS, REFS)]
    assert METRICS["bleu"].sentence(HYPS, REFS) == expected
    assert REWARDS["bleu"](P, HYPS, REFS) == pytest.approx([e / 100 for e in expected], abs=1e-12)
    assert METRICS["bleu"].corpus(HYPS, REFS) == sacrebleu.corpus_bleu(HYPS, STREAMS).score
    single = [r[0] for r in REFS]
    assert METRICS["bleu"].corpus(HYPS, [(r,) for r in single]) == sacrebleu.corpus_bleu(HYPS, [single]).score


def test_chrf_equals_sacrebleu_on_english():
    expected = [sacrebleu.sentence_chrf(h, list(r)).score for h, r in zip(HYPS, REFS)]
    assert METRICS["chrf"].sentence(HYPS, REFS) == expected
    assert REWARDS["chrf"](P, HYPS, REFS) == pytest.approx([e / 100 for e in expected], abs=1e-12)
    assert METRICS["chrf"].corpus(HYPS, REFS) == sacrebleu.corpus_chrf(HYPS, STREAMS).score


def test_multi_reference_takes_the_best_reference():
    # A second reference that the hypothesis matches exactly lifts every metric to the top.
    hyp, refs = ["a cat sat on a mat"], [("the dog barked", "a cat sat on a mat")]
    for name in ("rouge1", "rouge2", "rouge_l", "bleu", "chrf", "exact_match"):
        assert METRICS[name].sentence(hyp, refs)[0] == pytest.approx(100.0), name


ZH_REF = "我不喜欢吃香蕉"
ZH_PARTIAL = "我喜欢吃苹果"
ZH_UNRELATED = "今天天气很好"


def test_chinese_identical_scores_full():
    for name in ("rouge1", "rouge2", "rouge_l", "bleu", "chrf"):
        assert REWARDS[name]([""], [ZH_REF], [(ZH_REF,)]) == [pytest.approx(1.0)], name
        assert METRICS[name].corpus([ZH_REF], [(ZH_REF,)]) == pytest.approx(100.0), name


def test_chinese_character_lcs_by_hand():
    # LCS(我喜欢吃苹果, 我不喜欢吃香蕉) = 我喜欢吃: P = 4/6, R = 4/7, F = 2*4/(6+7).
    assert REWARDS["rouge_l"]([""], [ZH_PARTIAL], [(ZH_REF,)]) == [pytest.approx(8 / 13)]
    assert REWARDS["rouge1"]([""], [ZH_PARTIAL], [(ZH_REF,)]) == [pytest.approx(8 / 13)]
    # Shared bigrams 喜欢, 欢吃 out of 5 and 6: F = 2*2/(5+6).
    assert REWARDS["rouge2"]([""], [ZH_PARTIAL], [(ZH_REF,)]) == [pytest.approx(4 / 11)]


@pytest.mark.parametrize("name", ["rouge1", "rouge_l", "bleu", "chrf"])
def test_chinese_partial_beats_unrelated(name):
    partial, unrelated = REWARDS[name]([""] * 2, [ZH_PARTIAL, ZH_UNRELATED], [(ZH_REF,)] * 2)
    assert partial > 0.05 and partial > unrelated
    assert unrelated == pytest.approx(0.0, abs=1e-3)


def test_chinese_bleu_uses_sacrebleu_zh():
    hyps, refs = [ZH_PARTIAL, "我很喜欢吃香蕉"], [(ZH_REF,), (ZH_REF,)]
    expected = [sacrebleu.sentence_bleu(h, [r[0]], tokenize="zh").score for h, r in zip(hyps, refs)]
    assert METRICS["bleu"].sentence(hyps, refs) == expected
    assert METRICS["bleu"].corpus(hyps, refs) == sacrebleu.corpus_bleu(hyps, [[ZH_REF] * 2], tokenize="zh").score
    assert expected[1] > 0  # the 13a tokenizer would give 0: one "word" each


def test_cjk_never_treats_a_sentence_as_one_word():
    assert REWARDS["rouge_l"]([""], [ZH_PARTIAL], [(ZH_REF,)], cjk="never") == [0.0]
    assert REWARDS["rouge_l"]([""], ["我 喜欢 吃"], [("我 不 喜欢 吃",)], cjk="never") == [pytest.approx(6 / 7)]
    # 'always' splits CJK even if the references alone would not trigger it.
    assert REWARDS["rouge1"]([""], ["我喜欢"], [("ok 我 喜 欢",)], cjk="always") == [pytest.approx(2 * 3 / (3 + 4))]


def test_japanese_kana_scored_per_character_in_bleu():
    ref, hyp = "これはペンです", "これはペンですか"
    assert 0.5 < REWARDS["bleu"]([""], [hyp], [(ref,)])[0] < 1.0


def test_exact_match_and_placeholders_metrics():
    hyps = ["  Hello   WORLD ", "hello", "Delete %d files"]
    refs = [("hello world",), ("hi",), ("Delete %d files from %s",)]
    assert METRICS["exact_match"].sentence(hyps, refs) == [100.0, 0.0, 0.0]
    assert METRICS["exact_match"].corpus(hyps, refs) == pytest.approx(100 / 3)
    assert METRICS["placeholders"].sentence(hyps, refs) == [100.0, 100.0, 50.0]


def test_registry_contents_and_reference_checks():
    assert set(METRICS) >= {"chrf", "bleu", "rouge1", "rouge2", "rouge_l", "exact_match", "placeholders", "embedding"}
    assert all(m.name == k for k, m in METRICS.items())
    assert METRICS["bleu"].corpus([], []) == 0.0
    with pytest.raises(RlftError, match="2 reference entries for 1 completions"):
        M.bleu_scores(["a"], [("a",), ("b",)])
    with pytest.raises(RlftError, match="example 0 has no reference"):
        M.chrf_scores(["a"], [()])
