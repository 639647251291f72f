"""The evaluation protocol of the benchmarks, in code rather than in prose.

Four things the learning benchmark once stated and then did not do (issue 9): it scored the test
split again after extending a grid, replaced a selection rule by a fallback without saying so,
tuned RL against a single SFT setting, and reported one seed. Each has a piece here:

* ``TestLedger``: the test split of a (task, model, protocol) is scored through ``TestLedger.score``
  only. Every scoring is recorded (what, when, rows, scores) in a JSON ledger under the results
  directory, *before* the models are scored, so a crash still counts; a second scoring is refused
  unless ``rescore=True`` with a reason, and ``summary()`` then says "test scored N times".
* ``select``: choice on validation only, by rules written as data ("second_metric >= baseline - 1",
  "max metric"). Every rule's outcome per candidate is kept and printed; when no candidate meets a
  filter, the fallback is recorded and printed, never silent.
* ``across_seeds``: the mean and Student-t interval of a quantity over seeds, shown beside the
  paired-bootstrap interval of one seed (``rlft.eval.bootstrap``), which only covers test-set
  sampling, not training noise.
* ``check``: a target written as rules, each outcome printed, met only when all are.

Why here and not in ``rlft.eval``: the library already ships the reusable statistic
(``paired_bootstrap``); the ledger and the arms are the benchmark's discipline about its own
result files, and no library call ever needs them.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from benchmarks.common import log, utc_now, write_json

OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, ">": operator.gt,
                                                   "<": operator.lt}


class ProtocolError(RuntimeError):
    """A step the protocol forbids (e.g. a second test scoring without ``rescore``)."""


def config_hash(obj: Any) -> str:
    """12 hex digits of the sha256 of ``obj`` as canonical JSON: the identity of a candidate."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# The test ledger

