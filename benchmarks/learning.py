"""Benchmark: does RL beat supervised fine-tuning on held-out data? Under ``protocol.py``.

For each bundled task, four arms, the trained ones with K candidates each at one stated compute
budget per arm (``--sft-grid`` and ``--grid`` must have the same length K):

1. base: the model zero-shot;
2. SFT: K learning rates, each trained until validation stops improving (``--patience``, at most
   ``--sft-max-steps`` x ``--sft-batch`` examples); chosen on validation by ``--sft-rules``;
3. SFT+RL: K RL candidates from the chosen SFT model at ``--rl-steps`` x ``--prompts`` x ``--group``
   completions, chosen on validation by ``--rl-rules`` (baseline: the SFT model);
4. RL from the base model: the same K candidates and budget, chosen the same way (baseline: base).

"Best SFT" is the best validation metric among the SFT candidates AND the base model; the tables
name which. The chosen setting of each trained arm is rerun with every seed in ``--seeds`` (SFT+RL
at seed s: RL at seed s from the SFT model of seed s, so that an arm's seeds vary all its training); then
the test split is scored once, through ``protocol.TestLedger`` (a second scoring is refused
unless ``--rescore-test --rescore-reason ...``, and the results then say how often it was
scored). Reported: per arm the mean over seeds with its t-interval, SFT+RL - best SFT as the mean
of per-seed differences with its t-interval beside the paired-bootstrap CI of the first seed,
buckets (exploratory; only the whole-split row is a planned comparison), and the target as
rules, each outcome printed.

With LoRA (``lora.r`` in ``--set``) every trained model is scored as the base model with its
adapter on top, in the run's precision (what training computed and validated), and SFT+RL trains on
from the chosen SFT run's adapter (``lora.init_adapter``: the KL reference is that SFT policy).
Protocol learning-v2 scored the merged export instead and started SFT+RL from it; under bf16 the
merged model rounds base + delta to bf16 in every matmul and loses part of the adapter
(``benchmarks.merge_precision``), so v3 is v2 with that fixed; the SFT stage is the same, and
``--reuse-sft DIR`` takes SFT runs already made by the same SFT settings (each run's summary is
checked against this command's SFT budget; the results file records the directory).

Results: learning-v3.{json,md} in ``--results`` and the ledger in ``--results``/test-ledger/.
``--smoke`` runs all of it on a tiny random model in under a minute (tests/benchmarks).

    python -m benchmarks.learning --tasks summarization --work runs/bench3
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Any

from rlft.atomic import atomic_write

from benchmarks import common
from benchmarks import protocol as P
from benchmarks.common import RESULTS, compare, eval_model, fmt_ci, log, rl_run, summary
from benchmarks.learning_report import markdown, seeds_ci

PROTOCOL = "learning-v3"
TASKS = ("summarization", "code_summary", "dialogue", "translation", "translation_fr")
# Held-out rows scored per task (first N of the split, which is in sha256 order, i.e. a random
# sample); 0 = the whole split. Only dialogue (1000 rows, 48-token replies) is subsampled, and
# the target rule "on the whole test split" then fails for it, as it should.
TEST_ROWS = {"translation": 0, "translation_fr": 0, "summarization": 0, "dialogue": 300, "code_summary": 0}
MODEL_SETTINGS = ("data.template=chat", "lora.r=16")
SFT_RULES = ("max metric",)
RL_RULES = ("second_metric >= baseline - 1", "max metric")
# The target, as data: (quantity, rule). Deltas are SFT+RL minus best SFT on the test split; the
# monitors are the first seed's test values against best SFT's ('baseline').
TARGET = (
    ("metric_delta_mean_over_seeds", ">= 2"),
    ("metric_delta_bootstrap_low", "> 0"),
    ("metric_delta_seeds_low", "> 0"),
    ("whole_test_split", ">= 1"),
    ("second_delta_bootstrap_high", ">= 0"),  # not significantly lower: the CI reaches 0 or above
    ("abs_log_length_ratio", "<= baseline + 0.405"),  # no farther from the references' length, by x1.5
    ("truncation_rate", "<= baseline + 0.05"),
    ("repetition", "<= baseline + 0.05"),
    ("copy_rate", "<= baseline + 0.05"),
)
ARMS = ("base", "sft", "sft+rl", "rl-base")


def parse_grid(text: str) -> list[dict[str, Any]]:
    """'scst:3e-5:1.0:0,rloo:3e-5:0.7:0.02' -> candidates (algo, lr, temperature, kl_coef), each with
    an optional fifth field: a reward spec that replaces the task's ('rloo:1e-4:0.7:0:0.8*chrf + 0.2*length_penalty')."""
    out = []
    for item in text.split(","):
        algo, lr, temperature, kl, *reward = item.strip().split(":", 4)
        cand = {"algo": algo, "lr": float(lr), "temperature": float(temperature), "kl_coef": float(kl)}
        if reward:
            cand["reward"] = reward[0].strip()
        out.append(cand)
    return out


