"""Benchmark: high-frequency fine-tuning. Does traffic-weighted RL serve the traffic better?

For each task, from the same SFT model (the one ``learning.py`` trains; shared through
``--work``) and at equal compute (the same steps x prompts x G sampled completions):

* SFT, the start;
* uniform RL (``frequency.alpha=0``: every unique prompt equally likely);
* frequency-aware RL (``frequency.alpha`` > 0 with a ``frequency.floor``): prompt i is drawn
  with probability floor/U + (1 - floor) * count_i**alpha / sum_j count_j**alpha.

Every RL arm is trained with 3 seeds (``--seeds``). Each model is scored on one traffic replay
(``rlft.eval.replay``): ``--replay`` future requests drawn from the training log, a new held-out
test prompt with the Good-Turing probability n1/N, else a training prompt in proportion to its
count. Reported per request: all, seen (repeats, where traffic-weighting should help) and new
requests, the exact-match cache and the cache with each model answering new prompts, and per seed
the paired-bootstrap 95% CI of each arm minus uniform. The recommended alpha is the arm with the
best traffic-weighted VALIDATION metric, averaged over seeds.

    python -m benchmarks.frequency --tasks translation summarization
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rlft.atomic import atomic_write

from benchmarks import common
from benchmarks.common import RESULTS, eval_model, fmt_ci, log, num, rl_run, sft_start, summary, task_scope
from benchmarks.learning import TEST_ROWS, cand_name, parse_grid

TASKS = ("translation", "summarization", "code_summary", "dialogue")
# Validation rows used to choose alpha (first N; 0 = all): the Zipf tasks' validation splits are small.
SELECT_ROWS = {"translation": 200, "summarization": 0, "code_summary": 0, "dialogue": 300}


def parse_arms(text: str) -> list[tuple[float, float]]:
    """'0:0,0.5:0.2,1:0.1' -> [(alpha, floor), ...]; the first arm with alpha 0 is 'uniform'."""
    return [(float(a), float(f)) for a, f in (item.strip().split(":") for item in text.split(","))]


def arm_name(alpha: float, floor: float) -> str:
    return "uniform" if alpha == 0 else f"alpha{alpha:g}-floor{floor:g}"


def chosen_rl(task: str, results: Path, fallback: str) -> dict[str, Any]:
    """The RL setting learning.py chose on validation for this task, else ``fallback``."""
    path = results / "learning.json"
    if path.is_file():
        entry = json.loads(path.read_text(encoding="utf-8"))["tasks"].get(task)
        if entry:
            return dict(next(c["candidate"] for c in entry["candidates"] if c["name"] == entry["rl"]["chosen"]))
    return parse_grid(fallback)[0]


def replay_eval(task: str, model_dir: str, n: int, replay_seed: int, *, cache: Path, tag: str, threads: int,
                precision: str, seed: int) -> dict[str, Any]:
    """``model_dir`` on the task's replay sample (``rlft.eval.replay``), cached like ``eval_model``."""
    from rlft.eval.replay import evaluate_replay, replay_for

    config = common.make_config(task, model_dir, cache.parent, {"eval.max_examples": 0}, threads=threads,
                                precision=precision, seed=seed)
    parts = common.build(config)
    sample = replay_for(parts, n, held_out="test", seed=replay_seed)
    result, fresh = common.cached_result(cache, [ex.id for ex in sample.examples], model_dir, f"replay {tag}",
                                         lambda: evaluate_replay(parts, sample, tag=tag))
    if fresh:
        log(f"replay {tag}: {len(sample.requests)} requests, {result['n']} unique prompts, "
            f"{result['metric_name']} per request {result['traffic_weighted']:.2f} ({result['wall_s']} s)")
    return result


def per_request(ev: dict[str, Any]) -> dict[str, Any]:
    """Model, cache and cache + model means per request: all, seen and new requests."""
    from rlft.eval.replay import baselines
    from rlft.eval.replay import per_request as mean

    w, seen = ev["counts"], ev["replay"]["seen"]
    out = {"model": vars(mean(ev["per_example"], w, seen))}
    out.update({k: vars(v) for k, v in baselines(ev["per_example"], ev["cache_per_example"], w, seen).items()})
    return out


