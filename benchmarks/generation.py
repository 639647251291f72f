"""Generation speed of rlft's sampler on a real model, this source tree against an earlier one.

```
python -m benchmarks.generation --baseline-rev db8bad3          # smollm2-135m, fp32 and bf16, full and LoRA
python -m benchmarks.generation --precisions bf16 --modes lora --repeats 5 --out /tmp/gen.json
python -m benchmarks.generation --compile --out benchmarks/results/generation-compile.json  # + rollout.compile
```

What one RL step's rollout does: B prompts of the bundled summarization task rendered with the chat
template (the task's instruction), G samples each, T new tokens at temperature 1, through
``parts.sampler.sample`` of ``rlft.training.setup.prepare_parts`` (so LoRA and the precision are set
up as ``rlft train`` sets them up). ``--baseline-rev`` checks an earlier commit of this repository
out into a scratch directory (``git archive``) and times it the same way, in the same invocation:
the two sources alternate run by run, each run in its own process, so the ratio is measured side by
side. The issue on performance took its "today" figure before its own work began (commit db8bad3).
tokens/s counts every sampled slot, B x G x (steps decoded): the work the loop does. The sampled
tokens of the two sources are compared (same seed): a speed change that changed the tokens shows.
``--compile`` adds this tree with ``rollout.compile=true`` (its warm-up sampling, the compilation, is
recorded apart as ``warmup_s``; the timed samplings reuse the compiled step). Records the CPU flags
and the load average; refuses to start on a busy machine like
``benchmarks.throughput``. Writes ``benchmarks/results/generation.{json,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlft.atomic import atomic_write

from benchmarks.common import RESULTS, utc_now
from benchmarks.worker import run_worker

MODULE = "benchmarks.generation"
COMPILED = "this tree, compiled"
ROOT = Path(__file__).resolve().parents[1]


def worker(spec: dict) -> dict:
    """Time ``spec['repeats']`` samplings after one warm-up, in this process; rlft comes from the
    source tree the parent put first on PYTHONPATH."""
    import hashlib

    import torch

    import rlft
    from rlft.config import load_config
    from rlft.data.templates import render
    from rlft.training.setup import prepare_parts

    torch.set_num_threads(spec["threads"])
    settings = {"model.name_or_path": spec["model"], "data.task": "summarization", "data.template": "chat",
                "run.precision": spec["precision"], "run.threads": spec["threads"], "run.device": "cpu",
                "run.progress": False, "lora.r": spec["lora_r"] if spec["mode"] == "lora" else 0}
    if spec.get("compile"):  # only then: an earlier tree's config may not know the setting
        settings["rollout.compile"] = True
    config = load_config(None, [f"{k}={v}" for k, v in settings.items()])
    parts = prepare_parts(config)
    examples = parts.splits["train"][:spec["prompts"]]
    prompts = render(parts.config, parts.policy.tokenizer, examples, parts.max_prompt_tokens)
    lengths = [len(parts.policy.tokenizer(p)["input_ids"]) for p in prompts]
    times, digest = [], None
    for i in range(1 + spec["repeats"]):
        generator = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        rollout = parts.sampler.sample(prompts, spec["group"], temperature=1.0, max_new_tokens=spec["new_tokens"],
                                       generator=generator)
        dt = time.perf_counter() - t0
        if i == 0:  # warm-up (with rollout.compile: the compilation)
            warmup = dt
            digest = hashlib.sha256(rollout.completion_ids.numpy().tobytes()).hexdigest()[:16]
            continue
        times.append(dt)
    slots = rollout.completion_ids.numel()  # the same every repeat: one seed, the same tokens
    return {"times": times, "warmup_s": warmup, "median_s": statistics.median(times), "slots": slots,
            "tokens_per_s": slots / statistics.median(times), "prompt_tokens": lengths,
            "precision": parts.precision, "tokens_sha256": digest, "rlft_file": str(Path(rlft.__file__).parent)}


def checkout(rev: str, into: Path) -> Path:
    """``git archive rev`` of this repository, unpacked under ``into``; returns its src/ directory."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--baseline-rev", default="", help="an earlier commit to time side by side (e.g. db8bad3)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--modes", default="full,lora", help="full, lora (rank --lora-r)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=8, help="B")
    ap.add_argument("--group", type=int, default=4, help="G")
    ap.add_argument("--new-tokens", type=int, default=24, help="T")
    ap.add_argument("--repeats", type=int, default=3, help="timed samplings per run, after one warm-up")
    ap.add_argument("--compile", action="store_true",
                    help="also time this tree with rollout.compile=true (its warm-up is the compilation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-load", type=float, default=None, help="refuse above this 1-minute load (0.75 per core)")
    ap.add_argument("--allow-busy", action="store_true", help="run anyway above --max-load; the results say BUSY")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default=str(RESULTS / "generation.json"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from rlft.training.runtime import machine_facts

    from benchmarks.throughput.__main__ import check_load, cpu_flags

    at_start = machine_facts()
    busy = check_load(at_start, args)  # refuses a busy machine unless --allow-busy
    common = {k: getattr(args, k) for k in ("model", "lora_r", "prompts", "group", "new_tokens", "repeats", "threads")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlft-gen-bench-") as scratch:
        sources = {"this tree": (str(ROOT / "src"), False)}
        if args.compile:
            sources[COMPILED] = (str(ROOT / "src"), True)
        if args.baseline_rev:
            sources[args.baseline_rev] = (str(checkout(args.baseline_rev, Path(scratch) / "baseline")), False)
        for precision in args.precisions.split(","):
            for mode in args.modes.split(","):
                for name, (src, compiled) in sources.items():  # alternating: the runs see the same machine
                    spec = {**common, "precision": precision, "mode": mode, "compile": compiled}
                    load = os.getloadavg()[0]
                    r = run_worker(MODULE, spec, threads=args.threads, label=f"{name} {precision} {mode}",
                                   timeout=args.timeout, env={"PYTHONPATH": os.pathsep.join([src, str(ROOT)])})
                    # which rlft the child imported, checked here and recorded without the machine's paths
                    if Path(r.pop("rlft_file")) != Path(src) / "rlft":
                        raise RuntimeError(f"{name}: the worker imported rlft from elsewhere than {src}")
                    r["rlft_from"] = "src/ of this tree" if src == str(ROOT / "src") else f"src/ of git archive {name}"
                    rows.append({"source": name, "precision": precision, "mode": mode, "load_at_start": load, **r})
                    print(f"{name:>10} {precision} {mode}: {r['median_s']:.2f} s (warm-up {r['warmup_s']:.1f} s), "
                          f"{r['tokens_per_s']:.0f} tokens/s "
                          f"(prompts {statistics.mean(r['prompt_tokens']):.0f} tokens, load {load:.2f})", flush=True)
    result = {"command": f"python -m {MODULE} " + " ".join(sys.argv[1:] if argv is None else argv),
              "date": utc_now(), "settings": common, "baseline_rev": args.baseline_rev or None, "busy": busy,
              "machine": {**at_start, "cpu_flags": cpu_flags(), "load_average_at_end": machine_facts()["load_average"]},
              "rows": rows, "speedups": speedups(rows, args.baseline_rev)}
    out = Path(args.out)
    atomic_write(out, json.dumps(result, indent=1) + "\n")
    atomic_write(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


def speedups(rows: list[dict], baseline: str) -> list[dict]:
    """Per (precision, mode): tokens/s of this tree (and of this tree compiled) over the baseline's
    (and the compiled over the eager), and whether the sampled tokens matched."""
    pairs = [("this tree", baseline), (COMPILED, baseline), (COMPILED, "this tree")]
    out = []
    for r in rows:
        for source, against in pairs:
            if r["source"] != source or not against:
                continue
            base = next((b for b in rows if b["source"] == against and
                         (b["precision"], b["mode"]) == (r["precision"], r["mode"])), None)
            if base is None:
                continue
            out.append({"precision": r["precision"], "mode": r["mode"], "source": source, "against": against,
                        "ratio": r["tokens_per_s"] / base["tokens_per_s"],
                        "same_tokens": r["tokens_sha256"] == base["tokens_sha256"]})
    return out


def markdown(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    lines = [f"# Generation speed: {s['model']}, B={s['prompts']} x G={s['group']} x T={s['new_tokens']}", "",
             f"`{result['command']}`", "",
             f"{result['date']}; {m['cpu']} ({m['cores']} cores), {s['threads']} torch threads; CPU flags: "
             f"{', '.join(m['cpu_flags'])}; 1-min load {m['load_average'][0]:.2f} at the start, "
             f"{m['load_average_at_end'][0]:.2f} at the end. Median of {s['repeats']} samplings after a warm-up, "
             "each source in its own process, alternating." + (" **BUSY MACHINE: run above the load limit.**"
                                                                 if result["busy"] else ""), "",
             "| source | precision | mode | prompt tokens (mean) | warm-up s | s per sampling | tokens/s | load at start |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        warmup = f"{r['warmup_s']:.1f}" if "warmup_s" in r else "-"
        lines.append(f"| {r['source']} | {r['precision']} | {r['mode']} | {statistics.mean(r['prompt_tokens']):.0f} | "
                     f"{warmup} | {r['median_s']:.2f} | {r['tokens_per_s']:.0f} | {r['load_at_start']:.2f} |")
    if result["speedups"]:
        lines += ["", "| precision | mode | source | against | tokens/s ratio | same tokens |", "|---|---|---|---|---:|---|"]
        lines += [f"| {x['precision']} | {x['mode']} | {x.get('source', 'this tree')} | {x.get('against', result['baseline_rev'])} | "
                  f"{x['ratio']:.2f}x | {'yes' if x['same_tokens'] else 'no'} |" for x in result["speedups"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