def cand_name(c: dict[str, Any]) -> str:
    name = f"{c['algo']}-lr{c['lr']:g}-t{c['temperature']:g}-kl{c.get('kl_coef', 0):g}"
    if c.get("alpha"):
        name += f"-a{c['alpha']:g}-f{c.get('floor', 0):g}"
    if c.get("reward"):  # the spec itself is not a file name: a short hash of it
        name += "-r" + hashlib.sha256(c["reward"].encode()).hexdigest()[:6]
    return name


class Arms:
    """Training and validation of one task's candidates; every run and evaluation cached under --work."""

    def __init__(self, task: str, args: argparse.Namespace):
        self.task, self.args = task, args
        self.root = Path(args.work) / PROTOCOL / task
        self.model_settings = common.settings_of(args.set)
        self.lora = int(self.model_settings.get("lora.r", 0) or 0) > 0
        # The base model is scored without an adapter; a trained LoRA model as base + its adapter.
        self.eval_settings = {k: v for k, v in self.model_settings.items() if not k.startswith("lora.")}
        self.kw = {"threads": args.threads, "precision": args.precision}
        self.test_split_rows = 0

    def val_rows(self, splits: dict) -> list:
        return splits["validation"][: self.args.val_rows or None]

    def test_rows(self, splits: dict) -> list:
        self.test_split_rows = len(splits["test"])
        n = self.args.test_rows if self.args.test_rows is not None else TEST_ROWS[self.task]
        return splits["test"][: n or None]

    def adapter_settings(self, model_dir: str) -> dict[str, Any]:
        """A trained LoRA model (a run's best/ or final/) as the base model with its adapter on top:
        the settings that load it so. Empty for the base model and for full fine-tuning."""
        if not self.lora or model_dir == self.args.model:
            return {}
        from rlft.models.lora import adapter_source

        return {**self.model_settings, "lora.init_adapter": str(adapter_source(model_dir))}

    def evaluate(self, model_dir: str, ident: str, split: str) -> dict[str, Any]:
        rows = self.val_rows if split == "validation" else self.test_rows
        n = self.args.val_rows if split == "validation" else (
            self.args.test_rows if self.args.test_rows is not None else TEST_ROWS[self.task])
        adapter = self.adapter_settings(model_dir)
        model, settings = (self.args.model, adapter) if adapter else (model_dir, self.eval_settings)
        return eval_model(self.task, model, rows, cache=self.root / "evals" / f"{split}{n}-{ident}.json",
                          tag=f"{ident}-{split}", split=split, seed=self.args.seeds[0], eval_settings=settings,
                          cache_key=adapter.get("lora.init_adapter"), **self.kw)

    def sft(self, lr: float, seed: int) -> dict[str, Any]:
        a = self.args
        out_dir = self.root / "sft" / f"lr{lr:g}-seed{seed}"
        if a.reuse_sft and (Path(a.reuse_sft) / out_dir.name / "summary.json").is_file():
            out_dir = Path(a.reuse_sft) / out_dir.name
            _check_reused_sft(out_dir, a, lr)
        info = common.sft_with_patience(
            self.task, a.model, out_dir, base_val=None, val_n=a.val_rows,
            eval_every=a.sft_eval_every, patience=a.patience, max_steps=a.sft_max_steps, max_minutes=a.sft_minutes,
            lr=lr, batch_size=a.sft_batch, seed=seed, model_settings=self.model_settings, base_competes=False, **self.kw)
        return {"model_dir": info["best_dir"], "run": info}

    def rl(self, arm: str, start: str, cand: dict[str, Any], seed: int) -> dict[str, Any]:
        a = self.args
        # the start is in the directory name: SFT+RL at seed s starts from the SFT model of seed s
        start_tag = "base" if start == a.model else Path(start).parent.name
        # LoRA: from an SFT run, the base model with the SFT adapter, trained on (not its merged export)
        adapter = self.adapter_settings(start)
        run = rl_run(self.task, a.model if adapter else start,
                     self.root / arm / f"{cand_name(cand)}-from-{start_tag}-seed{seed}", cand,
                     steps=a.rl_steps, prompts=a.prompts, group=a.group, seed=seed,
                     model_settings=adapter or self.model_settings, **self.kw)
        return {"model_dir": run["final_dir"], "run": run}


