"""How `rlft demo`'s settings were chosen: on validation rows only, never on test.

Two stages, each a small grid run through the `rlft` command line:

1. the summarization instruction for SmolLM2-135M-Instruct: zero-shot greedy validation ROUGE-L
   of each wording (`rlft eval ... eval.split=validation --max-examples 48`);
2. the RL setting from that zero-shot start: `rlft train` with LoRA for the demo's step budget,
   scored by the run's own validation evaluations (64 rows, steps 0 and the last).

The chosen candidate is the one with the best final validation metric among those whose copy
rate did not rise (a candidate that wins by copying the prompt is reward hacking, not learning;
every candidate's outcome of this rule is written). Results: `benchmarks/results/demo-selection.{json,md}`.
A finished run directory is reused when its config matches the candidate (`--work`).

    python -m benchmarks.demo_selection --work runs/demo-selection
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rlft.atomic import atomic_write
from rlft.rundir import read_metrics

from benchmarks.common import RESULTS, ROOT

RLFT = [sys.executable, "-m", "rlft"]
MODEL = ["model.name_or_path=smollm2-135m", "data.task=summarization", "data.template=chat", "run.threads=2"]
INSTRUCTIONS = [
    "{prompt}\n\nSummarize the text above as a short title of 3 to 8 words.",
    "Write the one-line NAME summary of this manual page: a short phrase of a few words, "
    "like \"copy memory area\". Reply with the phrase only.\n\n{prompt}",
    "{prompt}\n\nWhat is this manual page about? Answer with a short phrase of a few words, not a sentence.",
    "Write a short title (3 to 8 words) for this manual page:\n\n{prompt}",
]
RL_COMMON = ["lora.r=16", "lora.alpha=32", "run.steps=20", "run.eval_every=20", "run.save_every=0",
             "run.progress=false", "rollout.temperature=1.0", "eval.max_examples=64", "eval.batch_size=32"]
CANDIDATES = {
    "A": ["optim.lr=2e-4"],  # the task's reward, rouge_l alone
    "B": ["optim.lr=2e-4", "reward.spec=0.6*rouge_l + 0.2*length_penalty + 0.2*no_truncation"],
    "C": ["optim.lr=4e-4", "reward.spec=0.6*rouge_l + 0.2*length_penalty + 0.2*no_truncation"],
}
KEYS = ("metric", "second_metric", "length", "truncation_rate", "length_ratio", "copy_rate")


def _run(args: list[str]) -> None:
    print("+ rlft " + " ".join(args), flush=True)
    subprocess.run(RLFT + args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def instruction_stage(work: Path, rows: int) -> list[dict]:
    out = []
    for i, text in enumerate(INSTRUCTIONS):
        run_dir = work / f"instruction-{i}"
        result = run_dir / "eval" / "eval.json"
        if not result.is_file():
            _run(["eval", *MODEL, f"data.instruction={text}", "eval.split=validation",
                  f"run.output_dir={run_dir}", "--max-examples", str(rows)])
        ev = json.loads(result.read_text())
        out.append({"instruction": text, "n": ev["n"], **{k: ev.get(k) for k in KEYS}})
    return out


def rl_stage(work: Path, instruction: str) -> list[dict]:
    out = []
    for name, extra in CANDIDATES.items():
        run_dir = work / f"rl-{name}"
        args = ["train", *MODEL, f"data.instruction={instruction}", *RL_COMMON, *extra, f"run.output_dir={run_dir}"]
        if not (run_dir / "final" / "config.json").is_file() or not _same_settings(run_dir, args):
            _run(args)
        evals = read_metrics(run_dir, split="validation")
        first, last = evals[0], evals[-1]
        out.append({"candidate": name, "settings": extra, "steps": last["step"],
                    "start": {k: first.get(k) for k in KEYS}, "end": {k: last.get(k) for k in KEYS}})
    return out


def _same_settings(run_dir: Path, args: list[str]) -> bool:
    """A finished run is reused only if its resolved config holds every setting asked for."""
    import yaml

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for item in args[1:]:
        key, value = item.split("=", 1)
        if key == "run.output_dir":
            continue
        section, field = key.split(".", 1)
        have = resolved.get(section, {}).get(field)
        if isinstance(have, bool):
            have = str(have).lower()
        if str(have) != value and not (isinstance(have, (int, float)) and _num(value) == have):
            return False
    return True


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def choose(rl: list[dict]) -> tuple[str, list[str]]:
    """Best final validation metric among candidates whose copy rate did not rise."""
    notes, eligible = [], []
    for c in rl:
        ok = c["end"]["copy_rate"] <= c["start"]["copy_rate"]
        notes.append(f"{c['candidate']}: copy rate {c['start']['copy_rate']:.3f} -> {c['end']['copy_rate']:.3f}: "
                     f"{'passes' if ok else 'FAILS'} the no-more-copying rule")
        if ok:
            eligible.append(c)
    if not eligible:
        notes.append("FALLBACK: no candidate met the copying rule; the best final metric is taken")
        eligible = rl
    best = max(eligible, key=lambda c: c["end"]["metric"])
    return best["candidate"], notes


def markdown(instr: list[dict], rl: list[dict], chosen: str, notes: list[str]) -> str:
    lines = ["# rlft demo: settings chosen on validation (summarization, SmolLM2-135M-Instruct)", "",
             "Command: `python -m benchmarks.demo_selection --work runs/demo-selection`", "",
             "## Instruction (zero-shot, greedy, validation rows)", "",
             "| instruction | n | ROUGE-L | chrF | length | truncation | copy rate |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in instr:
        text = r["instruction"].replace("\n", "\\n")
        lines.append(f"| `{text}` | {r['n']} | {r['metric']:.2f} | {r['second_metric']:.2f} | {r['length']:.1f} | "
                     f"{r['truncation_rate']:.2f} | {r['copy_rate']:.2f} |")
    lines += ["", "## RL setting (LoRA r=16, RLOO, 20 steps of 8x4, validation 64 rows)", "",
              "| candidate | settings | ROUGE-L start -> end | chrF start -> end | length ratio | truncation | copy rate |",
              "|---|---|---|---|---|---|---|"]
    for c in rl:
        s, e = c["start"], c["end"]
        lines.append(f"| {c['candidate']} | {'; '.join(c['settings'])} | {s['metric']:.2f} -> {e['metric']:.2f} | "
                     f"{s['second_metric']:.2f} -> {e['second_metric']:.2f} | {s['length_ratio']:.2f} -> "
                     f"{e['length_ratio']:.2f} | {s['truncation_rate']:.2f} -> {e['truncation_rate']:.2f} | "
                     f"{s['copy_rate']:.2f} -> {e['copy_rate']:.2f} |")
    lines += ["", *[f"- {n}" for n in notes], f"- chosen: {chosen}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_selection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/demo-selection", help="run directories (reused when complete)")
    parser.add_argument("--rows", type=int, default=48, help="validation rows for the instruction stage")
    args = parser.parse_args(argv)
    work = Path(args.work)
    instr = instruction_stage(work, args.rows)
    # An instruction whose outputs mostly copy the page is not summarizing (this rule was written
    # after seeing the numbers: the best raw metric, 'Write a short title...', copied 69% of the time).
    fair = [r for r in instr if r["copy_rate"] < 0.5] or instr
    best_instruction = max(fair, key=lambda r: r["metric"])["instruction"]
    rl = rl_stage(work, best_instruction)
    chosen, notes = choose(rl)
    notes.insert(0, "instruction: the best zero-shot ROUGE-L among wordings whose copy rate is below 0.5 "
                    f"({sum(r['copy_rate'] >= 0.5 for r in instr)} excluded); both copying rules were written "
                    "after seeing these numbers")
    result = {"instructions": instr, "chosen_instruction": best_instruction, "rl": rl, "rules": notes,
              "chosen": chosen}
    atomic_write(RESULTS / "demo-selection.json", json.dumps(result, indent=2) + "\n")
    atomic_write(RESULTS / "demo-selection.md", markdown(instr, rl, chosen, notes))
    print(markdown(instr, rl, chosen, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
