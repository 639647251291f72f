"""Seconds per RL step: rlft against TRL's GRPOTrainer and RLOOTrainer, on one CPU machine.

    python -m benchmarks.throughput                       # the recorded table (about 15 min, 1 thread)
    python -m benchmarks.throughput --threads 2 --models gpt2-10m --algos grpo --steps 3

Every system trains the same model (saved once to a scratch directory, loaded fp32 by each) on
the same prompt pool, with the same B prompts x G samples x T new tokens, temperature 1, no
top-k/top-p, dropout off, the same KL coefficient, learning rate, gradient clipping and torch
thread count. Each (system, setting) runs in its own subprocess, so peak RSS is its own, and the
runs of one model/algorithm alternate so that a change in machine load hits every system alike.

rlft runs through its public path, ``rlft.train(config)``; TRL through ``GRPOTrainer`` /
``RLOOTrainer``. Precision: 'fp32' is fp32 for both (TRL: ``bf16=False``, no gradient
checkpointing); 'bf16' is rlft's ``run.precision=bf16`` and TRL's CPU defaults (bf16 autocast +
gradient checkpointing). MFU divides model FLOPs (``step_flops``: every sequence runs its own
prompt, the same count for every system) by the step time and by this machine's best matmul rate
for the dtype, measured in the same invocation; the executed-FLOP utilization divides what each
system actually computes instead.

TRL is a benchmark-only dependency: ``pip install trl==1.16.0`` (it keeps torch and transformers).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rlft.atomic import atomic_write

from benchmarks.common import RESULTS, utc_now
from benchmarks.worker import peak_rss_mb, run_worker

TEMPLATE = "Translate to Chinese: {prompt}\nChinese:"
FALLBACK_PROMPTS = [  # used when the translation snapshot is not there
    ("could not close data file", "无法关闭数据文件"),
    ("name commits with their object names", "以对象名字命名提交"),
    ("ELF file OS ABI invalid", "ELF 文件 OS ABI 无效"),
    ("show the working tree status", "显示工作区状态"),
    ("cannot open file for writing", "无法打开文件进行写入"),
    ("print version information and exit", "打印版本信息并退出"),
    ("the network connection was lost", "网络连接已断开"),
    ("invalid option to the command", "命令的选项无效"),
]
# name -> GPT2Config fields (the vocabulary comes from the tokenizer)
GPT2_SIZES = {"gpt2-10m": dict(n_embd=256, n_layer=10, n_head=4), "gpt2-30m": dict(n_embd=512, n_layer=8, n_head=8)}


# ---------------------------------------------------------------------------------------------
# Inputs: prompt pool, tokenizer, models (built once, saved, loaded by every run)

def prepare(work: Path, models: list[str], pool: int) -> dict[str, str]:
    """Write the prompt pool and every model directory under ``work``; returns name -> directory."""
    from rlft.models.loading import BUNDLED_DIR, BUNDLED_NAME

    rows = _prompt_rows(pool)
    with open(work / "prompts.jsonl", "w", encoding="utf-8") as f:
        for i, (prompt, ref) in enumerate(rows):
            f.write(json.dumps({"id": f"p{i}", "prompt": TEMPLATE.format(prompt=prompt), "reference": ref},
                               ensure_ascii=False) + "\n")
    tokenizer = _tokenizer([p + " " + r for p, r in rows])
    dirs = {}
    for name in models:
        if name == BUNDLED_NAME:
            if (BUNDLED_DIR / "config.json").is_file():
                dirs[name] = str(BUNDLED_DIR)
            else:
                print(f"skipping rlft-base: {BUNDLED_DIR} is not built", file=sys.stderr)
            continue
        dirs[name] = str(_gpt2(work / name, tokenizer, GPT2_SIZES[name]))
    return dirs


def _prompt_rows(pool: int) -> list[tuple[str, str]]:
    from rlft.tasks import task_dir

    train = task_dir("translation") / "train.jsonl.gz"
    if not train.is_file():
        return FALLBACK_PROMPTS
    rows = []
    with gzip.open(train, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if 20 <= len(r["prompt"]) <= 90 and "\n" not in r["prompt"]:
                rows.append((r["prompt"], r["references"][0]))
            if len(rows) == pool:
                break
    return rows


def _tokenizer(texts: list[str]):
    """The bundled model's tokenizer when it exists, else an 8k byte-level BPE trained on the pool
    by the pretraining recipe's trainer (the bundled tokenizer was made by it too)."""
    from transformers import AutoTokenizer

    from rlft.models.loading import BUNDLED_DIR

    if (BUNDLED_DIR / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(BUNDLED_DIR)
    from recipes.pretrain.tokenizer import train_tokenizer

    return train_tokenizer(texts * 4, vocab_size=8192)


def _gpt2(out: Path, tokenizer, size: dict) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **size)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------
# Model FLOPs of one step (the same count for every system) and the machine's matmul peak