def _check_reused_sft(out_dir: Path, args: argparse.Namespace, lr: float) -> None:
    """A reused SFT run must have been made with this command's SFT budget and model."""
    import json

    done = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    want = {"lr": lr, "batch_size": args.sft_batch, "eval_every": args.sft_eval_every, "patience": args.patience,
            "val_n": args.val_rows, "start_model": args.model}
    differ = [f"{k} {done.get(k)!r} (this command: {v!r})" for k, v in want.items() if done.get(k) != v]
    if differ or done.get("steps_run", 0) > args.sft_max_steps:
        raise P.ProtocolError(f"--reuse-sft: {out_dir} was trained with other SFT settings: "
                              f"{'; '.join(differ) or 'more steps than --sft-max-steps'}")


def _candidates(arms: Arms, arm: str, grid: list[dict[str, Any]], start: str | None) -> dict[str, dict[str, Any]]:
    """id -> {model_dir, run, candidate, val (full eval)} of one arm's K candidates at the first seed."""
    seed = arms.args.seeds[0]
    out = {}
    for cand in grid:
        ident = f"sft-lr{cand['lr']:g}" if arm == "sft" else f"{arm}-{cand_name(cand)}"
        trained = arms.sft(cand["lr"], seed) if arm == "sft" else arms.rl(arm, start, cand, seed)
        out[ident] = {**trained, "candidate": cand, "val": arms.evaluate(trained["model_dir"], f"{ident}-seed{seed}",
                                                                         "validation")}
    return out


def _rerun(arms: Arms, arm: str, chosen: dict[str, Any], start: dict[int, str] | None) -> dict[int, dict[str, Any]]:
    """The chosen candidate of an arm at every seed (the first seed's run is the candidate itself),
    an RL arm's seed ``s`` starting from ``start[s]``."""
    out = {arms.args.seeds[0]: chosen}
    for seed in arms.args.seeds[1:]:
        cand = chosen["candidate"]
        out[seed] = arms.sft(cand["lr"], seed) if arm == "sft" else arms.rl(arm, start[seed], cand, seed)
        out[seed]["candidate"] = cand
    return out