class TestLedger:
    """Every test scoring of one (task, model, protocol), in ``root/test-ledger/<protocol>--<task>--<model>.json``."""

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(self, root: Path, *, task: str, model: str, protocol: str):
        self.task, self.model, self.protocol = task, model, protocol
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model).name if "/" in model else model)
        self.path = Path(root) / "test-ledger" / f"{protocol}--{task}--{slug}.json"

    def scorings(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return json.loads(self.path.read_text(encoding="utf-8"))["scorings"]

    def score(self, items: Mapping[str, Mapping[str, Any]], score_fn: Callable[[str, Mapping[str, Any]], dict],
              *, rescore: bool = False, reason: str = "") -> dict[str, dict[str, Any]]:
        """``score_fn(item_id, item)`` -> an eval result for each item (one model each: its
        ``model_dir``, ``config_hash`` and ``candidate``), once per (task, model, protocol).

        A second call raises ``ProtocolError`` unless ``rescore`` is set with a non-empty ``reason``.
        """
        before = self.scorings()
        if before and not rescore:
            last = before[-1]
            raise ProtocolError(
                f"the test split of ({self.task}, {self.model}, {self.protocol}) was already scored "
                f"{len(before)} time(s), last at {last['when']} for {', '.join(w['id'] for w in last['what'])} "
                f"(ledger {self.path}). Choose on validation; to score it again anyway pass --rescore-test "
                f"with --rescore-reason, and the results will say so.")
        if before and not reason.strip():
            raise ProtocolError("a second test scoring needs a reason (--rescore-reason)")
        entry = {"n": len(before) + 1, "when": utc_now(), "reason": reason.strip() or "first scoring",
                 "what": [{"id": k, **{f: v.get(f) for f in ("model_dir", "config_hash", "candidate")}}
                          for k, v in items.items()], "status": "started"}
        self._write(before + [entry])  # recorded before any test number is seen
        results = {k: score_fn(k, v) for k, v in items.items()}
        ids = {tuple(r["ids"]) for r in results.values()}
        entry.update(status="done", rows=len(next(iter(ids))) if len(ids) == 1 else sorted(len(i) for i in ids),
                     ids_hash=config_hash(sorted(ids)),
                     scores={k: {"metric": r["metric"], "second_metric": r.get("second_metric")}
                             for k, r in results.items()})
        self._write(before + [entry])
        return results

    def summary(self) -> dict[str, Any]:
        """What the results file carries: the count, and each scoring's time, reason and what."""
        scorings = self.scorings()
        n = len(scorings)
        # relative to the working directory (the repository root, as the commands are run): a results
        # file names no path of the machine it ran on
        return {"ledger": os.path.relpath(self.path), "test_scored": n,
                "note": "test scored once" if n == 1 else f"test scored {n} times",
                "scorings": [{k: s.get(k) for k in ("n", "when", "reason", "rows", "status")} |
                             {"what": [w["id"] for w in s["what"]]} for s in scorings]}

    def _write(self, scorings: list[dict[str, Any]]) -> None:
        write_json(self.path, {"task": self.task, "model": self.model, "protocol": self.protocol,
                               "scorings": scorings})


# ---------------------------------------------------------------------------------------------
# Rules: selection on validation and target checks share one grammar and one operator table

@dataclass(frozen=True)
class Rule:
    """``max <key>`` / ``min <key>`` (the pick) or ``<key> <op> [baseline] [+|- number]`` (a filter).

    A filter's threshold is ``baseline[key] + offset`` when it names ``baseline``, else ``offset``.
    """

    text: str
    key: str
    op: str  # 'max', 'min' or one of OPS
    offset: float = 0.0
    relative: bool = False


_PICK = re.compile(r"^(max|min)\s+(\w+)$")
_FILTER = re.compile(r"^(\w+)\s*(>=|<=|>|<)\s*(baseline)?\s*(?:([+-]?)\s*([0-9.eE+-]+))?$")


def parse_rule(text: str) -> Rule:
    text = " ".join(text.split())
    if m := _PICK.match(text):
        return Rule(text, m.group(2), m.group(1))
    m = _FILTER.match(text)
    if not m or (m.group(3) is None and m.group(5) is None):
        raise ProtocolError(f"rule {text!r}: expected 'max KEY', 'min KEY' or 'KEY OP [baseline] [+|- NUMBER]'")
    offset = float(m.group(5) or 0.0) * (-1.0 if m.group(4) == "-" else 1.0)
    return Rule(text, m.group(1), m.group(2), offset, relative=m.group(3) is not None)


def _number(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class Selection:
    """The outcome of ``select``: the chosen id, each rule's outcome per candidate, the fallbacks."""

    arm: str
    chosen: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for step in self.steps:
            pick = step["rule"].split()[0] in ("max", "min")
            cells = ", ".join(f"{c}: {_fmt(o['value'])}{'' if o['threshold'] is None else ' vs ' + _fmt(o['threshold'])}"
                              f"{(' <- chosen' if o['passed'] else '') if pick else (' pass' if o['passed'] else ' FAIL')}"
                              for c, o in step["outcomes"].items())
            out.append(f"[{self.arm}] rule '{step['rule']}': {cells}")
            if step.get("note"):
                out.append(f"[{self.arm}] note: {step['note']}")
            if step["fallback"]:
                out.append(f"[{self.arm}] FALLBACK: {step['fallback']}")
        out.append(f"[{self.arm}] chosen on validation: {self.chosen}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def select(arm: str, candidates: Mapping[str, Mapping[str, Any]], rules: Sequence[str], *,
           baseline: Mapping[str, Any] | None = None, echo: bool = True) -> Selection:
    """Choose one of ``candidates`` (id -> VALIDATION summary) by ``rules``, applied in order.

    Filters narrow the set; a filter that no remaining candidate meets keeps the set as it was and
    records that fallback. The last rule must be a pick (max/min); ties go to the earlier id.
    """
    if not candidates:
        raise ProtocolError(f"[{arm}] no candidates to choose from")
    parsed = [parse_rule(r) for r in rules]
    if not parsed or parsed[-1].op not in ("max", "min") or any(r.op in ("max", "min") for r in parsed[:-1]):
        raise ProtocolError(f"[{arm}] rules {list(rules)}: filters first, then exactly one 'max KEY' or 'min KEY'")
    alive = list(candidates)
    sel = Selection(arm, chosen="")
    for rule in parsed:
        outcomes: dict[str, dict[str, Any]] = {}
        if rule.op in OPS:
            if rule.relative and (baseline is None or _number(baseline.get(rule.key)) is None):
                raise ProtocolError(f"[{arm}] rule '{rule.text}' needs a baseline with '{rule.key}'")
            threshold = (float(baseline[rule.key]) if rule.relative else 0.0) + rule.offset
            for c in alive:
                value = _number(candidates[c].get(rule.key))
                outcomes[c] = {"value": value, "threshold": threshold,
                               "passed": value is not None and OPS[rule.op](value, threshold)}
            passed = [c for c in alive if outcomes[c]["passed"]]
            fallback = None
            if not passed:
                fallback = (f"no candidate met '{rule.text}'; the rule was dropped and all {len(alive)} "
                            f"remaining candidates stay in the choice")
                sel.fallbacks.append(fallback)
            else:
                alive = passed
        else:
            scored = [(c, _number(candidates[c].get(rule.key))) for c in alive]
            valid = [(c, v) for c, v in scored if v is not None]
            if not valid:
                raise ProtocolError(f"[{arm}] rule '{rule.text}': no candidate has '{rule.key}'")
            best = (max if rule.op == "max" else min)(valid, key=lambda cv: cv[1])  # first of equals
            for c, v in scored:
                outcomes[c] = {"value": v, "threshold": None, "passed": c == best[0]}
            fallback = None
            sel.chosen = best[0]
            tied = [c for c, v in valid if v == best[1]]
            note = f"tie on {rule.key} between {', '.join(tied)}: the first listed was chosen" if len(tied) > 1 else None
        sel.steps.append({"rule": rule.text, "outcomes": outcomes, "kept": list(alive), "fallback": fallback,
                          **({"note": note} if rule.op in ("max", "min") and note else {})})
    if echo:
        for line in sel.lines():
            log(line)
    return sel


def check(name: str, value: Any, rule: str, *, baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One target rule on a measured ``value``: ``rule`` is the filter's right side ('>= 2',
    '<= baseline + 0.05', the baseline read at ``baseline[name]``). A missing value fails, and says so."""
    r = parse_rule(f"{name} {rule}")
    v = _number(value)
    base = _number((baseline or {}).get(name)) if r.relative else 0.0
    if base is None:
        return {"rule": r.text, "value": v, "threshold": None, "passed": False, "why": f"no baseline value of {name}"}
    threshold = base + r.offset
    return {"rule": r.text, "value": v, "threshold": threshold,
            "passed": v is not None and OPS[r.op](v, threshold), **({"why": "missing value"} if v is None else {})}


def verdict(checks: Sequence[dict[str, Any]], *, label: str, echo: bool = True) -> dict[str, Any]:
    """All checks, printed one per line, and whether every one passed."""
    met = bool(checks) and all(c["passed"] for c in checks)
    if echo:
        for c in checks:
            log(f"[{label}] {'PASS' if c['passed'] else 'FAIL'} {c['rule']}: value {_fmt(c['value'])}"
                f"{'' if c['threshold'] is None else ', threshold ' + _fmt(c['threshold'])}"
                f"{' (' + c['why'] + ')' if c.get('why') else ''}")
        log(f"[{label}] target {'MET' if met else 'NOT met'}")
    return {"checks": list(checks), "met": met}


# ---------------------------------------------------------------------------------------------
# Seeds

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (any statistics table).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}; past 30 degrees of freedom the Cornish-Fisher expansion around z = 1.96."""
    if df < 1:
        raise ProtocolError(f"t quantile: need at least 1 degree of freedom, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def across_seeds(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds and its 95% Student-t interval: mean +- t_{0.975, n-1} * sd / sqrt(n).

    With one seed the interval is undefined (None), not zero-width.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ProtocolError("across_seeds: no values")
    mean = sum(xs) / n
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "low": None, "high": None, "values": xs}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "values": xs}
