"""Reference-based text metrics: per-example scores and corpus scores.

The per-example functions return each metric's native scale (ROUGE, exact match and
placeholders 0..1; BLEU and chrF 0..100, as sacrebleu reports them). ``METRICS`` wraps
them as evaluation metrics on a common 0..100 scale; the rewards in ``registry`` divide
by 100 instead. sacrebleu and rouge-score are imported inside the functions: importing
rouge-score pulls in nltk, which takes seconds.

``cjk`` ('auto', 'always', 'never') chooses character tokenization for ROUGE and BLEU;
'auto' decides per example from its references (and, for corpus BLEU, from all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rlft.errors import RlftError
from rlft.rewards import text as T
from rlft.rewards.text import as_references

Refs = Sequence[Sequence[str]]
ROUGE_TYPES = {"rouge1": "rouge1", "rouge2": "rouge2", "rouge_l": "rougeL"}


@lru_cache(maxsize=None)
def _rouge_scorer(rouge_type: str, split_cjk: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([rouge_type], tokenizer=T.WordTokenizer(split_cjk))


def rouge_scores(rouge_type: str, hyps: Sequence[str], refs: Refs, *, cjk: str = "auto") -> list[float]:
    """ROUGE F-measure in 0..1, best reference per example (rouge-score's ``score_multi``)."""
    key = ROUGE_TYPES.get(rouge_type, rouge_type)
    out = []
    for hyp, rs in zip(hyps, as_references(hyps, refs)):
        scorer = _rouge_scorer(key, T.use_cjk(rs, cjk))
        out.append(max(scorer.score(r, hyp)[key].fmeasure for r in rs))
    return out


@lru_cache(maxsize=None)
def _bleu(tokenize: str, effective_order: bool):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, effective_order=effective_order)


@lru_cache(maxsize=None)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


def bleu_scores(hyps: Sequence[str], refs: Refs, *, cjk: str = "auto") -> list[float]:
    """sacrebleu sentence BLEU (exp smoothing, effective order) in 0..100, all references at once."""
    out = []
    for hyp, rs in zip(hyps, as_references(hyps, refs)):
        c = T.use_cjk(rs, cjk)
        bleu = _bleu(T.bleu_tokenize_name(c), True)
        out.append(bleu.sentence_score(T.prepare_for_bleu(hyp, c), [T.prepare_for_bleu(r, c) for r in rs]).score)
    return out


def chrf_scores(hyps: Sequence[str], refs: Refs) -> list[float]:
    """sacrebleu sentence chrF (character 6-grams, beta 2) in 0..100; it picks the best reference."""
    chrf = _chrf()
    return [chrf.sentence_score(h, list(rs)).score for h, rs in zip(hyps, as_references(hyps, refs))]


def _streams(refs: list[tuple[str, ...]]) -> list[list[str]]:
    # sacrebleu takes one stream per reference position; examples with fewer references are
    # padded with their first one, which changes neither BLEU's clipped counts nor chrF's best match.
    width = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else r[0] for r in refs] for k in range(width)]


def corpus_bleu(hyps: Sequence[str], refs: Refs, *, cjk: str = "auto") -> float:
    """sacrebleu corpus BLEU in 0..100; CJK tokenization if any reference needs it ('auto')."""
    rs = as_references(hyps, refs)
    if not rs:
        return 0.0
    c = T.use_cjk([r for group in rs for r in group], cjk)
    hyps = [T.prepare_for_bleu(h, c) for h in hyps]
    streams = [[T.prepare_for_bleu(r, c) for r in s] for s in _streams(rs)]
    return _bleu(T.bleu_tokenize_name(c), False).corpus_score(hyps, streams).score


def corpus_chrf(hyps: Sequence[str], refs: Refs) -> float:
    """sacrebleu corpus chrF in 0..100 (statistics summed over the corpus, not a mean)."""
    rs = as_references(hyps, refs)
    if not rs:
        return 0.0
    return _chrf().corpus_score(list(hyps), _streams(rs)).score


def exact_match_scores(hyps: Sequence[str], refs: Refs) -> list[float]:
    """1 if the completion equals any reference up to whitespace and case, else 0."""
    out = []
    for h, rs in zip(hyps, as_references(hyps, refs)):
        h = T.normalize_for_match(h)
        out.append(float(any(h == T.normalize_for_match(r) for r in rs)))
    return out


def placeholder_scores(hyps: Sequence[str], refs: Refs) -> list[float]:
    """Placeholder agreement in 0..1, best reference (see ``text.placeholder_score``)."""
    return [max(T.placeholder_score(h, r) for r in rs) for h, rs in zip(hyps, as_references(hyps, refs))]


@dataclass(frozen=True)
class Metric:
    """An evaluation metric on a 0..100 scale.

    ``sentence(hyps, refs, cjk=...)`` gives one score per example; ``corpus(hyps, refs,
    cjk=...)`` the corpus score (sacrebleu's corpus statistic for BLEU and chrF, the mean of
    the sentence scores otherwise). ``refs[i]`` holds the references of ``hyps[i]``.
    """

    name: str
    sentence: Callable[..., list[float]]
    corpus: Callable[..., float]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _mean_metric(name: str, per_example: Callable[..., list[float]], scale: float) -> Metric:
    def sentence(hyps: Sequence[str], refs: Refs, *, cjk: str = "auto") -> list[float]:
        return [scale * s for s in per_example(hyps, refs, cjk=cjk)]

    def corpus(hyps: Sequence[str], refs: Refs, *, cjk: str = "auto") -> float:
        return _mean(sentence(hyps, refs, cjk=cjk))

    sentence.__name__, corpus.__name__ = f"{name}_sentence", f"{name}_corpus"
    return Metric(name, sentence, corpus)


def _rouge_metric(name: str) -> Metric:
    return _mean_metric(name, lambda h, r, cjk: rouge_scores(name, h, r, cjk=cjk), 100.0)


def _embedding_similarity(hyps: Sequence[str], refs: Refs, cjk: str = "auto") -> list[float]:
    from rlft.rewards.embedding import similarity

    return [max(0.0, s) for s in similarity(hyps, as_references(hyps, refs))]


METRICS: dict[str, Metric] = {
    "chrf": Metric(
        "chrf",
        lambda hyps, refs, *, cjk="auto": chrf_scores(hyps, refs),
        lambda hyps, refs, *, cjk="auto": corpus_chrf(hyps, refs),
    ),
    "bleu": Metric("bleu", bleu_scores, corpus_bleu),
    "rouge1": _rouge_metric("rouge1"),
    "rouge2": _rouge_metric("rouge2"),
    "rouge_l": _rouge_metric("rouge_l"),
    "exact_match": _mean_metric("exact_match", lambda h, r, cjk: exact_match_scores(h, r), 100.0),
    "placeholders": _mean_metric("placeholders", lambda h, r, cjk: placeholder_scores(h, r), 100.0),
    "embedding": _mean_metric("embedding", _embedding_similarity, 100.0),
}