def model_shape(model) -> dict[str, int]:
    """Matmul parameters of the body (embedding lookups excluded) and of the LM head."""
    from torch import nn

    head = model.get_output_embeddings().weight
    skip = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)} | {id(head)}
    body = sum(p.numel() for p in model.parameters() if p.ndim >= 2 and id(p) not in skip)
    cfg = model.config
    return {"body": body, "head": head.numel(), "layers": cfg.num_hidden_layers, "width": cfg.hidden_size,
            "params": sum(p.numel() for p in model.parameters())}


def step_flops(shape: dict, b: int, g: int, prompt_len: float, completion_len: float, kl: bool, *,
               shared_prompts: bool = False) -> float:
    """FLOPs of one step: forward is 2 per matmul parameter per token plus 4*width per attended
    (query, key) pair per layer, backward twice the forward; the LM head only where logits are used.

    ``shared_prompts=False`` is the model-FLOPs count (every one of the B*G sequences runs its own
    prompt in the prefill, the reference pass and the update), the same for every system.
    ``shared_prompts=True`` is what rlft executes: each prompt once, its keys/values reused by
    its G completions, in the prefill and in both scoring passes.
    """
    n, p, c = b * g, prompt_len, completion_len
    attn = 4 * shape["width"] * shape["layers"]        # QK^T and AV per (query, key) pair

    def forward(tokens, pairs, head_tokens):
        return 2 * shape["body"] * tokens + attn * pairs + 2 * shape["head"] * head_tokens

    prompts = b if shared_prompts else n
    prompt_pass = forward(prompts * p, prompts * p * (p + 1) / 2, 0)
    steps = max(int(round(c)) - 1, 0)                  # the first token comes from the prefill's logits
    completion_pass = forward(n * steps, n * sum(p + j for j in range(1, steps + 1)), n * steps)
    prefill = prompt_pass + forward(0, 0, prompts)
    decode = completion_pass
    scored = prompt_pass + completion_pass + forward(0, 0, n)   # logits at the T completion positions
    return prefill + decode + (scored if kl else 0.0) + 3 * scored