def _budget(args: argparse.Namespace) -> dict[str, Any]:
    return {"K": len(parse_grid(args.grid)), "seeds": list(args.seeds),
            "sft": {"max_steps": args.sft_max_steps, "batch": args.sft_batch,
                    "max_examples": args.sft_max_steps * args.sft_batch, "patience": args.patience,
                    "eval_every": args.sft_eval_every, "max_minutes": args.sft_minutes},
            "rl": {"steps": args.rl_steps, "prompts_per_step": args.prompts, "group_size": args.group,
                   "completions": args.rl_steps * args.prompts * args.group}}


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    t_task = time.perf_counter()
    sft_grid = [{"lr": float(x)} for x in args.sft_grid.split(",")]
    rl_grid = parse_grid(args.grid)
    if len(sft_grid) != len(rl_grid):  # the equal tuning budget: K candidates for every trained arm
        raise P.ProtocolError(f"equal tuning budget: --sft-grid has {len(sft_grid)} candidates, --grid {len(rl_grid)}")
    arms = Arms(task, args)
    seeds = args.seeds

    # 1-2. base model; SFT candidates, chosen on validation; best SFT = SFT candidates or the base model
    base_val = arms.evaluate(args.model, "base", "validation")
    sft = _candidates(arms, "sft", sft_grid, None)
    sel = {"sft": P.select("sft", {k: summary(v["val"]) for k, v in sft.items()}, args.sft_rules)}
    sel["best_sft"] = P.select("best_sft", {"base": summary(base_val)} |
                               {k: summary(v["val"]) for k, v in sft.items()}, ["max metric"])
    sft_start = sft[sel["sft"].chosen]
    # 3-4. RL candidates from the chosen SFT model and from the base model, chosen the same way
    rl = {"sft+rl": _candidates(arms, "sft+rl", rl_grid, sft_start["model_dir"]),
          "rl-base": _candidates(arms, "rl-base", rl_grid, args.model)}
    for arm, baseline in (("sft+rl", sft_start["val"]), ("rl-base", base_val)):
        sel[arm] = P.select(arm, {k: summary(v["val"]) for k, v in rl[arm].items()}, args.rl_rules,
                            baseline=summary(baseline))
    # 5. the chosen settings at every seed
    # (SFT+RL at seed s is the whole pipeline at seed s: RL seed s from the SFT model of seed s)
    per_seed = {"sft": _rerun(arms, "sft", sft[sel["sft"].chosen], None)}
    per_seed["sft+rl"] = _rerun(arms, "sft+rl", rl["sft+rl"][sel["sft+rl"].chosen],
                                {s: r["model_dir"] for s, r in per_seed["sft"].items()})
    per_seed["rl-base"] = _rerun(arms, "rl-base", rl["rl-base"][sel["rl-base"].chosen], dict.fromkeys(seeds, args.model))
    # 6. the test split, once
    items = {"base": {"model_dir": args.model, "config_hash": P.config_hash({"model": args.model}), "candidate": None}}
    for arm, runs in per_seed.items():
        for seed, r in runs.items():
            settings = r["run"].get("settings") or {"lr": r["candidate"]["lr"]}
            items[f"{arm}@{seed}"] = {"model_dir": r["model_dir"], "candidate": r["candidate"],
                                      "config_hash": P.config_hash({"arm": arm, "seed": seed, "settings": settings,
                                                                    "start": r["run"].get("start_model"),
                                                                    **_init_adapter(r["run"])})}
    ledger = P.TestLedger(Path(args.results), task=task, model=args.model, protocol=PROTOCOL)
    test = ledger.score(items, lambda ident, item: arms.evaluate(item["model_dir"], f"{ident}-{item['config_hash']}",
                                                                 "test"),
                        rescore=args.rescore_test, reason=args.rescore_reason)
    # 7. comparisons, buckets and the target
    best = sel["best_sft"].chosen
    test_of = {"base": {s: test["base"] for s in seeds},
               **{arm: {s: test[f"{arm}@{s}"] for s in seeds} for arm in per_seed}}
    test_of["best_sft"] = test_of["base"] if best == "base" else test_of["sft"]
    comparisons = {name: _compare(test_of[a], test_of[b], seeds)
                   for name, (a, b) in {"sft+rl - best_sft": ("best_sft", "sft+rl"),
                                        "rl-base - best_sft": ("best_sft", "rl-base"),
                                        "sft+rl - rl-base": ("rl-base", "sft+rl"),
                                        "best_sft - base": ("base", "best_sft")}.items()}
    primary = comparisons["sft+rl - best_sft"]
    target = _target(primary, test_of["sft+rl"][seeds[0]], test_of["best_sft"][seeds[0]],
                     whole=len(test["base"]["ids"]) == arms.test_split_rows, label=task)
    return {
        "task": task, "protocol": PROTOCOL, "date": common.utc_now(), "wall_s": round(time.perf_counter() - t_task, 1),
        "model": args.model, "model_settings": arms.model_settings, "budget": _budget(args),
        "val_rows": len(base_val["ids"]), "test_rows": len(test["base"]["ids"]), "test_split_rows": arms.test_split_rows,
        "test_ledger": ledger.summary(), "best_sft": best,
        "selection": {k: v.as_dict() | {"printed": v.lines()} for k, v in sel.items()},
        "candidates": {arm: {k: {"candidate": v["candidate"], "val": summary(v["val"]) | _monitors(v["val"])}
                             for k, v in group.items()} for arm, group in (("sft", sft), *rl.items())},
        "test": {arm: {str(s): summary(ev) | _monitors(ev) for s, ev in by_seed.items()}
                 for arm, by_seed in test_of.items()},
        "across_seeds": {arm: P.across_seeds([test_of[arm][s]["metric"] for s in seeds]) for arm in test_of},
        "comparisons": comparisons, "buckets": _buckets(test_of["best_sft"][seeds[0]], test_of["sft+rl"][seeds[0]],
                                                         seed=seeds[0]),
        "target": target,
    }


