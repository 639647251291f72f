"""The benchmark protocol (benchmarks/protocol.py): the test ledger, rules, seeds, and a smoke run of
benchmarks/learning.py that goes through all of it on a tiny model."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from benchmarks import learning
from benchmarks import protocol as P


def _eval(metric: float, second: float = 5.0, n: int = 3) -> dict:
    return {"ids": [f"id{i}" for i in range(n)], "metric": metric, "second_metric": second}


# ---------------------------------------------------------------------------------------------
# Test ledger

def test_ledger_refuses_second_scoring_and_records_forced_one(tmp_path):
    ledger = P.TestLedger(tmp_path, task="summarization", model="org/some-model", protocol="v9")
    calls = []

    def score(ident, item):
        # the scoring is in the ledger before any test number exists
        assert ledger.scorings()[-1]["status"] == "started"
        calls.append(ident)
        return _eval({"a": 10.0, "b": 12.5}[ident])

    items = {"a": {"model_dir": "/m/a", "config_hash": "h1", "candidate": {"lr": 1e-4}},
             "b": {"model_dir": "/m/b", "config_hash": "h2", "candidate": {"lr": 3e-4}}}
    out = ledger.score(items, score)
    assert calls == ["a", "b"] and out["b"]["metric"] == 12.5
    assert ledger.path == tmp_path / "test-ledger" / "v9--summarization--some-model.json"
    (first,) = ledger.scorings()
    assert first["status"] == "done" and first["rows"] == 3 and first["reason"] == "first scoring"
    assert first["scores"] == {"a": {"metric": 10.0, "second_metric": 5.0}, "b": {"metric": 12.5, "second_metric": 5.0}}
    assert [w["config_hash"] for w in first["what"]] == ["h1", "h2"]
    assert ledger.summary()["note"] == "test scored once"

    with pytest.raises(P.ProtocolError, match="already scored 1 time"):
        ledger.score(items, score)
    with pytest.raises(P.ProtocolError, match="needs a reason"):
        ledger.score(items, score, rescore=True)
    assert calls == ["a", "b"] and len(ledger.scorings()) == 1  # refused before scoring anything

    ledger.score({"b": items["b"]}, score, rescore=True, reason="grid extended after publication")
    summary = ledger.summary()
    assert summary["test_scored"] == 2 and summary["note"] == "test scored 2 times"
    assert summary["scorings"][1]["reason"] == "grid extended after publication"
    assert summary["scorings"][1]["what"] == ["b"]
    # a new ledger object on the same file sees the same history (it lives on disk, not in memory)
    again = P.TestLedger(tmp_path, task="summarization", model="org/some-model", protocol="v9")
    assert again.summary()["test_scored"] == 2


def test_ledger_is_per_task_model_and_protocol(tmp_path):
    score = lambda ident, item: _eval(1.0)  # noqa: E731
    item = {"x": {"model_dir": "/m", "config_hash": "h", "candidate": None}}
    P.TestLedger(tmp_path, task="t1", model="m", protocol="p").score(item, score)
    for other in ({"task": "t2", "model": "m", "protocol": "p"}, {"task": "t1", "model": "m2", "protocol": "p"},
                  {"task": "t1", "model": "m", "protocol": "p2"}):
        P.TestLedger(tmp_path, **other).score(item, score)  # not refused: a different ledger
    with pytest.raises(P.ProtocolError):
        P.TestLedger(tmp_path, task="t1", model="m", protocol="p").score(item, score)


# ---------------------------------------------------------------------------------------------
# Rules

def test_parse_rule():
    r = P.parse_rule("second_metric >= baseline - 1")
    assert (r.key, r.op, r.offset, r.relative) == ("second_metric", ">=", -1.0, True)
    assert P.parse_rule("max metric").op == "max"
    assert P.parse_rule("truncation_rate <= 0.1") == P.Rule("truncation_rate <= 0.1", "truncation_rate", "<=", 0.1)
    for bad in ("metric", "metric ~ 2", "best metric"):
        with pytest.raises(P.ProtocolError):
            P.parse_rule(bad)


def test_select_records_every_outcome_and_picks_among_the_passing():
    cands = {"a": {"metric": 30.0, "second_metric": 7.0},  # best metric, but its second metric fell 3
             "b": {"metric": 25.0, "second_metric": 9.5},
             "c": {"metric": 20.0, "second_metric": 11.0}}
    sel = P.select("rl", cands, ["second_metric >= baseline - 1", "max metric"], baseline={"second_metric": 10.0},
                   echo=False)
    assert sel.chosen == "b" and sel.fallbacks == []
    filt, pick = sel.steps
    assert {c: o["passed"] for c, o in filt["outcomes"].items()} == {"a": False, "b": True, "c": True}
    assert filt["outcomes"]["a"] == {"value": 7.0, "threshold": 9.0, "passed": False}
    assert list(pick["outcomes"]) == ["b", "c"]  # the pick only sees what the filter kept
    assert any("a: 7.000 vs 9.000 FAIL" in line for line in sel.lines())


def test_select_fallback_is_recorded_and_printed(capsys):
    cands = {"a": {"metric": 30.0, "second_metric": 7.0}, "b": {"metric": 25.0, "second_metric": 6.0}}
    sel = P.select("rl", cands, ["second_metric >= baseline - 1", "max metric"], baseline={"second_metric": 10.0})
    assert sel.chosen == "a"
    assert len(sel.fallbacks) == 1 and "no candidate met 'second_metric >= baseline - 1'" in sel.fallbacks[0]
    assert sel.steps[0]["fallback"] == sel.fallbacks[0]
    printed = capsys.readouterr().out
    assert "FALLBACK: no candidate met" in printed and "chosen on validation: a" in printed
    assert sel.as_dict()["fallbacks"] == sel.fallbacks  # what the results file keeps


def test_select_tie_is_noted_and_bad_rules_refused():
    sel = P.select("sft", {"x": {"metric": 1.0}, "y": {"metric": 1.0}}, ["max metric"], echo=False)
    assert sel.chosen == "x" and "tie on metric between x, y" in sel.steps[0]["note"]
    with pytest.raises(P.ProtocolError, match="needs a baseline"):
        P.select("rl", {"x": {"metric": 1.0, "second_metric": 1.0}}, ["second_metric >= baseline", "max metric"])
    with pytest.raises(P.ProtocolError, match="exactly one"):
        P.select("rl", {"x": {"metric": 1.0}}, ["metric >= 0"])


def test_best_sft_includes_the_base_model():
    # The same call learning.run_task makes: the base model competes with the SFT candidates.
    vals = {"base": {"metric": 14.5}, "sft-lr0.0001": {"metric": 13.9}, "sft-lr0.0003": {"metric": 14.1}}
    assert P.select("best_sft", vals, ["max metric"], echo=False).chosen == "base"
    vals["sft-lr0.0003"]["metric"] = 15.0
    assert P.select("best_sft", vals, ["max metric"], echo=False).chosen == "sft-lr0.0003"
    # and the tuning budget is equal or refused
    args = SimpleNamespace(sft_grid="1e-4", grid="rloo:1e-4:0.7:0,rloo:3e-4:0.7:0")
    with pytest.raises(P.ProtocolError, match="equal tuning budget"):
        learning.run_task("summarization", args)


def test_check_and_verdict(capsys):
    ok = P.check("truncation_rate", 0.10, "<= baseline + 0.05", baseline={"truncation_rate": 0.06})
    assert ok["passed"] and ok["threshold"] == pytest.approx(0.11)
    bad = P.check("metric_delta_mean_over_seeds", 1.5, ">= 2")
    missing = P.check("copy_rate", None, "<= baseline + 0.05", baseline={"copy_rate": 0.0})
    no_base = P.check("repetition", 0.1, "<= baseline + 0.05", baseline={})
    assert not bad["passed"] and not missing["passed"] and not no_base["passed"]
    out = P.verdict([ok, bad, missing, no_base], label="t")
    assert not out["met"] and len(out["checks"]) == 4
    printed = capsys.readouterr().out
    assert "PASS truncation_rate" in printed and "FAIL metric_delta_mean_over_seeds >= 2" in printed
    assert "(missing value)" in printed and "target NOT met" in printed
    assert P.verdict([ok], label="t", echo=False)["met"]


# ---------------------------------------------------------------------------------------------
# Seeds

def test_across_seeds_t_interval_by_hand():
    ci = P.across_seeds([1.0, 2.0, 3.0])
    # mean 2, sd 1, half-width t_{0.975,2} * 1 / sqrt(3) = 4.303 / 1.7320508 = 2.48434
    assert ci["mean"] == 2.0 and ci["sd"] == pytest.approx(1.0)
    assert ci["low"] == pytest.approx(2.0 - 2.48434, abs=1e-4) and ci["high"] == pytest.approx(4.48434, abs=1e-4)
    ci = P.across_seeds([2.0, 4.0])  # sd sqrt(2), half 12.706 * sqrt(2) / sqrt(2) = 12.706
    assert (ci["low"], ci["high"]) == pytest.approx((3.0 - 12.706, 3.0 + 12.706))
    one = P.across_seeds([5.0])
    assert one["mean"] == 5.0 and one["low"] is None and one["high"] is None
    assert P.t_quantile_975(30) == 2.042 and abs(P.t_quantile_975(1000) - 1.9623) < 1e-3
    assert P.t_quantile_975(31) < 2.042 and math.isclose(P.t_quantile_975(10**9), 1.959964, abs_tol=1e-6)


# ---------------------------------------------------------------------------------------------
# The whole protocol, end to end, on a tiny model

def test_learning_smoke_runs_the_protocol(tmp_path):
    work = tmp_path / "work"
    # a rule nothing meets, so that the fallback has to show up in the results
    argv = ["--smoke", "--work", str(work), "--rl-rules", "second_metric >= baseline + 1000", "max metric"]
    assert learning.main(argv) == 0
    results = work / "results"
    data = json.loads((results / f"{learning.PROTOCOL}.json").read_text())
    e = data["tasks"]["summarization"]
    assert e["test_ledger"]["test_scored"] == 1 and e["test_ledger"]["note"] == "test scored once"
    # equal tuning budget, and best SFT chosen among the SFT candidates and the base model
    assert e["budget"]["K"] == 2 and all(len(e["candidates"][arm]) == 2 for arm in ("sft", "sft+rl", "rl-base"))
    best = e["selection"]["best_sft"]
    assert list(best["steps"][0]["outcomes"]) == ["base", *e["candidates"]["sft"]]
    assert e["best_sft"] == best["chosen"]
    # every rule's outcome kept; the unmeetable rule fell back, and says so
    for arm in ("sft+rl", "rl-base"):
        sel = e["selection"][arm]
        assert sel["fallbacks"] and "no candidate met 'second_metric >= baseline + 1000'" in sel["fallbacks"][0]
        assert all(not o["passed"] for o in sel["steps"][0]["outcomes"].values())
    # three seeds per trained arm, the t-interval beside the first seed's paired bootstrap
    assert all(e["across_seeds"][arm]["n"] == 3 for arm in ("sft", "sft+rl", "rl-base"))
    primary = e["comparisons"]["sft+rl - best_sft"]
    assert primary["metric_seeds"]["n"] == 3 and "low" in primary["bootstrap"]["metric"]
    # the target as rules; 8 of 139 test rows is not the whole split, and the rule says so
    checks = {c["rule"].split()[0]: c for c in e["target"]["checks"]}
    assert list(checks) == [name for name, _ in learning.TARGET]
    assert checks["whole_test_split"]["passed"] is False and e["target"]["met"] is False
    assert e["buckets"][0]["bucket"] == "all" and e["buckets"][0]["planned"] is True
    assert all(not b["planned"] for b in e["buckets"][1:])
    md = (results / f"{learning.PROTOCOL}.md").read_text()
    assert "FALLBACK" in md and "test scored once" in md and f"({e['best_sft']})" in md and "exploratory" in md
    # the machine each task ran on, with its load before and after
    assert e["machine"]["threads"] == 1 and len(e["machine"]["at_start"]["load_average"]) == 3
    assert f"{e['machine']['at_start']['cores']} cores" in md and "load " in md

    # LoRA models are scored as base + adapter: an SFT candidate's validation figure is the one its
    # run computed while training (learning-v2's merged export under bf16 was not)
    root = work / learning.PROTOCOL / "summarization"
    for ident, cand in e["candidates"]["sft"].items():
        run = json.loads((root / "sft" / f"lr{cand['candidate']['lr']:g}-seed0" / "summary.json").read_text())
        assert cand["val"]["metric"] == run["best_val"], ident
    # SFT+RL trains on from the SFT run's adapter on the base model
    for rl_dir in (root / "sft+rl").iterdir():
        run = json.loads((rl_dir / "summary.json").read_text())
        sft_dir = rl_dir.name.split("-from-")[1].rsplit("-seed", 1)[0]
        assert run["start_model"] == data["meta"]["model"]
        assert run["model_settings"]["lora.init_adapter"] == str(root / "sft" / sft_dir / "best" / "adapter")

    # a second scoring of the same (task, model, protocol) is refused ...
    assert learning.main(argv) == 2
    ledger_file = next((results / "test-ledger").iterdir())
    assert len(json.loads(ledger_file.read_text())["scorings"]) == 1
    # ... unless forced with a reason, and then the results say so
    assert learning.main(argv + ["--rescore-test", "--rescore-reason", "smoke: checking the ledger"]) == 0
    e = json.loads((results / f"{learning.PROTOCOL}.json").read_text())["tasks"]["summarization"]
    assert e["test_ledger"]["note"] == "test scored 2 times"
    assert e["test_ledger"]["scorings"][1]["reason"] == "smoke: checking the ledger"
    assert "test scored 2 times" in (results / f"{learning.PROTOCOL}.md").read_text()


def test_reused_sft_runs_must_have_this_commands_sft_settings(tmp_path):
    run = tmp_path / "lr0.0001-seed0"
    run.mkdir()
    summary = {"lr": 1e-4, "batch_size": 16, "eval_every": 10, "patience": 2, "val_n": 60, "start_model": "m",
               "steps_run": 40}
    (run / "summary.json").write_text(json.dumps(summary))
    args = SimpleNamespace(sft_batch=16, sft_eval_every=10, patience=2, val_rows=60, model="m", sft_max_steps=40)
    learning._check_reused_sft(run, args, 1e-4)  # the same settings: accepted
    with pytest.raises(P.ProtocolError, match=r"trained with other SFT settings: patience 2 \(this command: 3\)"):
        learning._check_reused_sft(run, SimpleNamespace(**{**vars(args), "patience": 3}), 1e-4)
    with pytest.raises(P.ProtocolError, match="more steps than --sft-max-steps"):
        learning._check_reused_sft(run, SimpleNamespace(**{**vars(args), "sft_max_steps": 20}), 1e-4)
