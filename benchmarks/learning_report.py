"""The tables of the learning benchmark (``results/learning-v2.md``), written from its results file's
data: levels and differences with their intervals, the other comparisons, the buckets, the target
rules, every selection rule's outcome, the test scorings, and the budgets and commands."""

from __future__ import annotations

from typing import Any, Sequence

from benchmarks.common import fmt_ci, num


def seeds_ci(c: dict[str, Any] | None) -> str:
    """A mean over seeds with its t-interval."""
    if not c:
        return "-"
    if c["low"] is None:
        return f"{c['mean']:+.2f} (1 seed)"
    mark = " *" if c["low"] > 0 or c["high"] < 0 else ""
    return f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]{mark}"


def level(c: dict[str, Any]) -> str:
    """A mean over seeds with its t-interval, as a level (no sign)."""
    return f"{c['mean']:.2f} [{num(c['low'])}, {num(c['high'])}]" if c["low"] is not None else f"{c['mean']:.2f}"


def machine(m: dict[str, Any] | None) -> str:
    """'AMD EPYC, 2 cores, avx512_bf16, bf16, 2 threads, load 0.2 -> 2.1' (not recorded before 2026-12-01 evening)."""
    if not m:
        return "machine not recorded"
    start = m["at_start"]
    bf16 = "avx512_bf16" if start["avx512_bf16"] else "no avx512_bf16"
    load = f"load {start['load_average'][0]:.1f} -> {m['load_average_at_end'][0]:.1f}" if start["load_average"] else ""
    return f"{start['cpu']}, {start['cores']} cores, {bf16}, {m['precision']}, {m['threads']} threads, {load}"


def markdown(data: dict[str, Any], *, protocol: str, tasks: Sequence[str]) -> str:
    """learning-v2.md from the results file's data: the tasks in the order of ``tasks``."""
    entries = [(t, data["tasks"][t]) for t in tasks if data["tasks"].get(t)]
    lines = [f"# Learning under protocol {protocol}: base, SFT, SFT+RL, RL from the base model", "",
             "Chosen on validation only (rules and every outcome below); each trained arm's chosen setting run "
             "with every seed; the test split scored once per (task, model, protocol) through the test ledger. "
             "Levels: mean over seeds [95% t-interval]. Differences: mean of per-seed differences [95% t-interval] "
             "beside the paired-bootstrap 95% CI of the first seed (test-set sampling only). * = excludes 0. "
             "Best SFT = the best validation metric among the SFT candidates and the base model.", "",
             "| task | test rows (of split) | test scored | metric | base | best SFT (which) | SFT+RL | RL from base | "
             "SFT+RL - best SFT, seeds | same, bootstrap first seed | target |",
             "|---|---|---|---|---:|---|---|---|---|---|---|"]
    for task, e in entries:
        a, c = e["across_seeds"], e["comparisons"]["sft+rl - best_sft"]
        lines.append(f"| {task} | {e['test_rows']} ({e['test_split_rows']}) | {e['test_ledger']['note']} | "
                     f"{e['test']['base'][str(e['budget']['seeds'][0])]['metric_name']} | {level(a['base'])} | "
                     f"{level(a['best_sft'])} ({e['best_sft']}) | {level(a['sft+rl'])} | {level(a['rl-base'])} | "
                     f"{seeds_ci(c['metric_seeds'])} | {fmt_ci(c['bootstrap'].get('metric'))} | "
                     f"{'met' if e['target']['met'] else 'not met'} |")
    lines += ["", "Other comparisons (task metric; second metric in the JSON):", "",
              "| task | comparison | seeds | bootstrap first seed |", "|---|---|---|---|"]
    for task, e in entries:
        for name, c in e["comparisons"].items():
            lines.append(f"| {task} | {name} | {seeds_ci(c['metric_seeds'])} | {fmt_ci(c['bootstrap'].get('metric'))} |")
    lines += ["", "Buckets of the test split by training count, SFT+RL - best SFT (first seed). Only the whole "
              "split was a planned comparison; the other rows are exploratory and claim nothing:", "",
              "| task | bucket | planned | n | delta [95% CI] |", "|---|---|---|---:|---|"]
    for task, e in entries:
        for b in e["buckets"]:
            lines.append(f"| {task} | {b['bucket']} | {'yes' if b['planned'] else 'no (exploratory)'} | {b['n']} | "
                         f"{fmt_ci(b)} |")
    lines += ["", "Target rules (SFT+RL against best SFT; monitors of the first seed):", ""]
    for task, e in entries:
        lines += [f"- {task}: " + "; ".join(f"{'PASS' if c['passed'] else 'FAIL'} `{c['rule']}` ({num(c['value'], 3)}"
                                            f"{'' if c['threshold'] is None else ' vs ' + num(c['threshold'], 3)})"
                                            for c in e["target"]["checks"])]
    lines += ["", "Selection on validation (every rule's outcome; fallbacks in capitals):", ""]
    for task, e in entries:
        lines += [f"- {task}: `{line}`" for s in e["selection"].values() for line in s["printed"]]
    lines += ["", "Test scorings (from the ledger):", ""]
    for task, e in entries:
        lines += [f"- {task}: #{s['n']} {s['when']}, {s['reason']}, {s['rows']} rows: {', '.join(s['what'])}"
                  for s in e["test_ledger"]["scorings"]]
    lines += ["", "Budgets and commands:", ""]
    for task, e in entries:
        b = e["budget"]
        lines.append(f"- {task}: K={b['K']} candidates per trained arm, seeds {b['seeds']}; SFT at most "
                     f"{b['sft']['max_steps']} steps x {b['sft']['batch']}; RL {b['rl']['steps']} x "
                     f"{b['rl']['prompts_per_step']} x {b['rl']['group_size']} = {b['rl']['completions']} completions; "
                     f"model {e['model']} {e['model_settings']}; `{e.get('command', '')}` ({e['date']}; "
                     f"{machine(e.get('machine'))})")
    return "\n".join(lines) + "\n"