def versus(before: dict[str, Any], after: dict[str, Any], seed: int) -> dict[str, Any]:
    """Paired-bootstrap CIs of after - before per request (weights = requests), on all, seen, new."""
    from rlft.eval.bootstrap import paired_bootstrap

    assert before["ids"] == after["ids"], "comparisons must score the same replay sample"
    w, seen = before["counts"], before["replay"]["seen"]
    out = {}
    for key, keep in (("all", lambda s: True), ("seen", lambda s: s), ("new", lambda s: not s)):
        idx = [i for i, s in enumerate(seen) if keep(s)]
        if idx:
            out[key] = common.ci_record(paired_bootstrap([before["per_example"][i] for i in idx],
                                                         [after["per_example"][i] for i in idx],
                                                         weights=[w[i] for i in idx], seed=seed))
    return out


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    scope = task_scope(task, args, TEST_ROWS)
    work, evals, kw = scope.work, scope.evals, scope.kw
    t_task = time.perf_counter()
    select_n = args.select_rows if args.select_rows is not None else SELECT_ROWS[task]
    sel_rows = lambda splits: splits["validation"][: select_n or None]  # noqa: E731
    replay_tag = f"replay{args.replay}-s{args.replay_seed}"

    # 1. the start: SFT until validation stops improving (shared with learning.py)
    _, sft_info = sft_start(task, args, scope)
    sft_dir = sft_info["best_dir"]
    sft_replay = replay_eval(task, sft_dir, args.replay, args.replay_seed, cache=evals / f"sft-{replay_tag}.json",
                             tag="sft-replay", **kw)
    # 2. RL arms at equal compute, each with every seed
    rl = chosen_rl(task, Path(args.results), args.rl)
    budget = f"s{args.rl_steps}x{args.prompts}x{args.group}"
    arms = []
    for alpha, floor in parse_arms(args.arms):
        cand = {**rl, "alpha": alpha, "floor": floor} if alpha else {**rl}
        name = cand_name(cand)
        runs = []
        for seed in args.seeds:
            skw = {**kw, "seed": seed}
            tag = f"rl-{name}-{budget}-seed{seed}"
            run = rl_run(task, sft_dir, work / "rl" / task / tag, cand, steps=args.rl_steps,
                         prompts=args.prompts, group=args.group, **skw)
            val = eval_model(task, run["final_dir"], sel_rows, cache=evals / f"{tag}-val{select_n}.json",
                             tag=f"{tag}-val", split="validation", **skw)
            replay = replay_eval(task, run["final_dir"], args.replay, args.replay_seed,
                                 cache=evals / f"{tag}-{replay_tag}.json", tag=f"{tag}-replay", **skw)
            runs.append({"seed": seed, "run": run, "val": val, "replay": replay})
        arms.append({"name": arm_name(alpha, floor), "alpha": alpha, "floor": floor, "runs": runs})
    # 3. the recommended alpha: best traffic-weighted validation metric, mean over seeds
    val_mean = {a["name"]: common.mean([r["val"]["traffic_weighted"] for r in a["runs"]]) for a in arms}
    best = max(arms, key=lambda a: val_mean[a["name"]])
    uniform = next(a for a in arms if a["alpha"] == 0)
    entry_arms = {}
    for a in arms:
        seeds = []
        for r, u in zip(a["runs"], uniform["runs"]):
            seeds.append({"seed": r["seed"], "replay": per_request(r["replay"]), "val": summary(r["val"]),
                          "vs_sft": versus(sft_replay, r["replay"], args.seed),
                          "vs_uniform": versus(u["replay"], r["replay"], args.seed) if a is not uniform else None,
                          "run": {k: r["run"][k] for k in ("wall_s", "reward_first", "reward_last", "completions",
                                                            "settings")}})
        mean = {part: common.mean([s["replay"]["model"][part] for s in seeds]) for part in ("all", "seen", "new")}
        entry_arms[a["name"]] = {"alpha": a["alpha"], "floor": a["floor"], "val_traffic_weighted": val_mean[a["name"]],
                                 "replay_mean": mean, "seeds": seeds}
    targets = {}
    for name, e in entry_arms.items():
        if name == uniform["name"]:
            continue
        cis = [s["vs_uniform"] for s in e["seeds"]]
        targets[name] = {
            f"{part}_{what}": sum(1 for c in cis if part in c and test(c[part])) for part in ("all", "seen", "new")
            for what, test in (("beats_uniform_seeds", lambda c: c["delta"] > 0),
                               ("ci_excludes_0_above_seeds", lambda c: c["low"] > 0))}
    sample = sft_replay["replay"]
    return {"task": task, "date": common.utc_now(), "wall_s": round(time.perf_counter() - t_task, 1),
            "replay": {"requests": sample["requests"], "unique": sft_replay["n"], "seed": sample["seed"],
                       "p_new": sample["p_new"], "singletons": sample["singletons"],
                       "log_requests": sample["log_requests"], "pool": sample["pool"],
                       "pool_reused": sample["pool_reused"],
                       "seen_requests": sum(w for w, s in zip(sft_replay["counts"], sample["seen"]) if s)},
            "select_rows": select_n, "rl": rl, "seeds": list(args.seeds),
            "budget": {"steps": args.rl_steps, "prompts_per_step": args.prompts, "group_size": args.group,
                       "completions": args.rl_steps * args.prompts * args.group},
            "sft": {"replay": per_request(sft_replay), "best_dir": sft_dir, "best_step": sft_info["best_step"]},
            "arms": entry_arms, "recommended": {"arm": best["name"], "alpha": best["alpha"], "floor": best["floor"],
                                                "val_traffic_weighted": val_mean[best["name"]]},
            "targets": targets}


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = ["# High-frequency fine-tuning: uniform vs frequency-aware RL on a traffic replay", "",
             f"Precision {meta.get('precision')}, {meta.get('threads')} torch thread(s) per process; generated "
             f"{common.utc_now()}. Every arm starts from the same SFT model and samples the same number of "
             "completions; each RL arm is trained with every seed. Scores: the task metric (0-100) per request "
             "on one replay sample (`rlft.eval.replay`): a request is a new held-out test prompt with the "
             "Good-Turing probability n1/N of the training log, else a training prompt in proportion to its "
             "count. seen = requests repeating a training prompt, new = the rest. Cache: the exact-match cache "
             "(a seen prompt answered with its training reference, new prompts unanswered = 0); cache + model: "
             "the cache on seen requests, the model on new ones. CIs: paired bootstrap over the replay's unique "
             "prompts weighted by requests (1000 resamples), * = excludes 0.", ""]
    for task, e in data["tasks"].items():
        if "replay" not in e:  # an entry of the earlier protocol (test-split buckets), kept in the json only
            lines += [f"## {task}", "", "Not rerun on the traffic replay yet; the earlier test-split bucket results "
                      "stay in `frequency.json` under this task and in BENCHMARKS.md.", ""]
            continue
        b, rp = e["budget"], e["replay"]
        lines += [f"## {task}", "", f"Command: `{e.get('command', '')}`  ",
                  f"Replay: {rp['requests']} requests (seed {rp['seed']}), {rp['unique']} unique prompts; "
                  f"P(new) = {rp['singletons']}/{rp['log_requests']:g} = {rp['p_new']:.3f}; "
                  f"{rp['seen_requests']} seen requests" + (" (held-out pool reused)" if rp["pool_reused"] else "")
                  + f". RL {e['rl']['algo']} lr {e['rl']['lr']:g} T {e['rl']['temperature']:g} kl "
                  f"{e['rl'].get('kl_coef', 0):g}, {b['steps']} steps x {b['prompts_per_step']} prompts x G "
                  f"{b['group_size']} = {b['completions']} completions per run; seeds {e['seeds']}; task wall time "
                  f"{e['wall_s']} s.", "", "| per request | all | seen | new |", "|---|---:|---:|---:|"]
        row = lambda label, d: f"| {label} | {num(d['all'])} | {num(d['seen'])} | {num(d['new'])} |"  # noqa: E731
        lines += [row("SFT", e["sft"]["replay"]["model"]), row("exact-match cache", e["sft"]["replay"]["cache"]),
                  row("cache + SFT", e["sft"]["replay"]["cache + model"])]
        for name, a in e["arms"].items():
            lines.append(row(f"{name} (mean of {len(a['seeds'])} seeds)", a["replay_mean"]))
            for s in a["seeds"]:
                lines.append(row(f"{name} seed {s['seed']}", s["replay"]["model"]))
        lines += ["", "| difference [95% CI] | all | seen | new |", "|---|---|---|---|"]
        for name, a in e["arms"].items():
            for s in a["seeds"]:
                for ref in ("vs_uniform", "vs_sft"):
                    if s[ref]:
                        lines.append(f"| {name} seed {s['seed']} - {'uniform' if ref == 'vs_uniform' else 'SFT'} | " + " | ".join(
                            fmt_ci(s[ref].get(part)) for part in ("all", "seen", "new")) + " |")
        rec = e["recommended"]
        lines += ["", f"Recommended (best validation traffic-weighted metric, mean over seeds): **{rec['arm']}** "
                  f"(alpha {rec['alpha']:g}, floor {rec['floor']:g}).", ""]
        for name, t in e["targets"].items():
            n = len(e["seeds"])
            lines.append(f"- {name} vs uniform, seeds (of {n}) with a higher mean / a CI above 0: " + "; ".join(
                f"{part} {t[f'{part}_beats_uniform_seeds']}/{t[f'{part}_ci_excludes_0_above_seeds']}"
                for part in ("all", "seen", "new")))
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frequency", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["translation", "summarization"], choices=TASKS)
    p.add_argument("--model", default="rlft-base")
    p.add_argument("--work", default="runs/bench", help="run directories and cached evaluations (shared with learning.py)")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--test-rows", type=int, default=None, help="test rows per task (0 = all); default as learning.py")
    p.add_argument("--val-rows", type=int, default=100, help="validation rows of SFT early stopping (as learning.py)")
    p.add_argument("--select-rows", type=int, default=None, help="validation rows used to choose alpha (0 = all); default per task")
    p.add_argument("--replay", type=int, default=400, help="requests in the traffic replay (rlft.eval.replay)")
    p.add_argument("--replay-seed", type=int, default=0, help="seed of the replay sample (one sample for all models)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="RL seeds per arm")
    p.add_argument("--sft-lr", type=float, default=1e-4)
    p.add_argument("--sft-batch", type=int, default=16)
    p.add_argument("--sft-eval-every", type=int, default=25)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--sft-max-steps", type=int, default=400)
    p.add_argument("--sft-minutes", type=float, default=6.0)
    p.add_argument("--rl", default="scst:5e-5:1.0:0",
                   help="RL setting algo:lr:temperature:kl_coef when learning.json has no choice for the task")
    p.add_argument("--arms", default="0:0,0.5:0.2,1:0.1", help="alpha:floor per arm; alpha 0 is uniform")
    p.add_argument("--rl-steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*longer than data.max_prompt_tokens.*")
    results = Path(args.results)
    command = "python -m benchmarks.frequency " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"seed": args.seed, "seeds": args.seeds, "precision": args.precision, "threads": args.threads,
            "model": args.model}
    for task in args.tasks:
        log(f"=== frequency: {task}")
        entry = run_task(task, args)
        entry["command"] = command
        data = common.update_results(results / "frequency.json", task, entry, meta)
        atomic_write(results / "frequency.md", markdown(data))
        log(f"{task}: recommended {entry['recommended']}; targets {entry['targets']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