def measure_peak(threads: int) -> dict[str, dict]:
    """Best GFLOP/s of a large matmul per dtype over the ways torch can run it on this CPU.

    fp32: ``mm``, ``linear`` (x @ w.T) and oneDNN's linear. bf16: the native bf16 kernels (``mm``,
    ``linear``), and ``fp32_kernels``: the fp32 GEMM on bf16 inputs with a bf16 output, which is
    how rlft runs bf16 matmuls on CPUs without bf16 instructions; the best of these is the peak.
    """
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    n = 1536
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        paths = {"mm": lambda: torch.mm(a, b), "linear": lambda: F.linear(a, b)}
        if dtype == torch.float32 and torch.backends.mkldnn.is_available():
            paths["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        if dtype == torch.bfloat16:
            paths["fp32_kernels"] = lambda: F.linear(a.float(), b.float()).to(torch.bfloat16)
        rates = {}
        for name, fn in paths.items():
            fn()
            times, t_end = [], time.perf_counter() + 1.0
            while len(times) < 5 and time.perf_counter() < t_end:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            rates[name] = 2 * n**3 / min(times) / 1e9
        best[str(dtype).split(".")[-1]] = {"gflops": max(rates.values()), "paths": rates}
    return best


# ---------------------------------------------------------------------------------------------
# Workers: one system, one setting, in its own process; print a JSON line

def worker_rlft(spec: dict) -> dict:
    import torch

    from rlft.config import load_config
    from rlft.rundir import read_metrics
    from rlft.training.loop import train  # what `rlft.train` is

    torch.set_num_threads(spec["threads"])
    out = Path(spec["work"]) / f"rlft-{spec['key']}"
    data = str(Path(spec["work"]) / "prompts.jsonl")
    steps = spec["warmup"] + spec["steps"]
    flat = {
        "model.name_or_path": spec["model_dir"], "data.train": data, "data.template": "{prompt}",
        "data.validation_fraction": 0.0, "data.test_fraction": 0.0, "reward.spec": "chrf",
        "rollout.prompts_per_step": spec["b"], "rollout.group_size": spec["g"],
        "rollout.max_new_tokens": spec["t"], "algo.name": spec["algo"], "algo.kl_coef": spec["kl"],
        "optim.lr": spec["lr"], "optim.max_grad_norm": 1.0, "run.steps": steps, "run.output_dir": str(out),
        "run.eval_every": 0, "run.save_every": 0, "run.progress": False, "run.tensorboard": False,
        "run.device": "cpu", "run.precision": spec["precision"], "run.threads": spec["threads"],
        "run.seed": 0, "eval.max_examples": 0}
    config = load_config(None, base=flat)
    # CPU seconds per step, read when the loop logs each step (the loop itself is untouched): on a
    # shared machine they do not count the time other processes hold the core.
    from rlft.training.metrics import MetricsLogger

    cpu_marks, log = [], MetricsLogger.log

    def timed_log(self, step, split, metrics):
        if split == "train":
            cpu_marks.append(time.process_time())
        return log(self, step, split, metrics)

    MetricsLogger.log = timed_log
    t0 = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(result.run_dir, split="train") if "step_time" in r]
    return {"step_times": [r["step_time"] for r in rows], "gen_times": [r["gen_time"] for r in rows],
            "lengths": [r["length"] for r in rows], "wall": wall,
            # the first step's start is not observable from outside the loop
            "cpu_times": [float("nan")] + [b - a for a, b in zip(cpu_marks, cpu_marks[1:])]}