def _init_adapter(run: dict[str, Any]) -> dict[str, Any]:
    adapter = (run.get("model_settings") or {}).get("lora.init_adapter")
    return {"init_adapter": adapter} if adapter else {}


def _monitors(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: ev.get(k) for k in ("length_ratio", "truncation_rate", "repetition", "copy_rate")}


def _compare(before: dict[int, dict], after: dict[int, dict], seeds: list[int]) -> dict[str, Any]:
    """after - before: per seed, the mean over seeds with its t-interval (metric and second metric),
    beside the paired-bootstrap CI of the first seed."""
    out: dict[str, Any] = {"bootstrap_seed": seeds[0], "bootstrap": compare(before[seeds[0]], after[seeds[0]],
                                                                          seed=seeds[0])}
    for key in ("metric", "second_metric"):
        deltas = [after[s][key] - before[s][key] for s in seeds if after[s].get(key) is not None]
        out[f"{key}_seeds"] = P.across_seeds(deltas) if deltas else None
    return out


def _buckets(before: dict[str, Any], after: dict[str, Any], *, seed: int) -> list[dict[str, Any]]:
    """SFT+RL - best SFT per traffic bucket (first seed). Only the whole split was planned."""
    from rlft.eval.bootstrap import paired_bootstrap

    labels = before.get("buckets") or []
    rows = []
    for label in ["all", *sorted(set(labels))]:
        idx = [i for i, b in enumerate(labels) if label in ("all", b)] if labels else list(range(len(before["ids"])))
        if not idx:
            continue
        ci = paired_bootstrap([before["per_example"][i] for i in idx], [after["per_example"][i] for i in idx], seed=seed)
        rows.append({"bucket": label, "n": len(idx), "planned": label == "all", "delta": ci.delta, "low": ci.low,
                     "high": ci.high, "significant": ci.significant})
    return rows


def _target(primary: dict[str, Any], rl: dict[str, Any], sft: dict[str, Any], *, whole: bool,
            label: str) -> dict[str, Any]:
    """The target's rules (TARGET), evaluated and printed one by one."""
    def abs_log(x: Any) -> float | None:
        return abs(math.log(x)) if x else None

    boot, seeds = primary["bootstrap"], primary["metric_seeds"]
    values = {"metric_delta_mean_over_seeds": seeds["mean"], "metric_delta_bootstrap_low": boot["metric"]["low"],
              "metric_delta_seeds_low": seeds["low"], "whole_test_split": float(whole),
              "second_delta_bootstrap_high": (boot.get("second_metric") or {}).get("high"),
              "abs_log_length_ratio": abs_log(rl.get("length_ratio")), "truncation_rate": rl.get("truncation_rate"),
              "repetition": rl.get("repetition"), "copy_rate": rl.get("copy_rate")}
    baseline = {"abs_log_length_ratio": abs_log(sft.get("length_ratio")),
                **{k: sft.get(k) for k in ("truncation_rate", "repetition", "copy_rate")}}
    return P.verdict([P.check(name, values[name], rule, baseline=baseline) for name, rule in TARGET],
                     label=f"{label} target")


SMOKE = {"tasks": ["summarization"], "set": ["data.template=chat", "lora.r=4", "data.max_prompt_tokens=96",
                                             "rollout.max_new_tokens=8", "eval.max_new_tokens=8"],
         "sft_grid": "1e-3,3e-3", "grid": "rloo:1e-3:1.0:0,rloo:3e-3:1.0:0.05", "rl_steps": 2, "prompts": 2,
         "group": 2, "sft_max_steps": 4, "sft_eval_every": 2, "sft_batch": 4, "val_rows": 4, "test_rows": 8}


