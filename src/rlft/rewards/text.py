"""Text helpers shared by the rewards and metrics: reference lists, CJK detection, tokenization,
placeholders.

rouge-score's default tokenizer keeps only ``[a-z0-9]`` and silently drops every other
character, so Chinese or Japanese text scores 0 against itself. ``WordTokenizer`` keeps
Unicode words and, for CJK, scores by character, which is the usual practice for
Chinese ROUGE/BLEU (sacrebleu's ``zh`` tokenizer does the same for BLEU).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

from rlft.config import choices
from rlft.errors import RlftError

# Scripts written without spaces between words, scored one character per token.
_CJK_RANGES = (
    ("\u1100", "\u11ff"),          # Hangul Jamo
    ("\u2e80", "\u2fdf"),          # CJK radicals, Kangxi radicals
    ("\u3005", "\u3007"),          # 々 〆 〇
    ("\u3040", "\u30ff"),          # Hiragana, Katakana
    ("\u3100", "\u312f"),          # Bopomofo
    ("\u3130", "\u318f"),          # Hangul compatibility Jamo
    ("\u31a0", "\u31bf"),          # Bopomofo extended
    ("\u31f0", "\u31ff"),          # Katakana phonetic extensions
    ("\u3400", "\u4dbf"),          # CJK Extension A
    ("\u4e00", "\u9fff"),          # CJK Unified Ideographs
    ("\uac00", "\ud7af"),          # Hangul syllables
    ("\uf900", "\ufaff"),          # CJK compatibility ideographs
    ("\uff66", "\uff9f"),          # half-width Katakana
    ("\U00020000", "\U0003134f"),  # CJK Extensions B-G, compatibility supplement
)
_CJK_CLASS = "".join(f"{lo}-{hi}" for lo, hi in _CJK_RANGES)
_CJK_RE = re.compile(f"[{_CJK_CLASS}]")
# Kana and Hangul: the CJK characters that sacrebleu's `zh` tokenizer leaves glued together.
_KANA_HANGUL_RE = re.compile("([\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\uac00-\ud7af\uff66-\uff9f])")
_ASCII_WORD_RE = re.compile(r"[a-z0-9]+")


def as_references(hyps: Sequence[str], refs: Sequence[Sequence[str] | str]) -> list[tuple[str, ...]]:
    """Check one reference entry per hypothesis; a bare string counts as one reference."""
    if len(hyps) != len(refs):
        raise RlftError(f"references: {len(refs)} reference entries for {len(hyps)} completions")
    out = []
    for i, r in enumerate(refs):
        r = (r,) if isinstance(r, str) else tuple(r)
        if not r:
            raise RlftError(f"references: example {i} has no reference")
        out.append(r)
    return out


def has_cjk(text: str) -> bool:
    """True if ``text`` contains a CJK ideograph, kana or hangul character."""
    return _CJK_RE.search(text) is not None


def check_cjk_mode(cjk: str, field: str = "reward.cjk") -> str:
    if cjk not in choices("reward.cjk"):
        raise RlftError(f"{field}: must be one of {', '.join(choices('reward.cjk'))}, got {cjk!r}")
    return cjk


def use_cjk(references: Sequence[str], cjk: str) -> bool:
    """Whether to score by character: 'always', 'never', or 'auto' = any reference has CJK."""
    if cjk == "always":
        return True
    if cjk == "never":
        return False
    check_cjk_mode(cjk)
    return any(has_cjk(r) for r in references)


class WordTokenizer:
    """A drop-in ``tokenize(text)`` for ``rouge_scorer.RougeScorer(tokenizer=...)``.

    Lowercases and splits on anything that is not a letter, digit or combining mark, so
    "Café déjà-vu" gives ['café', 'déjà', 'vu']. With ``split_cjk`` every CJK character is
    its own token. On ASCII text it returns exactly what rouge-score's default tokenizer
    (without stemming) returns, so English scores are unchanged.
    """

    def __init__(self, split_cjk: bool = True):
        self.split_cjk = split_cjk

    def tokenize(self, text: str) -> list[str]:
        text = text.lower()
        if text.isascii():
            return _ASCII_WORD_RE.findall(text)
        # NFKC folds full-width Latin and half-width kana into their usual forms.
        text = unicodedata.normalize("NFKC", text)
        tokens: list[str] = []
        word: list[str] = []
        for ch in text:
            if self.split_cjk and _CJK_RE.match(ch):
                if word:
                    tokens.append("".join(word))
                    word = []
                tokens.append(ch)
            elif unicodedata.category(ch)[0] in "LNM":
                word.append(ch)
            elif word:
                tokens.append("".join(word))
                word = []
        if word:
            tokens.append("".join(word))
        return tokens

    def __repr__(self) -> str:
        return f"WordTokenizer(split_cjk={self.split_cjk})"


def bleu_tokenize_name(cjk: bool) -> str:
    """sacrebleu tokenizer: 'zh' splits Chinese characters, '13a' is the WMT default."""
    return "zh" if cjk else "13a"


def prepare_for_bleu(text: str, cjk: bool) -> str:
    """Space out kana and hangul, which sacrebleu's 'zh' tokenizer does not split.

    Chinese text passes through unchanged, so scores match plain ``tokenize='zh'``.
    """
    return _KANA_HANGUL_RE.sub(r" \1 ", text) if cjk else text


def length_units(text: str, cjk: bool) -> int:
    """Length of ``text``: non-space characters for CJK, whitespace-separated words otherwise."""
    if cjk:
        return sum(1 for ch in text if not ch.isspace())
    return len(text.split())


def normalize_for_match(text: str) -> str:
    """Collapse runs of whitespace and case-fold, for exact-match comparison."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


# printf-style (C, Java, PHP, Python %-format, Android `%1$s`), Qt/.NET-ish `%1`, and
# str.format fields `{}`, `{0}`, `{name}`, `{name!r:>10}`. `{{`/`}}` are escapes and are
# matched first so that they are not counted. The space flag is left out on purpose:
# it would turn prose such as "50% off" into a placeholder "% o".
_PLACEHOLDER_RE = re.compile(
    r"""
      (?P<escape>\{\{|\}\})
    | %%
    | %(?:\d+\$|\([A-Za-z_]\w*\))?[-+0#']*(?:\d+|\*)?(?:\.(?:\d+|\*))?
        (?:hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGcrsaAp@]
    | %\d+
    | \{(?:[A-Za-z_]\w*|\d+)?(?:\.[A-Za-z_]\w*|\[[^\]{}]*\])*(?:![rsa])?(?::[^{}]*)?\}
    """,
    re.VERBOSE,
)


def placeholders(text: str) -> Counter[str]:
    """The multiset of format placeholders in ``text``."""
    return Counter(m.group(0) for m in _PLACEHOLDER_RE.finditer(text) if not m.group("escape"))


def placeholder_score(completion: str, reference: str) -> float:
    """Share of the reference's placeholders reproduced, with extra ones penalised.

    matched / max(|ref|, |completion|) over multisets: dropping one of two placeholders
    gives 0.5, and inventing a spurious one costs as much as dropping one. No placeholders
    on either side gives 1.
    """
    ref, hyp = placeholders(reference), placeholders(completion)
    total = max(sum(ref.values()), sum(hyp.values()))
    if total == 0:
        return 1.0
    return sum((ref & hyp).values()) / total
