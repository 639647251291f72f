"""``python -m benchmarks.throughput [args]``: the command line, the order of the runs (each in its
own worker process, ``--worker SPEC``) and the results files' meta."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import benchmarks.throughput
from benchmarks.common import RESULTS, utc_now
from benchmarks.throughput import flops, inputs, report
from benchmarks.worker import peak_rss_mb, run_worker

MODULE = "benchmarks.throughput"
LORA_R = 16   # the LoRA rows' rank (alpha 32, no dropout), the same for both systems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=benchmarks.throughput.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--models", default="gpt2-10m,gpt2-30m,rlft-base")
    ap.add_argument("--algos", default="grpo,rloo")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--systems", default="rlft,trl")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8, help="B")
    ap.add_argument("--group", type=int, default=4, help="G")
    ap.add_argument("--new-tokens", type=int, default=32, help="T")
    ap.add_argument("--kl", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    ap.add_argument("--bf16-models", default="gpt2-10m", help="models that also get the bf16 rows")
    ap.add_argument("--lora-models", default="",
                    help="models that also get LoRA rows (rank 16 on the attention and MLP projections; TRL through "
                         "its peft integration), e.g. smollm2-135m")
    ap.add_argument("--max-load", type=float, default=None,
                    help="refuse to start when the 1-minute load average is above this (default: 0.75 per core, "
                         "1.5 on 2 cores): timings on a busy machine are not comparable")
    ap.add_argument("--allow-busy", action="store_true",
                    help="run anyway above --max-load; the results are then marked BUSY in both files")
    ap.add_argument("--slow-steps", type=int, default=1,
                    help="timed steps (no warm-up) of TRL bf16 on a CPU without bf16 instructions (~10x slower)")
    ap.add_argument("--slow-algos", default="grpo", help="algorithms that get those slow TRL bf16 runs")
    ap.add_argument("--pool", type=int, default=256, help="prompts in the pool")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--note", default="")
    return ap.parse_args(argv)


def worker(spec: dict) -> dict:
    """One run, in this (worker) process: the system's step times, then this process's peak RSS and
    the model's shape (loaded after the RSS is read, so it does not count)."""
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.throughput.rlft_side import worker_rlft
    from benchmarks.throughput.trl_side import worker_trl

    result = (worker_rlft if spec["system"] == "rlft" else worker_trl)(spec)
    result["peak_rss_mb"] = peak_rss_mb()
    result["shape"] = flops.model_shape(AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32))
    return result


def measure(args: argparse.Namespace, native_bf16: bool) -> tuple[list[dict], dict]:
    """Every (model, algorithm, precision, system) run, the systems of one model and algorithm
    alternating; returns the runs' records and the matmul peak measured before them."""
    bf16_models, lora_models = set(args.bf16_models.split(",")), set(filter(None, args.lora_models.split(",")))
    precisions, systems = args.precisions.split(","), args.systems.split(",")
    with tempfile.TemporaryDirectory(prefix="rlft-throughput-") as tmp:
        work = Path(tmp)
        dirs = inputs.prepare(work, args.models.split(","), args.pool)
        peak = flops.measure_peak(args.threads)
        print("matmul peak GFLOP/s:", {k: round(v["gflops"], 1) for k, v in peak.items()}, flush=True)
        results = []
        for model, model_dir in dirs.items():
            plen = inputs.prompt_tokens(model_dir, work)
            for algo in args.algos.split(","):
                tunings = ["full", "lora"] if model in lora_models else ["full"]
                runs = [(s, p, tuning) for tuning in tunings for p in precisions for s in systems
                        if p == "fp32" or model in bf16_models]
                for system, precision, tuning in runs:
                    slow = system == "trl" and precision == "bf16" and not native_bf16
                    if slow and algo not in args.slow_algos.split(","):
                        continue
                    spec = {"system": system, "model": model, "model_dir": model_dir, "algo": algo,
                            "precision": precision, "threads": args.threads, "b": args.prompts, "g": args.group,
                            "t": args.new_tokens, "kl": args.kl, "lr": 1e-5,
                            "steps": args.slow_steps if slow else args.steps, "warmup": 0 if slow else args.warmup,
                            "work": str(work), "tuning": tuning, "lora_r": LORA_R if tuning == "lora" else 0,
                            "key": f"{model}-{algo}-{precision}-{system}" + ("-lora" if tuning == "lora" else "")}
                    load = os.getloadavg()[0]
                    raw = run_worker(MODULE, spec, threads=args.threads, label=spec["key"], timeout=args.timeout)
                    r = flops.summarize(spec, raw, peak, plen)
                    r["loadavg_start"] = load
                    results.append(r)
                    print(f"{spec['key']}: {r['s_per_step']:.3f} s/step, {r['tokens_per_s']:.0f} tok/s, "
                          f"RSS {r['peak_rss_mb']:.0f} MB, MFU {100 * r['mfu']:.0f}%", flush=True)
    return results, peak


def max_load(args: argparse.Namespace) -> float:
    """The highest 1-minute load average a run may start at: ``--max-load``, else 0.75 per core."""
    return args.max_load if args.max_load is not None else 0.75 * (os.cpu_count() or 1)


def check_load(machine: dict, args: argparse.Namespace) -> bool:
    """Refuse a run that starts on a busy machine (another process on the cores makes every time, and
    the ratios between systems, unreliable); with ``--allow-busy`` run it and return True (marked)."""
    load, limit = (machine.get("load_average") or [0.0])[0], max_load(args)
    if load <= limit:
        return False
    message = (f"the 1-minute load average is {load:.2f}, above {limit:.2f} for {machine['cores']} cores: "
               "another process is using the CPU")
    if not args.allow_busy:
        raise SystemExit(f"{MODULE}: refusing to measure: {message}. Wait for an idle machine, or pass "
                         "--allow-busy to run anyway (the results are then marked BUSY).")
    print(f"WARNING: {message}; the results will be marked BUSY", file=sys.stderr, flush=True)
    return True


def cpu_flags() -> list[str]:
    """The CPU flags that decide matmul speed here (bf16 and AMX instructions, AVX-512), as present."""
    from rlft.training.runtime import cpu_info

    flags = cpu_info()[1]
    return sorted(f for f in flags if f in {"avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile",
                                            "amx_int8", "avx2", "fma"})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch
    import transformers

    from rlft.models.bf16_emulation import native_cpu_bf16
    from rlft.training.runtime import cpu_info, machine_facts

    from benchmarks.throughput.trl_side import trl_version

    native_bf16 = native_cpu_bf16()
    machine = machine_facts()
    busy = check_load(machine, args)
    t_start, load_start = time.perf_counter(), os.getloadavg()
    results, peak = measure(args, native_bf16)
    report.speedups(results)
    meta = {"command": f"python -m {MODULE} " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": utc_now("%Y-%m-%d %H:%M UTC"), "cpu": f"{cpu_info()[0]} ({os.cpu_count()} cores)",
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl_version(),
            "threads": args.threads, "b": args.prompts, "g": args.group, "t": args.new_tokens, "kl": args.kl,
            "steps": args.steps, "warmup": args.warmup, "peak": peak, "note": args.note,
            "native_cpu_bf16": native_bf16, "slow_steps": args.slow_steps,
            "wall_s": time.perf_counter() - t_start, "python": platform.python_version(),
            "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "machine": machine,
            "cpu_flags": cpu_flags(), "max_load": max_load(args), "busy": busy, "lora_r": LORA_R}
    print(report.write(Path(args.out), results, meta))


if __name__ == "__main__":
    main()
