"""The report: rlft's speedups over TRL, the markdown table and the results files
(``throughput.json`` with every step time, ``throughput.md`` with the table)."""

from __future__ import annotations

import json
from pathlib import Path

from rlft.atomic import atomic_write


def speedups(results: list[dict]) -> None:
    """``speedup`` and ``speedup_cpu`` of each rlft run: TRL's s/step (and CPU s/step) on the same model
    and algorithm divided by rlft's, in the same precision; a bf16 run against TRL's fastest setting."""
    for r in results:
        if r["system"] != "rlft":
            continue
        trl = [t for t in results if t["system"] == "trl" and t["model"] == r["model"] and t["algo"] == r["algo"]
               and t.get("tuning", "full") == r.get("tuning", "full")
               and (t["precision"] == r["precision"] or r["precision"] == "bf16")]
        if trl:
            r["speedup"] = min(t["s_per_step"] for t in trl) / r["s_per_step"]
            r["speedup_cpu"] = min(t["cpu_s_per_step"] for t in trl) / r["cpu_s_per_step"]


def markdown(results: list[dict], meta: dict) -> str:
    """The table of ``throughput.md``: the setting, the matmul peak, one row per run, what each column means."""
    peak = meta["peak"]
    lines = [f"# RL step throughput: rlft vs TRL {meta['trl']}", ""]
    if meta.get("busy"):
        lines += [f"**BUSY MACHINE: the 1-minute load average was {meta['loadavg_start'][0]:.2f} at the start, above "
                  f"{meta['max_load']:.2f}; these timings are not a clean measurement (run with --allow-busy).**", ""]
    lines += [f"`{meta['command']}`", "",
             f"{meta['date']}; {meta['cpu']}; torch {meta['torch']}, transformers {meta['transformers']}; "
             f"{meta['threads']} torch thread(s). B={meta['b']} prompts x G={meta['g']} samples x T={meta['t']} new "
             f"tokens, KL coefficient {meta['kl']}, lr 1e-5, dropout off. s/step: median of {meta['steps']} timed "
             f"steps after {meta['warmup']} warm-up step(s), each system in its own process, runs alternating. "
             f"Wall time {meta['wall_s'] / 60:.1f} min; 1-min load average {meta['loadavg_start'][0]:.1f} at the "
             f"start, {meta['loadavg_end'][0]:.1f} at the end." + _flags_line(meta),
             "",
             "Matmul peak (1536^3, same run): fp32 {:.0f} GFLOP/s; bf16 {:.0f} GFLOP/s (native bf16 kernels {:.1f})."
             .format(peak["float32"]["gflops"], peak["bfloat16"]["gflops"],
                     max(v for k, v in peak["bfloat16"]["paths"].items() if k != "fp32_kernels")),
             "", "| model | algo | precision | system | s/step | x TRL | CPU s/step | x TRL (CPU) | completions/s "
             "| tokens/s | peak RSS MB | in steps MB | MFU | executed FLOP util | load |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio, ratio_cpu = r.get("speedup"), r.get("speedup_cpu")
        timed = "" if len(r["step_times"]) == meta["steps"] else f" ({len(r['step_times'])} step)"
        tuning = f" LoRA r={meta.get('lora_r', 16)}" if r.get("tuning") == "lora" else ""
        load = f"{r['loadavg_start']:.1f}" if "loadavg_start" in r else ""
        lines.append(f"| {r['model']} ({r['params'] / 1e6:.1f}M){tuning} | {r['algo']} | {r['precision']} | "
                     f"{r['system']} | "
                     f"{r['s_per_step']:.2f}{timed} | {'' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{r['cpu_s_per_step']:.2f} | {'' if ratio_cpu is None else f'{ratio_cpu:.2f}x'} | "
                     f"{r['completions_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r.get('peak_rss_steps_mb', r['peak_rss_mb']):.0f} | "
                     f"{100 * r['mfu']:.0f}% | {100 * r['hardware_utilization']:.0f}% | {load} |")
    lines += ["", "- x TRL: TRL's s/step divided by rlft's, in the same precision; for bf16 rows, against TRL's "
              "fastest setting on this machine (its fp32 or its CPU default bf16 + gradient checkpointing).",
              "- CPU s/step: the process's CPU seconds per step (median); on a shared machine it leaves out the "
              "time other processes held the core, so its ratio is the steadier one.",
              "- TRL fp32: `bf16=False`, no gradient checkpointing. TRL bf16: its CPU defaults "
              "(`bf16=True`, `gradient_checkpointing=True`). rlft bf16: `run.precision=bf16`.",
              "- MFU: model FLOPs per step (every sequence runs its own prompt: prefill, reference pass, "
              "forward + backward; the same count for every system) / s per step / the dtype's matmul peak.",
              "- Peak RSS: the worker process's, whole run; in steps: the peak when the last step ended, before "
              "rlft writes final/ (with LoRA the merged model is built beside the adapter, which TRL, saving "
              "nothing here, does not do).",
              "- LoRA rows: rank 16, alpha 32 on the attention and MLP projections for both systems (TRL through "
              "its peft integration); their model FLOPs count the backward once (no weight gradients).",
              "- Executed FLOP util: the FLOPs the system actually runs (rlft runs each prompt once for its G "
              "samples in the prefill and both scoring passes) / s per step / peak."]
    if not meta.get("native_cpu_bf16", True):
        lines.append("- This CPU has no bf16 matrix instructions: PyTorch's bf16 kernels run a slow fallback "
                     "(see the native bf16 rate above), which TRL's bf16 rows use; rlft runs bf16 matmuls "
                     "on the fp32 kernels with bf16 rounding. TRL bf16 rows time "
                     f"{meta.get('slow_steps', 1)} step(s) without warm-up.")
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines) + "\n"


def _flags_line(meta: dict) -> str:
    """The machine facts a reader needs to compare tables: CPU flags, cores, threads (older files lack them)."""
    if "cpu_flags" not in meta:
        return ""
    flags = ", ".join(meta["cpu_flags"]) or "none of avx512f/avx512_bf16/amx"
    return (f" CPU flags: {flags}; {meta['machine']['cores']} cores, {meta['threads']} torch thread(s); "
            f"runs start only below load {meta['max_load']:.2f} (the load column: each run's start, which still "
            f"counts this benchmark's previous run in the 1-minute average).")


def write(out: Path, results: list[dict], meta: dict) -> str:
    """Write ``out/throughput.json`` and ``out/throughput.md``; returns the markdown."""
    text = markdown(results, meta)
    atomic_write(out / "throughput.json", json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    atomic_write(out / "throughput.md", text)
    return text
