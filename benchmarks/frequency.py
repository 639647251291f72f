"""Benchmark: high-frequency fine-tuning. Does traffic-weighted RL serve the traffic better?

For each task, from the same SFT model (the one ``learning.py`` trains; shared through
``--work``) and at equal compute (the same steps x prompts x G sampled completions):

* SFT, the start;
* uniform RL (``frequency.alpha=0``: every unique prompt equally likely);
* frequency-aware RL (``frequency.alpha`` > 0 with a ``frequency.floor``): prompt i is drawn
  with probability floor/U + (1 - floor) * count_i**alpha / sum_j count_j**alpha.

Each is scored on held-out test prompts: traffic-weighted metric (what users see), the
head/torso/tail buckets (``frequency.head_share``/``torso_share`` over the evaluated rows, as
``rlft.eval.evaluate`` assigns them) and the unweighted mean, with paired-bootstrap 95% CIs
of the differences (``rlft.report.table.bucket_groups``). The recommended alpha is the arm with
the best traffic-weighted VALIDATION metric.

    python benchmarks/frequency.py --tasks translation summarization
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import RESULTS, compare, eval_model, fmt_ci, log, num, rl_run, sft_start, summary, task_scope  # noqa: E402
from learning import TEST_ROWS, cand_name, parse_grid  # noqa: E402

TASKS = ("translation", "summarization", "code_summary", "dialogue")
# Validation rows used to choose alpha (first N; 0 = all): the Zipf tasks' validation splits are small.
SELECT_ROWS = {"translation": 200, "summarization": 0, "code_summary": 0, "dialogue": 300}
GROUP_ORDER = ("traffic_weighted", "head", "torso", "tail", "unweighted", "repeated", "single")


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


def groups(before: dict[str, Any], after: dict[str, Any], seed: int, head_share: float = 0.5,
           torso_share: float = 0.3) -> dict[str, Any]:
    """bucket_groups (head/torso/tail/traffic-weighted/unweighted) plus the repeated (count >= 2)
    and single (count = 1) prompts, each as the paired CI of after - before."""
    from rlft.eval.bootstrap import paired_bootstrap
    from rlft.report.table import bucket_groups

    from rlft.data.buckets import assign_buckets

    # Buckets from the counts with rlft's current rule (not the ones stored with a cached
    # evaluation, which may predate a change of the rule), over the evaluated rows.
    buckets = assign_buckets(before["counts"], head_share, torso_share)
    before, after = {**before, "buckets": buckets}, {**after, "buckets": buckets}
    out = {}
    for g in bucket_groups(before, after, seed=seed):
        out[g.key] = _ci(g.result)
    counts = before["counts"]
    for key, keep in (("repeated", lambda c: c >= 2), ("single", lambda c: c < 2)):
        idx = [i for i, c in enumerate(counts) if keep(c)]
        if idx:
            out[key] = _ci(paired_bootstrap([before["per_example"][i] for i in idx],
                                            [after["per_example"][i] for i in idx], seed=seed))
    return out


def _replay_ci(before: dict[str, Any], after: dict[str, Any], seed: int) -> dict[str, Any]:
    """Traffic-weighted and unweighted paired CIs on the seen (training-head) prompts."""
    from rlft.eval.bootstrap import paired_bootstrap

    b, a = before["per_example"], after["per_example"]
    return {"traffic_weighted": _ci(paired_bootstrap(b, a, weights=before["counts"], seed=seed)),
            "unweighted": _ci(paired_bootstrap(b, a, seed=seed))}


def _ci(r: Any) -> dict[str, Any]:
    return {"before": r.mean_before, "after": r.mean_after, "delta": r.delta, "low": r.low, "high": r.high,
            "significant": r.significant, "n": r.n}


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    scope = task_scope(task, args, TEST_ROWS)
    work, evals, kw, test_n, test_rows = scope.work, scope.evals, scope.kw, scope.test_n, scope.test_rows
    t_task = time.perf_counter()
    select_n = args.select_rows if args.select_rows is not None else SELECT_ROWS[task]
    sel_rows = lambda splits: splits["validation"][: select_n or None]  # noqa: E731
    # Seen prompts: the most frequent TRAINING prompts. Not held out (SFT and RL trained on them),
    # but it is what repeated production traffic looks like: the head recurs verbatim.
    replay_rows = lambda splits: sorted(splits["train"], key=lambda ex: -ex.count)[: args.replay_rows]  # noqa: E731

    # 1. the start: SFT until validation stops improving (shared with learning.py)
    _, sft_info = sft_start(task, args, scope)
    sft_dir = sft_info["best_dir"]
    sft_test = eval_model(task, sft_dir, test_rows, cache=evals / f"sft-test{test_n}.json",
                          tag="sft-test", split="test", **kw)
    sft_sel = eval_model(task, sft_dir, sel_rows, cache=evals / f"sft-val{select_n}.json",
                         tag="sft-val", split="validation", **kw)
    sft_replay = eval_model(task, sft_dir, replay_rows, cache=evals / f"sft-replay{args.replay_rows}.json",
                            tag="sft-replay", split="train", **kw) if args.replay_rows else None
    # 2. RL arms at equal compute
    rl = chosen_rl(task, Path(args.results), args.rl)
    budget = f"s{args.rl_steps}x{args.prompts}x{args.group}"
    arms = []
    for alpha, floor in parse_arms(args.arms):
        cand = {**rl, "alpha": alpha, "floor": floor} if alpha else {**rl}
        name = cand_name(cand)
        run = rl_run(task, sft_dir, work / "rl" / task / f"{name}-{budget}", cand, steps=args.rl_steps,
                     prompts=args.prompts, group=args.group, **kw)
        val = eval_model(task, run["final_dir"], sel_rows, cache=evals / f"rl-{name}-{budget}-val{select_n}.json",
                         tag=f"rl-{name}-val", split="validation", **kw)
        test = eval_model(task, run["final_dir"], test_rows, cache=evals / f"rl-{name}-{budget}-test{test_n}.json",
                          tag=f"rl-{name}-test", split="test", **kw)
        replay = eval_model(task, run["final_dir"], replay_rows,
                            cache=evals / f"rl-{name}-{budget}-replay{args.replay_rows}.json",
                            tag=f"rl-{name}-replay", split="train", **kw) if args.replay_rows else None
        arms.append({"name": arm_name(alpha, floor), "alpha": alpha, "floor": floor, "run": run, "val": val,
                     "test": test, "replay": replay})
    # 3. the recommended alpha: best traffic-weighted validation metric
    best = max(arms, key=lambda a: a["val"]["traffic_weighted"])
    uniform = next(a for a in arms if a["alpha"] == 0)
    entry_arms = {}
    for a in arms:
        entry_arms[a["name"]] = {
            "alpha": a["alpha"], "floor": a["floor"], "val": summary(a["val"]), "test": summary(a["test"]),
            "vs_sft": groups(sft_test, a["test"], args.seed),
            "vs_uniform": groups(uniform["test"], a["test"], args.seed) if a is not uniform else None,
            "second_vs_sft": compare(sft_test, a["test"], seed=args.seed).get("second_metric"),
            "run": {k: a["run"][k] for k in ("wall_s", "reward_first", "reward_last", "completions", "settings")},
        }
        if a["replay"] is not None:
            entry_arms[a["name"]]["replay"] = {
                "metric": a["replay"]["metric"], "traffic_weighted": a["replay"]["traffic_weighted"],
                "vs_sft": _replay_ci(sft_replay, a["replay"], args.seed),
                "vs_uniform": _replay_ci(uniform["replay"], a["replay"], args.seed) if a is not uniform else None}
    targets = {}
    for name, e in entry_arms.items():
        if e["vs_uniform"] is None:
            continue
        tw, head, tail = e["vs_uniform"].get("traffic_weighted"), e["vs_uniform"].get("head"), e["vs_sft"].get("tail")
        targets[name] = {
            "beats_uniform_traffic_weighted": bool(tw and tw["delta"] > 0),
            "traffic_weighted_ci_excludes_0": bool(tw and tw["low"] > 0),
            "beats_uniform_head": bool(head and head["delta"] > 0),
            "head_ci_excludes_0": bool(head and head["low"] > 0),
            "tail_within_0.5_of_sft": None if tail is None else bool(tail["delta"] >= -0.5),
        }
        seen = (e.get("replay") or {}).get("vs_uniform") or {}
        if seen:  # the recurring head: the same comparison on the most frequent training prompts
            tw = seen["traffic_weighted"]
            targets[name] |= {"beats_uniform_on_seen_head": bool(tw["delta"] > 0), "seen_head_ci_excludes_0": bool(tw["low"] > 0)}
    return {"task": task, "date": common.utc_now(), "wall_s": round(time.perf_counter() - t_task, 1),
            "test_rows": len(sft_test["ids"]), "select_rows": len(sft_sel["ids"]), "rl": rl,
            "budget": {"steps": args.rl_steps, "prompts_per_step": args.prompts, "group_size": args.group,
                       "completions": args.rl_steps * args.prompts * args.group},
            "sft": {"test": summary(sft_test), "val": summary(sft_sel), "best_dir": sft_dir,
                    "best_step": sft_info["best_step"],
                    "replay": summary(sft_replay) if sft_replay else None},
            "replay_rows": args.replay_rows,
            "arms": entry_arms, "recommended": {"arm": best["name"], "alpha": best["alpha"], "floor": best["floor"],
                                                "val_traffic_weighted": best["val"]["traffic_weighted"]},
            "targets": targets}


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = ["# High-frequency fine-tuning: uniform vs frequency-aware RL (held-out test split)", "",
             f"Seed {meta.get('seed')}, precision {meta.get('precision')}, {meta.get('threads')} torch thread(s) per "
             f"process; generated {common.utc_now()}. Every arm starts from the same SFT model and samples the same "
             "number of completions. Cells: metric (0-100); CIs: paired-bootstrap 95% interval of the difference "
             "(1000 resamples), * = excludes 0. Buckets: rlft's head/torso/tail over the evaluated rows (head = most "
             "frequent prompts up to 50% of traffic, torso the next 30%, ties cut in row order, recomputed from the counts "
             "with rlft's current `assign_buckets`). repeated = count >= 2, "
             "single = count 1.", ""]
    for task, e in data["tasks"].items():
        b = e["budget"]
        lines += [f"## {task}", "", f"Command: `{e.get('command', '')}`  ",
                  f"{e['test_rows']} test rows, {e['select_rows']} validation rows; RL {e['rl']['algo']} lr {e['rl']['lr']:g} "
                  f"T {e['rl']['temperature']:g} kl {e['rl'].get('kl_coef', 0):g}, {b['steps']} steps x {b['prompts_per_step']} "
                  f"prompts x G {b['group_size']} = {b['completions']} completions per arm; task wall time {e['wall_s']} s.",
                  "", "| slice (n) | SFT | " + " | ".join(e["arms"]) + " |", "|---|---:|" + "---:|" * len(e["arms"])]
        first = next(iter(e["arms"].values()))
        for key in GROUP_ORDER:
            if key not in first["vs_sft"]:
                continue
            n = first["vs_sft"][key]["n"]
            row = [f"{key} ({n})", num(first["vs_sft"][key]["before"])]
            row += [num(a["vs_sft"][key]["after"]) for a in e["arms"].values()]
            lines.append("| " + " | ".join(row) + " |")
        sec = [num(e["sft"]["test"]["second_metric"])] + [num(a["test"]["second_metric"]) for a in e["arms"].values()]
        lines.append(f"| second metric ({e['sft']['test']['second_metric_name']}) | " + " | ".join(sec) + " |")
        lines.append("| val traffic-weighted | " + num(e["sft"]["val"]["traffic_weighted"]) + " | " +
                     " | ".join(num(a["val"]["traffic_weighted"]) for a in e["arms"].values()) + " |")
        lines += ["", "| difference [95% CI] | " + " | ".join(
            [f"{n} - SFT" for n in e["arms"]] + [f"{n} - uniform" for n, a in e["arms"].items() if a["vs_uniform"]]) + " |",
            "|---|" + "---|" * (len(e["arms"]) + sum(1 for a in e["arms"].values() if a["vs_uniform"]))]
        for key in GROUP_ORDER:
            if key not in first["vs_sft"]:
                continue
            cells = [fmt_ci(a["vs_sft"].get(key)) for a in e["arms"].values()]
            cells += [fmt_ci(a["vs_uniform"].get(key)) for a in e["arms"].values() if a["vs_uniform"]]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        if e.get("replay_rows") and e["sft"].get("replay"):
            rp = e["sft"]["replay"]
            lines += ["", f"Seen prompts (the {e['replay_rows']} most frequent TRAINING prompts, {rp['n']} rows; not "
                      "held out, since SFT and RL trained on them, but it is how repeated traffic recurs):", "",
                      "| | SFT | " + " | ".join(e["arms"]) + " |", "|---|---:|" + "---:|" * len(e["arms"]),
                      "| traffic-weighted | " + num(rp["traffic_weighted"]) + " | " + " | ".join(
                          num(a["replay"]["traffic_weighted"]) for a in e["arms"].values()) + " |",
                      "| unweighted | " + num(rp["metric"]) + " | " + " | ".join(
                          num(a["replay"]["metric"]) for a in e["arms"].values()) + " |",
                      "| traffic-weighted vs uniform [95% CI] | | " + " | ".join(
                          fmt_ci(a["replay"]["vs_uniform"]["traffic_weighted"]) if a["replay"]["vs_uniform"] else "-"
                          for a in e["arms"].values()) + " |"]
        rec = e["recommended"]
        lines += ["", f"Recommended (best validation traffic-weighted metric): **{rec['arm']}** "
                  f"(alpha {rec['alpha']:g}, floor {rec['floor']:g}).", ""]
        for name, t in e["targets"].items():
            lines.append(f"- {name}: beats uniform on traffic-weighted: {t['beats_uniform_traffic_weighted']} "
                         f"(CI excludes 0: {t['traffic_weighted_ci_excludes_0']}); on head: {t['beats_uniform_head']} "
                         f"(CI excludes 0: {t['head_ci_excludes_0']}); tail within 0.5 of SFT: {t['tail_within_0.5_of_sft']}"
                         + (f"; beats uniform on the seen head (traffic-weighted): {t['beats_uniform_on_seen_head']} "
                            f"(CI excludes 0: {t['seen_head_ci_excludes_0']})" if "beats_uniform_on_seen_head" in t else ""))
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["translation", "summarization"], choices=TASKS)
    p.add_argument("--model", default="rlft-base")
    p.add_argument("--work", default="runs/bench", help="run directories and cached evaluations (shared with learning.py)")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--test-rows", type=int, default=None, help="test rows per task (0 = all); default as learning.py")
    p.add_argument("--val-rows", type=int, default=100, help="validation rows of SFT early stopping (as learning.py)")
    p.add_argument("--select-rows", type=int, default=None, help="validation rows used to choose alpha (0 = all); default per task")
    p.add_argument("--replay-rows", type=int, default=50,
                   help="also score the N most frequent training prompts (seen, not held out); 0 = off")
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
    command = "python benchmarks/frequency.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"seed": args.seed, "precision": args.precision, "threads": args.threads, "model": args.model}
    for task in args.tasks:
        log(f"=== frequency: {task}")
        entry = run_task(task, args)
        entry["command"] = command
        data = common.update_results(results / "frequency.json", task, entry, meta)
        (results / "frequency.md").write_text(markdown(data), encoding="utf-8")
        log(f"{task}: recommended {entry['recommended']}; targets {entry['targets']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
