"""Tokenizer, CJK detection and placeholder extraction."""

from collections import Counter

import pytest
from rouge_score import tokenizers

from rlft.errors import RlftError
from rlft.rewards import text as T

ENGLISH = [
    "The cat sat on the mat.",
    "It's 5 o'clock; time_for tea -- NOW!",
    "  e-mail: someone@example.com, 3.14 x 10^2 ",
    "",
]


@pytest.mark.parametrize("s", ENGLISH)
def test_ascii_tokens_equal_rouge_score_default(s):
    assert T.WordTokenizer().tokenize(s) == tokenizers.DefaultTokenizer(use_stemmer=False).tokenize(s)


def test_non_ascii_letters_kept_and_lowercased():
    assert T.WordTokenizer().tokenize("Café DÉJÀ-vu, über naïve") == ["café", "déjà", "vu", "über", "naïve"]
    # Decomposed accents (e + combining acute) end up as one token, same as the composed form.
    assert T.WordTokenizer().tokenize("cafe\u0301") == ["café"]


def test_cjk_split_into_characters_mixed_with_words():
    tok = T.WordTokenizer(split_cjk=True)
    assert tok.tokenize("我喜欢Python 3，真的！") == ["我", "喜", "欢", "python", "3", "真", "的"]
    assert tok.tokenize("これはペン") == ["こ", "れ", "は", "ペ", "ン"]
    assert tok.tokenize("한국어") == ["한", "국", "어"]
    # Without splitting, a CJK run is one word, as for pre-segmented text.
    assert T.WordTokenizer(split_cjk=False).tokenize("我 喜欢 苹果。") == ["我", "喜欢", "苹果"]


def test_has_cjk_and_modes():
    assert T.has_cjk("hello 世界") and T.has_cjk("カタカナ") and T.has_cjk("한글")
    assert not T.has_cjk("naïve café ß")
    assert T.use_cjk(["abc", "中文"], "auto") and not T.use_cjk(["abc"], "auto")
    assert T.use_cjk(["abc"], "always") and not T.use_cjk(["中文"], "never")
    with pytest.raises(RlftError, match="reward.cjk"):
        T.use_cjk(["abc"], "sometimes")


def test_prepare_for_bleu_spaces_kana_only_in_cjk_mode():
    assert T.prepare_for_bleu("中文abc", True) == "中文abc"  # sacrebleu 'zh' handles Han itself
    assert T.prepare_for_bleu("これ", True) == " こ  れ "
    assert T.prepare_for_bleu("これ", False) == "これ"


def test_placeholder_extraction():
    s = "Hi %s, %d new %1$s at %.2f%% {name} {0} {} {x!r:>10} {{literal}} %(user)s %1 %-5d"
    assert T.placeholders(s) == Counter(
        ["%s", "%d", "%1$s", "%.2f", "%%", "{name}", "{0}", "{}", "{x!r:>10}", "%(user)s", "%1", "%-5d"]
    )
    assert T.placeholders("Get 50% off today") == Counter()
    assert T.placeholders("%s and %s") == Counter({"%s": 2})


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("Supprimer %d fichiers de %s ?", "Delete %d files from %s?", 1.0),
        ("Supprimer %d fichiers ?", "Delete %d files from %s?", 0.5),      # one of two dropped
        ("Supprimer %d fichiers de %s {0}", "Delete %d files from %s?", 2 / 3),  # one extra
        ("%s %s", "%s", 0.5),                                              # multiset: duplicate is extra
        ("Bonjour", "Hello", 1.0),                                         # none on either side
        ("Bonjour %s", "Hello", 0.0),                                      # invented one
        ("Bonjour {nom}", "Hello {name}", 0.0),                            # renamed field
    ],
)
def test_placeholder_score(completion, reference, expected):
    assert T.placeholder_score(completion, reference) == pytest.approx(expected)


def test_length_units():
    assert T.length_units("the cat  sat", False) == 3
    assert T.length_units("我 喜欢。", True) == 4


def test_as_references_takes_a_bare_string_as_one_reference_and_checks_counts():
    assert T.as_references(["a", "b"], ["ref", ("r1", "r2")]) == [("ref",), ("r1", "r2")]
    with pytest.raises(RlftError, match="2 reference entries for 1 completions"):
        T.as_references(["a"], [("a",), ("b",)])
    with pytest.raises(RlftError, match="example 0 has no reference"):
        T.as_references(["a"], [()])
