"""Reward-hacking monitors: numbers that move when the reward rises for the wrong reason.

A rising train reward with falling quality shows as length collapse or explosion
(``length_ratio``), outputs that copy the prompt (``copy_rate``), repetition (``distinct_1``,
``distinct_2``, ``repetition``) or output in the wrong language (``off_language``). A run that
does not learn because every group of G samples got the same reward shows in
``zero_var_groups``. Each is a pure function of the texts (or rewards) logged at every step and
at evaluation; ``DivergenceWatch`` warns when the validation metric falls while the train reward
rises.

Units: n-grams are over ``WordTokenizer`` tokens (lower-cased words, every CJK character a
token, punctuation dropped); lengths are the reward's ``length_units`` (characters for CJK,
words otherwise), so ``length_ratio`` 1 is ``length_penalty``'s target at ratio 1.
py3langid is imported on first use of ``off_language_share``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

from rlft.errors import RlftError
from rlft.rewards import text as T

# Keys a monitored row may hold (train rows also get zero_var_groups and reward/<component>).
MONITOR_KEYS = ("zero_var_groups", "length_ratio", "copy_rate", "distinct_1", "distinct_2", "repetition",
                "off_language")
COMPONENT_PREFIX = "reward/"
DIVERGENCE_KEY = "reward_metric_divergence"
# Language ID picks among these widely used languages (plus the target): over all 142 of
# py3langid's, short texts land in neighbours (Chinese UI strings in 'wuu'/'yue', 'Okie dokie'
# in 'pl'). On the bundled validation references this set leaves 0.3% (zh), 2.7% (fr) and
# 0.4-5% (English tasks, short phrases) wrongly flagged, and flags 98-100% of English prompts
# as not zh / fr.
LANGID_CANDIDATES = ("ar", "de", "en", "es", "fr", "hi", "it", "ja", "ko", "nl", "pl", "pt", "ru", "tr", "vi", "zh")
_TOKENIZER = T.WordTokenizer(split_cjk=True)


def _nan_mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else math.nan


def tokens(text: str) -> list[str]:
    """Lower-cased words, each CJK character its own token; punctuation dropped."""
    return _TOKENIZER.tokenize(text)


def ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def length_ratio(completions: Sequence[str], references: Sequence[Sequence[str]], *, cjk: str = "auto") -> float:
    """sum(len(completion)) / sum(len(reference)) over the batch, in ``length_units``.

    An example's reference length is the mean over its references; CJK (characters) or words
    is decided per example from its references, as in ``length_penalty``. A ratio of totals, not
    a mean of ratios, so a one-word reference cannot dominate. NaN when every reference is empty.
    """
    out = ref = 0.0
    for c, rs in zip(completions, references):
        use = T.use_cjk(rs, cjk)
        out += T.length_units(c, use)
        ref += _nan_mean([T.length_units(r, use) for r in rs]) if rs else 0.0
    return out / ref if ref > 0 else math.nan


def copies_prompt(prompt: str, completion: str, *, min_tokens: int = 4, min_share: float = 0.5) -> bool:
    """Whether ``completion`` copies ``prompt``, over ``tokens``.

    Let k be the length of the longest run of tokens that occurs contiguously in both. The
    completion copies when it is non-empty and either (a) k equals its length (the whole
    completion is a verbatim token run of the prompt, however short: an untranslated 'Open
    file'), or (b) k >= ``min_tokens`` and k >= ``min_share`` of its tokens (half the output
    pasted from the prompt).
    """
    c, p = tokens(completion), tokens(prompt)
    if not c or not p:
        return False
    k = SequenceMatcher(None, p, c, autojunk=False).find_longest_match(0, len(p), 0, len(c)).size
    return k == len(c) or (k >= min_tokens and k >= min_share * len(c))


def copy_rate(prompts: Sequence[str], completions: Sequence[str], **kw: Any) -> float:
    """Share of completions that copy their prompt (``copies_prompt``); NaN for no completions."""
    return _nan_mean([float(copies_prompt(p, c, **kw)) for p, c in zip(prompts, completions)])


def distinct_n(completions: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whole batch.

    1 when no n-gram repeats anywhere, near 0 when every output is the same; NaN when no
    completion has n tokens.
    """
    grams = [g for c in completions for g in ngrams(tokens(c), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition(completions: Sequence[str], n: int = 3) -> float:
    """Mean over completions of the share of repeated n-grams within each: 1 - unique / all.

    'a b c a b c' (n=3): 4 trigrams, 3 unique -> 0.25. A completion shorter than n repeats
    nothing and counts 0. NaN for no completions.
    """
    shares = []
    for c in completions:
        grams = ngrams(tokens(c), n)
        shares.append(1.0 - len(set(grams)) / len(grams) if grams else 0.0)
    return _nan_mean(shares)


def zero_variance_share(rewards: Any) -> float:
    """rewards (B, G) -> share of the B groups whose G rewards are all equal (max == min).

    Such a group gets zero advantage from a group baseline (RLOO, GRPO): when the share is 1,
    nothing is learned. Exact equality, as in ``grpo.advantages``. NaN when G < 2.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        return math.nan
    return float((rewards.amax(dim=1) == rewards.amin(dim=1)).float().mean())


def _base_language(language: str) -> str:
    return language.replace("_", "-").split("-")[0].lower()


@functools.lru_cache(maxsize=8)
def _identifier(language: str) -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if language not in ident.nb_classes:
        raise RlftError(f"eval.language: py3langid does not know language '{language}' "
                        f"(known: {', '.join(sorted(set(ident.nb_classes)))})")
    ident.set_languages(sorted(set(LANGID_CANDIDATES) | {language}))
    return ident


OFF_LANGUAGE_P = 0.1  # below this probability of the target language a text counts as off-language


def judged_text(text: str) -> str | None:
    """``text`` without format placeholders, or None when no letter is left to judge."""
    for ph in T.placeholders(text):
        text = text.replace(ph, " ")
    return text if any(ch.isalpha() for ch in text) else None


def off_language_share(texts: Sequence[str], language: str) -> float | None:
    """Share of ``texts`` that py3langid puts in another language than ``language`` (ISO 639-1,
    e.g. 'zh', 'fr', 'en'; 'zh-CN' is read as 'zh').

    The identifier chooses among ``LANGID_CANDIDATES`` and the target; a text is off-language when
    its probability of the target is below ``OFF_LANGUAGE_P``. Measured on 300 translation_fr
    validation rows and the 139 short English titles of the demo's RL model: the argmax (any other
    language more likely) flagged 10% of those titles ('A group command' -> fr); P < 0.1 flags 1.0%
    of the French references, 2.9% of the titles, and 89% of English prompts as not French. A text with no letter
    once placeholders are removed (empty, '%s: %d') is not judged and counts as in language.
    None, with a warning once, when py3langid is not installed; NaN for no texts.
    """
    language = _base_language(language)
    try:
        ident = _identifier(language)
    except ImportError:
        _warn_no_langid()
        return None
    judged = [judged_text(t) for t in texts]
    return _nan_mean([float(j is not None and dict(ident.rank(j)).get(language, 0.0) < OFF_LANGUAGE_P) for j in judged])


@functools.lru_cache(maxsize=1)
def _warn_no_langid() -> None:
    warnings.warn("eval.language is set but py3langid is not installed, so off_language is not logged "
                  "(pip install 'rlft[monitors]'; set eval.language= to silence this)", RuntimeWarning, stacklevel=3)


def text_monitors(prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]], *,
                  language: str | None = None, cjk: str = "auto") -> dict[str, float]:
    """The monitors of a batch of outputs: length_ratio, copy_rate, distinct_1/2, repetition and,
    with a ``language``, off_language."""
    out = {"length_ratio": length_ratio(completions, references, cjk=cjk),
           "copy_rate": copy_rate(prompts, completions),
           "distinct_1": distinct_n(completions, 1), "distinct_2": distinct_n(completions, 2),
           "repetition": repetition(completions)}
    if language:
        share = off_language_share(completions, language)
        if share is not None:
            out["off_language"] = share
    return out


def component_columns(components: Sequence[Any]) -> dict[str, list[float]]:
    """'reward/<name>' -> unweighted values of each reward component (``rewards.Component``);
    characters other than letters, digits, '_' and '.' become '_', a repeated name gets '_2', '_3'."""
    out: dict[str, list[float]] = {}
    for c in components:
        base = COMPONENT_PREFIX + "".join(ch if ch.isalnum() or ch in "_." else "_" for ch in c.name)
        key, i = base, 1
        while key in out:
            i += 1
            key = f"{base}_{i}"
        out[key] = list(c.values)
    return out


def component_means(components: Sequence[Any]) -> dict[str, float]:
    """Mean of each component ('reward/<name>'), only for a reward of several components."""
    cols = component_columns(components)
    return {k: _nan_mean(v) for k, v in cols.items()} if len(cols) > 1 else {}


def rollout_monitors(prompts: Sequence[str], completions: Sequence[str], references: Sequence[Sequence[str]],
                     rewards: Any, components: Sequence[Any], *, language: str | None = None,
                     cjk: str = "auto") -> dict[str, float]:
    """A train step's monitors: ``text_monitors`` of the N = B * G completions, zero_var_groups of
    the task rewards (B, G) and each reward component's mean."""
    return {"zero_var_groups": zero_variance_share(rewards), **component_means(components),
            **text_monitors(prompts, completions, references, language=language, cjk=cjk)}


def reward_metric_divergence(history: Sequence[Sequence[float]], evals: int = 2) -> bool:
    """history: (train reward, validation metric) per evaluation, oldest first.

    True when at each of the last ``evals`` evaluations the metric fell and the train reward
    rose against the evaluation before (so ``evals + 1`` points are needed). A NaN (no train
    reward before the first evaluation) compares false.
    """
    if len(history) < evals + 1:
        return False
    pts = list(history)[-(evals + 1):]
    return all(b[0] > a[0] and b[1] < a[1] for a, b in zip(pts, pts[1:]))


class DivergenceWatch:
    """Collects the train rewards between evaluations and checks ``reward_metric_divergence``.

    The train reward of an evaluation is the mean logged train reward since the one before.
    Saved in and resumed from the checkpoint (``state_dict``), like the tail guard.
    """

    def __init__(self, evals: int = 2):
        self.evals = evals
        self.window: list[float] = []
        self.history: list[list[float]] = []

    def add(self, reward: float) -> None:
        self.window.append(float(reward))

    def update(self, metric: float) -> dict[str, float]:
        """Close the window at an evaluation: {'train_reward', 'reward_metric_divergence' 0/1}."""
        train_reward = _nan_mean(self.window)
        self.window = []
        self.history.append([train_reward, float(metric)])
        return {"train_reward": train_reward,
                DIVERGENCE_KEY: int(reward_metric_divergence(self.history, self.evals))}

    def message(self, metric_name: str) -> str:
        pts = self.history[-(self.evals + 1):]
        rewards = " -> ".join(f"{p[0]:.3f}" for p in pts)
        metrics = " -> ".join(f"{p[1]:.2f}" for p in pts)
        return (f"warning: validation {metric_name} fell ({metrics}) while the train reward rose ({rewards}) "
                f"for {self.evals} evaluations in a row: the reward may be hacked; check length_ratio, "
                "copy_rate, repetition and off_language in metrics.jsonl")

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "history": [list(p) for p in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = [float(x) for x in state.get("window", [])]
        self.history = [[float(a), float(b)] for a, b in state.get("history", [])]
