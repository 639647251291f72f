"""Benchmark: does RL beat supervised fine-tuning on held-out data?

For each bundled task:

1. the base model's held-out test metric;
2. SFT from the base model until the validation metric stops improving (``--patience``
   evaluations without a new best; the best validation checkpoint is kept), so that RL's gain
   cannot be plain "more training";
3. RL from that best SFT checkpoint at a fixed compute budget (steps x prompts x G completions);
   each candidate setting in ``--grid`` is trained at that budget and the one with the best
   VALIDATION metric is kept (the test split is never used to choose);
4. the test metric of base, SFT and SFT+RL with paired-bootstrap 95% CIs of SFT-base and RL-SFT,
   plus the second metric (catches reward hacking), truncation rate and mean length.

Results: benchmarks/results/learning.json (one entry per task, written as each task finishes)
and learning.md. Run directories and cached evaluations go under ``--work``.

    python benchmarks/learning.py --tasks translation summarization
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import RESULTS, compare, eval_model, fmt_ci, log, num, rl_run, sft_start, summary, task_scope  # noqa: E402

TASKS = ("translation", "summarization", "dialogue", "code_summary")
# Held-out rows scored per task (first N of the split, which is in sha256 order, i.e. a random
# sample); 0 = the whole split. Only dialogue (1000 rows, 48-token replies) is subsampled.
TEST_ROWS = {"translation": 0, "summarization": 0, "dialogue": 300, "code_summary": 0}


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


def run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    scope = task_scope(task, args, TEST_ROWS)
    work, evals, kw, test_n = scope.work, scope.evals, scope.kw, scope.test_n
    val_rows, test_rows = scope.val_rows, scope.test_rows
    t_task = time.perf_counter()

    # 1. base model, 2. SFT until validation stops improving
    base_val, sft_info = sft_start(task, args, scope)
    base_test = eval_model(task, args.model, test_rows, cache=evals / f"base-test{test_n}.json",
                           tag="base-test", split="test", **kw)
    sft_dir = sft_info["best_dir"]
    if sft_dir == args.model:  # no SFT checkpoint beat the base model on validation
        sft_val, sft_test = base_val, base_test
    else:
        sft_val = eval_model(task, sft_dir, val_rows, cache=evals / f"sft-val{args.val_rows}.json",
                             tag="sft-val", split="validation", **kw)
        sft_test = eval_model(task, sft_dir, test_rows, cache=evals / f"sft-test{test_n}.json",
                              tag="sft-test", split="test", **kw)
    # 3. RL candidates at one compute budget, chosen on validation
    candidates = []
    for cand in parse_grid(args.grid):
        name = cand_name(cand)
        run = rl_run(task, sft_dir, work / "rl" / task / f"{name}-s{args.rl_steps}x{args.prompts}x{args.group}",
                     cand, steps=args.rl_steps, prompts=args.prompts, group=args.group, **kw)
        val = eval_model(task, run["final_dir"], val_rows,
                         cache=evals / f"rl-{name}-s{args.rl_steps}x{args.prompts}x{args.group}-val{args.val_rows}.json",
                         tag=f"rl-{name}-val", split="validation", **kw)
        candidates.append({"name": name, "candidate": cand, "run": run, "val": summary(val),
                           "val_vs_sft": compare(sft_val, val, seed=args.seed)})
    # The best validation metric among candidates whose validation second metric did not fall by
    # more than 1 point; when every candidate's did, the best validation metric overall.
    honest = [c for c in candidates if c["val"]["second_metric"] >= sft_val["second_metric"] - 1.0] or candidates
    chosen = max(honest, key=lambda c: c["val"]["metric"])
    rl_test = eval_model(task, chosen["run"]["final_dir"], test_rows,
                         cache=evals / f"rl-{chosen['name']}-s{args.rl_steps}x{args.prompts}x{args.group}-test{test_n}.json",
                         tag="rl-test", split="test", **kw)
    # 4. held-out comparison
    sft_vs_base = compare(base_test, sft_test, seed=args.seed)
    rl_vs_sft = compare(sft_test, rl_test, seed=args.seed)
    rl_vs_base = compare(base_test, rl_test, seed=args.seed)
    m = rl_vs_sft["metric"]
    target = {"rl_minus_sft_ge_1": m["delta"] >= 1.0, "ci_excludes_0": m["low"] > 0,
              "second_metric_not_lower": rl_vs_sft["second_metric"]["delta"] >= 0}
    target["met"] = all(target.values())
    return {
        "task": task, "date": common.utc_now(), "wall_s": round(time.perf_counter() - t_task, 1),
        "test_rows": len(base_test["ids"]), "val_rows": len(base_val["ids"]),
        "base": {"test": summary(base_test), "val": summary(base_val)},
        "sft": {"test": summary(sft_test), "val": summary(sft_val), **{k: v for k, v in sft_info.items()}},
        "rl": {"test": summary(rl_test), "chosen": chosen["name"], "settings": chosen["run"]["settings"],
               "budget": {"steps": args.rl_steps, "prompts_per_step": args.prompts, "group_size": args.group,
                          "completions": args.rl_steps * args.prompts * args.group},
               "run": chosen["run"]},
        "candidates": [{k: c[k] for k in ("name", "candidate", "val", "val_vs_sft")} |
                       {"wall_s": c["run"]["wall_s"], "reward_first": c["run"]["reward_first"],
                        "reward_last": c["run"]["reward_last"]} for c in candidates],
        "sft_minus_base": sft_vs_base, "rl_minus_sft": rl_vs_sft, "rl_minus_base": rl_vs_base, "target": target,
    }


def _entries(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The tasks with results, in TASKS order."""
    return [(task, data["tasks"][task]) for task in TASKS if data["tasks"].get(task)]


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = ["# Learning: SFT vs SFT+RL (held-out test split)", "",
             f"Seed {meta.get('seed')}, precision {meta.get('precision')}, "
             f"{meta.get('threads')} torch thread(s) per process; generated {common.utc_now()}.", "",
             "Metric = the task metric (0-100, mean of sentence scores, greedy decoding); CIs are paired-bootstrap "
             "95% intervals of the mean per-example difference (1000 resamples); * = excludes 0.", "",
             "| task | test n | metric | base | SFT | SFT+RL | SFT-base [95% CI] | RL-SFT [95% CI] | target met |",
             "|---|---:|---|---:|---:|---:|---|---|---|"]
    for task, e in _entries(data):
        b, s, r = e["base"]["test"], e["sft"]["test"], e["rl"]["test"]
        lines.append(f"| {task} | {e['test_rows']} | {b['metric_name']} | {num(b['metric'])} | {num(s['metric'])} | "
                     f"{num(r['metric'])} | {fmt_ci(e['sft_minus_base'].get('metric'))} | "
                     f"{fmt_ci(e['rl_minus_sft'].get('metric'))} | {'yes' if e['target']['met'] else 'no'} |")
    lines += ["", "Commands:", ""] + [f"- {t}: `{e.get('command', '')}` ({e['date']})" for t, e in data["tasks"].items()]
    lines += ["", "Second metric (not optimized; a fall would signal reward hacking), truncation rate, mean length "
              "(tokens):", "",
              "| task | second | base | SFT | SFT+RL | RL-SFT [95% CI] | trunc base/SFT/RL | length base/SFT/RL |",
              "|---|---|---:|---:|---:|---|---|---|"]
    for task, e in _entries(data):
        b, s, r = e["base"]["test"], e["sft"]["test"], e["rl"]["test"]
        lines.append(f"| {task} | {b['second_metric_name']} | {num(b['second_metric'])} | {num(s['second_metric'])} | "
                     f"{num(r['second_metric'])} | {fmt_ci(e['rl_minus_sft'].get('second_metric'))} | "
                     f"{num(b['truncation_rate'], 3)}/{num(s['truncation_rate'], 3)}/{num(r['truncation_rate'], 3)} | "
                     f"{num(b['length'], 1)}/{num(s['length'], 1)}/{num(r['length'], 1)} |")
    lines += ["", "SFT (early stopping on validation) and RL (chosen on validation):", "",
              "| task | SFT steps run / best step | SFT stop | SFT lr, batch | SFT wall s | RL chosen | budget steps x B x G | "
              "RL wall s | task wall s |", "|---|---|---|---|---:|---|---|---:|---:|"]
    for task, e in _entries(data):
        s, r = e["sft"], e["rl"]
        bud = r["budget"]
        lines.append(f"| {task} | {s['steps_run']} / {s['best_step']} | {s['stopped_by']} | {s['lr']:g}, "
                     f"{s['batch_size']} | {s['wall_s']} | {r['chosen']} | {bud['steps']} x {bud['prompts_per_step']} x "
                     f"{bud['group_size']} = {bud['completions']} | {r['run']['wall_s']} | {e['wall_s']} |")
    lines += ["", "Candidates tried (validation only; the test split was not looked at to choose):", "",
              "| task | candidate | val metric | val RL-SFT [95% CI] | val second | train reward first->last | wall s |",
              "|---|---|---:|---|---:|---|---:|"]
    for task, e in _entries(data):
        for c in e["candidates"]:
            lines.append(f"| {task} | {c['name']} | {num(c['val']['metric'])} | {fmt_ci(c['val_vs_sft'].get('metric'))} | "
                         f"{num(c['val']['second_metric'])} | {num(c['reward_first'], 3)} -> {num(c['reward_last'], 3)} | "
                         f"{c['wall_s']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--model", default="rlft-base")
    p.add_argument("--work", default="runs/bench", help="run directories and cached evaluations")
    p.add_argument("--results", default=str(RESULTS), help="where learning.json and learning.md go")
    p.add_argument("--test-rows", type=int, default=None, help="test rows per task (0 = all); default per task")
    p.add_argument("--val-rows", type=int, default=100, help="validation rows for early stopping and selection")
    p.add_argument("--sft-lr", type=float, default=1e-4)
    p.add_argument("--sft-batch", type=int, default=16)
    p.add_argument("--sft-eval-every", type=int, default=25)
    p.add_argument("--patience", type=int, default=2, help="evaluations without a new best before SFT stops")
    p.add_argument("--sft-max-steps", type=int, default=400)
    p.add_argument("--sft-minutes", type=float, default=6.0, help="wall-clock cap on SFT per task")
    p.add_argument("--grid", default="scst:5e-5:1.0:0", help="RL candidates algo:lr:temperature:kl_coef, comma-separated")
    p.add_argument("--rl-steps", type=int, default=40)
    p.add_argument("--prompts", type=int, default=8, help="B: prompts per RL step")
    p.add_argument("--group", type=int, default=4, help="G: completions per prompt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32", help="fp32: on CPUs without AVX512-BF16 bf16 autocast is far slower")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*longer than data.max_prompt_tokens.*")
    results = Path(args.results)
    meta = {"seed": args.seed, "precision": args.precision, "threads": args.threads, "model": args.model,
            "command": "python benchmarks/learning.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    for task in args.tasks:
        log(f"=== learning: {task}")
        entry = run_task(task, args)
        entry["command"] = meta["command"]
        data = common.update_results(results / "learning.json", task, entry, meta)
        (results / "learning.md").write_text(markdown(data), encoding="utf-8")
        m = entry["rl_minus_sft"]["metric"]
        log(f"{task}: base {entry['base']['test']['metric']:.2f}  SFT {entry['sft']['test']['metric']:.2f}  "
            f"SFT+RL {entry['rl']['test']['metric']:.2f}  RL-SFT {fmt_ci(m)}  target met: {entry['target']['met']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