def _smoke(args: argparse.Namespace) -> None:
    """The whole protocol on a tiny random chat model (tests/tiny.py): seconds, not hours."""
    from tests.tiny import tiny_causal  # the repository root is on the path: run from it with -m

    for key, value in SMOKE.items():
        setattr(args, key, value)
    args.model = str(tiny_causal(Path(args.work), chat=True))
    if args.results == str(RESULTS):  # a smoke run never writes into the committed results
        args.results = str(Path(args.work) / "results")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--set", nargs="*", default=list(MODEL_SETTINGS), metavar="KEY=VALUE",
                   help="dotted settings of every run and evaluation (LoRA keys: training only)")
    p.add_argument("--work", default="runs/bench3", help="run directories and cached evaluations")
    p.add_argument("--results", default=str(RESULTS), help=f"where {PROTOCOL}.{{json,md}} and test-ledger/ go")
    p.add_argument("--test-rows", type=int, default=None, help="test rows per task (0 = all); default per task")
    p.add_argument("--val-rows", type=int, default=100, help="validation rows for early stopping and selection")
    p.add_argument("--sft-grid", default="1e-4,3e-4", help="SFT candidates: learning rates, K of them")
    p.add_argument("--reuse-sft", default="", metavar="DIR",
                   help="a directory of SFT runs (lr<lr>-seed<seed>/) made with the same SFT settings, to use "
                        "instead of training them again")
    p.add_argument("--sft-batch", type=int, default=16)
    p.add_argument("--sft-eval-every", type=int, default=25)
    p.add_argument("--patience", type=int, default=2, help="evaluations without a new best before SFT stops")
    p.add_argument("--sft-max-steps", type=int, default=400)
    p.add_argument("--sft-minutes", type=float, default=6.0, help="wall-clock cap on each SFT run")
    p.add_argument("--grid", default="rloo:1e-4:0.7:0,rloo:3e-4:0.7:0",
                   help="RL candidates algo:lr:temperature:kl_coef[:reward spec], K of them")
    p.add_argument("--sft-rules", nargs="+", default=list(SFT_RULES), help="selection rules of the SFT arm")
    p.add_argument("--rl-rules", nargs="+", default=list(RL_RULES),
                   help="selection rules of the RL arms ('baseline' = the arm's start model on validation)")
    p.add_argument("--rl-steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=8, help="B: prompts per RL step")
    p.add_argument("--group", type=int, default=4, help="G: completions per prompt")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the chosen settings rerun with each")
    p.add_argument("--rescore-test", action="store_true", help="score a test split that was already scored")
    p.add_argument("--rescore-reason", default="", help="why (required with --rescore-test); goes in the results")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32", help="fp32: on CPUs without AVX512-BF16 bf16 autocast is far slower")
    p.add_argument("--smoke", action="store_true", help="the whole protocol on a tiny random model in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        _smoke(args)

    import warnings

    import torch

    from rlft.training.runtime import machine_facts

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*longer than data.max_prompt_tokens.*")
    results = Path(args.results)
    command = "python -m benchmarks.learning " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"protocol": PROTOCOL, "model": args.model}  # precision, threads, machine: per task (entry["machine"])
    for task in args.tasks:
        log(f"=== learning ({PROTOCOL}): {task}")
        machine = {"precision": args.precision, "threads": args.threads, "at_start": machine_facts()}
        try:
            entry = run_task(task, args)
        except P.ProtocolError as err:
            log(f"{task}: refused by the protocol: {err}")
            return 2
        entry["command"] = command
        entry["machine"] = machine | {"load_average_at_end": machine_facts()["load_average"]}
        if args.reuse_sft:
            entry["sft_reused_from"] = args.reuse_sft
        data = common.update_results(results / f"{PROTOCOL}.json", task, entry, meta)
        atomic_write(results / f"{PROTOCOL}.md", markdown(data, protocol=PROTOCOL, tasks=TASKS))
        c = entry["comparisons"]["sft+rl - best_sft"]
        log(f"{task}: best SFT = {entry['best_sft']}; SFT+RL - best SFT over seeds {seeds_ci(c['metric_seeds'])}, "
            f"bootstrap {fmt_ci(c['bootstrap'].get('metric'))}; {entry['test_ledger']['note']}; "
            f"target {'met' if entry['target']['met'] else 'not met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
