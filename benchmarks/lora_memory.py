"""Peak memory and seconds per step of full vs LoRA RL fine-tuning of one model, each with and
without activation checkpointing (``optim.activation_checkpointing``).

```
python -m benchmarks.lora_memory                          # smollm2-135m, 4 steps per mode
python -m benchmarks.lora_memory --model path/to/model --steps 3 --lora-r 8 --modes full,lora --out benchmarks/results/x.json
```

Each mode runs ``rlft.training.loop.train`` in its own subprocess, so its peak RSS (``ru_maxrss``)
is its own: full fine-tuning holds the weights, their gradients, two AdamW moments and, with a KL
penalty, a frozen reference copy; LoRA holds the weights once plus a small adapter and its optimizer
state (the reference is the same model with the adapter off). s/step is the median over the steps
after the first (which pays one-time allocation). The prompts are synthetic (copy a few words), so
the benchmark needs no dataset; only memory and speed are measured, not learning. The modes
'full-ckpt' and 'lora-ckpt' recompute activations in the backward (the prompt-shared pass is then
off). Records the machine (CPU flags, load average) at the start and the end. Writes
``benchmarks/results/lora_memory.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rlft.atomic import atomic_write

from benchmarks.common import RESULTS, settings_of, utc_now
from benchmarks.worker import peak_rss_mb, run_worker

MODES = ("full", "lora", "full-ckpt", "lora-ckpt")
WORDS = "the cat sat on a mat while two dogs ran in the park and birds sang over the quiet river".split()


def write_prompts(work: Path) -> dict[str, str]:
    """Disjoint train / validation / test files of 'Repeat: <words> <i>' prompts."""
    files = {}
    for split, (start, n) in {"train": (0, 64), "validation": (64, 4), "test": (68, 4)}.items():
        rows = []
        for i in range(start, start + n):
            words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 5)] + [str(i)]
            rows.append({"prompt": "Repeat: " + " ".join(words), "reference": " ".join(words)})
        files[split] = str(work / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return files


def worker(spec: dict) -> dict:
    """One run in this process: ``spec['mode']`` is one of ``MODES``."""
    from rlft.config import load_config
    from rlft.rundir import CONFIG_FILE, read_metrics
    from rlft.training.loop import train

    out = Path(spec["work"]) / spec["mode"]
    tuning, checkpointing = spec["mode"].split("-")[0], spec["mode"].endswith("-ckpt")
    settings = {
        "model.name_or_path": spec["model"], "data.train": spec["data"]["train"],
        "data.validation": spec["data"]["validation"], "data.test": spec["data"]["test"], "reward.spec": "chrf",
        "algo.name": "rloo", "algo.kl_coef": spec["kl_coef"],
        "rollout.prompts_per_step": spec["prompts"], "rollout.group_size": spec["group"],
        "rollout.max_new_tokens": spec["new_tokens"], "run.steps": spec["steps"], "run.output_dir": str(out),
        "run.eval_every": 0, "run.save_every": 0, "run.progress": False, "run.tensorboard": False,
        "run.threads": spec["threads"], "run.precision": spec["precision"], "run.device": "cpu",
        "eval.max_examples": 1, "optim.lr": 1e-5, "lora.r": spec["lora_r"] if tuning == "lora" else 0,
        "optim.activation_checkpointing": checkpointing, **spec.get("settings", {}),
    }
    config = load_config(None, [f"{k}={v}" for k, v in settings.items()])
    t0 = time.perf_counter()
    train(config)
    wall = time.perf_counter() - t0
    times = [r["step_time"] for r in read_metrics(out, split="train") if "step_time" in r]
    return {"mode": spec["mode"], "peak_rss_mb": peak_rss_mb(), "step_times": times,
            "s_per_step": statistics.median(times[1:] or times), "wall_s": wall,
            # the precision the run resolved ('auto' -> 'bf16' or 'fp32'), from its config.yaml
            "precision": load_config(out / CONFIG_FILE).run.precision}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lora_memory",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm2-135m", help="a name rlft resolves (`rlft models`) or a local directory")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--kl-coef", type=float, default=0.05, help="> 0: full fine-tuning keeps a reference copy")
    ap.add_argument("--prompts", type=int, default=4, help="B prompts per step")
    ap.add_argument("--group", type=int, default=4, help="G samples per prompt")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more settings for every mode")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--out", default=str(RESULTS / "lora_memory.json"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from rlft.training.runtime import machine_facts

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes: choose from {', '.join(MODES)}")
    at_start = machine_facts()
    with tempfile.TemporaryDirectory(prefix="rlft-lora-bench-") as work:
        data = write_prompts(Path(work))
        common = {"model": args.model, "data": data, "work": work, "steps": args.steps, "lora_r": args.lora_r,
                  "kl_coef": args.kl_coef, "prompts": args.prompts, "group": args.group,
                  "new_tokens": args.new_tokens, "threads": args.threads, "precision": args.precision,
                  "settings": settings_of(args.set)}
        runs = {}
        for mode in modes:
            runs[mode] = run_worker("benchmarks.lora_memory", {**common, "mode": mode}, threads=args.threads,
                                    label=f"{mode} run", timeout=args.timeout)
            print(f"{mode}: peak RSS {runs[mode]['peak_rss_mb']:.0f} MB, {runs[mode]['s_per_step']:.2f} s/step "
                  f"({runs[mode]['precision']})", flush=True)
    ratios = {}
    for a, b in (("lora", "full"), ("full-ckpt", "full"), ("lora-ckpt", "lora")):
        if a in runs and b in runs:
            ratios[f"{a}_vs_{b}"] = {"peak_rss_ratio": runs[a]["peak_rss_mb"] / runs[b]["peak_rss_mb"],
                                     "s_per_step_ratio": runs[a]["s_per_step"] / runs[b]["s_per_step"]}
    result = {
        "command": "python -m benchmarks.lora_memory " + " ".join(sys.argv[1:]),
        "date": utc_now(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "at_start": at_start, "load_average_at_end": machine_facts()["load_average"]},
        "settings": {k: v for k, v in common.items() if k not in ("data", "work")},
        "runs": runs,
        "ratios": ratios,
    }
    out = Path(args.out)
    atomic_write(out, json.dumps(result, indent=1) + "\n")
    for name, r in ratios.items():
        print(f"{name}: peak RSS x{r['peak_rss_ratio']:.2f}, s/step x{r['s_per_step_ratio']:.2f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