def worker_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from rlft.rewards.metrics import chrf_scores

    torch.set_num_threads(spec["threads"])
    import trl

    rows = [json.loads(line) for line in (Path(spec["work"]) / "prompts.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "reference": r["reference"]} for r in rows])

    def chrf(prompts, completions, reference, **_):  # rlft's 'chrf' reward: sentence chrF / 100
        return [s / 100 for s in chrf_scores(completions, [[r] for r in reference])]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self.lengths, self.t0, self.c0 = [], [], [], None, None

        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    bf16 = spec["precision"] == "bf16"
    classes = {"grpo": (trl.GRPOConfig, trl.GRPOTrainer), "rloo": (trl.RLOOConfig, trl.RLOOTrainer)}
    Config, Trainer = classes[spec["algo"]]
    args = Config(
        output_dir=str(Path(spec["work"]) / f"trl-{spec['key']}"), per_device_train_batch_size=spec["b"] * spec["g"],
        gradient_accumulation_steps=1, num_generations=spec["g"], max_completion_length=spec["t"],
        max_steps=spec["warmup"] + spec["steps"], learning_rate=spec["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=spec["kl"], temperature=1.0, top_p=1.0, top_k=0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=bf16,
        gradient_checkpointing=bf16, disable_dropout=True, seed=0, dataloader_num_workers=0)
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    tokenizer.padding_side = "left"
    timer = Timer()
    trainer = Trainer(model=model, reward_funcs=chrf, args=args, train_dataset=dataset,
                      processing_class=tokenizer, callbacks=[timer])
    t0 = time.perf_counter()
    trainer.train()
    return {"step_times": timer.times, "cpu_times": timer.cpu, "lengths": timer.lengths,
            "wall": time.perf_counter() - t0}


def worker(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    result = (worker_rlft if spec["system"] == "rlft" else worker_trl)(spec)
    result["peak_rss_mb"] = peak_rss_mb()
    result["shape"] = model_shape(AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32))
    return result


# ---------------------------------------------------------------------------------------------
# Orchestration

def prompt_tokens(model_dir: str, work: Path) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line)["prompt"] for line in (work / "prompts.jsonl").read_text().splitlines()]
    return statistics.mean(len(tok(r, add_special_tokens=True)["input_ids"]) for r in rows)


def summarize(spec: dict, raw: dict, peak: dict, prompt_len: float) -> dict:
    warm = spec["warmup"]
    times, lengths = raw["step_times"][warm:], raw["lengths"][warm:]
    n = spec["b"] * spec["g"]
    step = statistics.median(times)
    mean_len = statistics.mean(lengths) if lengths else float(spec["t"])
    flops = step_flops(raw["shape"], spec["b"], spec["g"], prompt_len, mean_len, spec["kl"] > 0)
    executed = step_flops(raw["shape"], spec["b"], spec["g"], prompt_len, mean_len, spec["kl"] > 0,
                          shared_prompts=spec["system"] == "rlft")
    dtype = "bfloat16" if spec["precision"] == "bf16" else "float32"
    out = {k: spec[k] for k in ("system", "model", "algo", "precision", "threads", "b", "g", "t", "kl")}
    cpu = [c for c in raw["cpu_times"][warm:] if c == c] or [float("nan")]
    out.update(s_per_step=step, steps_per_s=1 / step, step_times=times, completions_per_s=n / step,
               cpu_s_per_step=statistics.median(cpu), cpu_times=cpu,
               tokens_per_s=n * mean_len / step, mean_completion_len=mean_len, prompt_len=prompt_len,
               peak_rss_mb=raw["peak_rss_mb"], model_tflop_per_step=flops / 1e12,
               achieved_gflops=flops / step / 1e9, mfu=flops / step / 1e9 / peak[dtype]["gflops"],
               executed_tflop_per_step=executed / 1e12,
               hardware_utilization=executed / step / 1e9 / peak[dtype]["gflops"],
               params=raw["shape"]["params"])
    if raw.get("gen_times"):
        out["gen_s_per_step"] = statistics.median(raw["gen_times"][warm:])
    return out


def markdown(results: list[dict], meta: dict) -> str:
    peak = meta["peak"]
    lines = [f"# RL step throughput: rlft vs TRL {meta['trl']}", "",
             f"`{meta['command']}`", "",
             f"{meta['date']}; {meta['cpu']}; torch {meta['torch']}, transformers {meta['transformers']}; "
             f"{meta['threads']} torch thread(s). B={meta['b']} prompts x G={meta['g']} samples x T={meta['t']} new "
             f"tokens, KL coefficient {meta['kl']}, lr 1e-5, dropout off. s/step: median of {meta['steps']} timed "
             f"steps after {meta['warmup']} warm-up step(s), each system in its own process, runs alternating. "
             f"Wall time {meta['wall_s'] / 60:.1f} min; 1-min load average {meta['loadavg_start'][0]:.1f} at the "
             f"start, {meta['loadavg_end'][0]:.1f} at the end.",
             "",
             "Matmul peak (1536^3, same run): fp32 {:.0f} GFLOP/s; bf16 {:.0f} GFLOP/s (native bf16 kernels {:.1f})."
             .format(peak["float32"]["gflops"], peak["bfloat16"]["gflops"],
                     max(v for k, v in peak["bfloat16"]["paths"].items() if k != "fp32_kernels")),
             "", "| model | algo | precision | system | s/step | x TRL | CPU s/step | x TRL (CPU) | completions/s "
             "| tokens/s | peak RSS MB | MFU | executed FLOP util |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio, ratio_cpu = r.get("speedup"), r.get("speedup_cpu")
        timed = "" if len(r["step_times"]) == meta["steps"] else f" ({len(r['step_times'])} step)"
        lines.append(f"| {r['model']} ({r['params'] / 1e6:.1f}M) | {r['algo']} | {r['precision']} | {r['system']} | "
                     f"{r['s_per_step']:.2f}{timed} | {'' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{r['cpu_s_per_step']:.2f} | {'' if ratio_cpu is None else f'{ratio_cpu:.2f}x'} | "
                     f"{r['completions_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{100 * r['mfu']:.0f}% | {100 * r['hardware_utilization']:.0f}% |")
    lines += ["", "- x TRL: TRL's s/step divided by rlft's, in the same precision; for bf16 rows, against TRL's "
              "fastest setting on this machine (its fp32 or its CPU default bf16 + gradient checkpointing).",
              "- CPU s/step: the process's CPU seconds per step (median); on a shared machine it leaves out the "
              "time other processes held the core, so its ratio is the steadier one.",
              "- TRL fp32: `bf16=False`, no gradient checkpointing. TRL bf16: its CPU defaults "
              "(`bf16=True`, `gradient_checkpointing=True`). rlft bf16: `run.precision=bf16`.",
              "- MFU: model FLOPs per step (every sequence runs its own prompt: prefill, reference pass, "
              "forward + backward; the same count for every system) / s per step / the dtype's matmul peak.",
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


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    ap.add_argument("--slow-steps", type=int, default=1,
                    help="timed steps (no warm-up) of TRL bf16 on a CPU without bf16 instructions (~10x slower)")
    ap.add_argument("--slow-algos", default="grpo", help="algorithms that get those slow TRL bf16 runs")
    ap.add_argument("--pool", type=int, default=256, help="prompts in the pool")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    import torch
    import transformers

    from rlft.models.bf16_emulation import native_cpu_bf16

    native_bf16 = native_cpu_bf16()
    bf16_models = set(args.bf16_models.split(","))
    models, algos = args.models.split(","), args.algos.split(",")
    precisions, systems = args.precisions.split(","), args.systems.split(",")
    t_start, load_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rlft-throughput-") as tmp:
        work = Path(tmp)
        dirs = prepare(work, models, args.pool)
        peak = measure_peak(args.threads)
        print("matmul peak GFLOP/s:", {k: round(v["gflops"], 1) for k, v in peak.items()}, flush=True)
        results = []
        for model, model_dir in dirs.items():
            plen = prompt_tokens(model_dir, work)
            for algo in algos:
                runs = [(s, p) for p in precisions for s in systems if p == "fp32" or model in bf16_models]
                for system, precision in runs:
                    slow = system == "trl" and precision == "bf16" and not native_bf16
                    if slow and algo not in args.slow_algos.split(","):
                        continue
                    spec = {"system": system, "model": model, "model_dir": model_dir, "algo": algo,
                            "precision": precision, "threads": args.threads, "b": args.prompts, "g": args.group,
                            "t": args.new_tokens, "kl": args.kl, "lr": 1e-5,
                            "steps": args.slow_steps if slow else args.steps, "warmup": 0 if slow else args.warmup,
                            "work": str(work), "key": f"{model}-{algo}-{precision}-{system}"}
                    raw = run_worker("benchmarks.throughput", spec, threads=args.threads, label=spec["key"],
                                     timeout=args.timeout)
                    r = summarize(spec, raw, peak, plen)
                    results.append(r)
                    print(f"{spec['key']}: {r['s_per_step']:.3f} s/step, {r['tokens_per_s']:.0f} tok/s, "
                          f"RSS {r['peak_rss_mb']:.0f} MB, MFU {100 * r['mfu']:.0f}%", flush=True)
    _speedups(results)
    meta = {"command": "python -m benchmarks.throughput " + " ".join(sys.argv[1:]),
            "date": utc_now("%Y-%m-%d %H:%M UTC"), "cpu": _cpu_name(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": _trl_version(),
            "threads": args.threads, "b": args.prompts, "g": args.group, "t": args.new_tokens, "kl": args.kl,
            "steps": args.steps, "warmup": args.warmup, "peak": peak, "note": args.note,
            "native_cpu_bf16": native_bf16, "slow_steps": args.slow_steps,
            "wall_s": time.perf_counter() - t_start, "python": platform.python_version(),
            "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    out = Path(args.out)
    atomic_write(out / "throughput.json", json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    atomic_write(out / "throughput.md", markdown(results, meta))
    print(markdown(results, meta))


def _speedups(results: list[dict]) -> None:
    for r in results:
        if r["system"] != "rlft":
            continue
        trl = [t for t in results if t["system"] == "trl" and t["model"] == r["model"] and t["algo"] == r["algo"]
               and (t["precision"] == r["precision"] or r["precision"] == "bf16")]
        if trl:
            r["speedup"] = min(t["s_per_step"] for t in trl) / r["s_per_step"]
            r["speedup_cpu"] = min(t["cpu_s_per_step"] for t in trl) / r["cpu_s_per_step"]


def _cpu_name() -> str:
    from rlft.training.runtime import cpu_info

    return f"{cpu_info()[0]} ({os.cpu_count()} cores)"


def _trl_version() -> str:
    try:
        import trl

        return trl.__version__
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    main()
