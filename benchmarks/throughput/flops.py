"""FLOP accounting: the model FLOPs of one step (the same count for every system), the FLOPs rlft
actually executes, this machine's matmul peak, and each run's rates and MFU from them."""

from __future__ import annotations

import statistics
import time


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
               shared_prompts: bool = False, lora: bool = False) -> float:
    """FLOPs of one step: forward is 2 per matmul parameter per token plus 4*width per attended
    (query, key) pair per layer, backward twice the forward (``lora``: once, the input gradients
    only, as the frozen weights get none; the rank-16 adapters' own FLOPs are left out, under 2%);
    the LM head only where logits are used.

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
    return prefill + decode + (scored if kl else 0.0) + (2 if lora else 3) * scored


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


def summarize(spec: dict, raw: dict, peak: dict, prompt_len: float) -> dict:
    warm = spec["warmup"]
    times, lengths = raw["step_times"][warm:], raw["lengths"][warm:]
    n = spec["b"] * spec["g"]
    step = statistics.median(times)
    mean_len = statistics.mean(lengths) if lengths else float(spec["t"])
    lora = spec.get("tuning") == "lora"
    flops = step_flops(raw["shape"], spec["b"], spec["g"], prompt_len, mean_len, spec["kl"] > 0, lora=lora)
    executed = step_flops(raw["shape"], spec["b"], spec["g"], prompt_len, mean_len, spec["kl"] > 0,
                          shared_prompts=spec["system"] == "rlft", lora=lora)
    dtype = "bfloat16" if spec["precision"] == "bf16" else "float32"
    out = {k: spec[k] for k in ("system", "model", "algo", "precision", "threads", "b", "g", "t", "kl")}
    out["tuning"] = spec.get("tuning", "full")
    cpu = [c for c in raw["cpu_times"][warm:] if c == c] or [float("nan")]
    out.update(s_per_step=step, steps_per_s=1 / step, step_times=times, completions_per_s=n / step,
               cpu_s_per_step=statistics.median(cpu), cpu_times=cpu,
               tokens_per_s=n * mean_len / step, mean_completion_len=mean_len, prompt_len=prompt_len,
               peak_rss_mb=raw["peak_rss_mb"], peak_rss_steps_mb=raw.get("peak_rss_steps_mb", raw["peak_rss_mb"]),
               model_tflop_per_step=flops / 1e12,
               achieved_gflops=flops / step / 1e9, mfu=flops / step / 1e9 / peak[dtype]["gflops"],
               executed_tflop_per_step=executed / 1e12,
               hardware_utilization=executed / step / 1e9 / peak[dtype]["gflops"],
               params=raw["shape"]["params"])
    if raw.get("gen_times"):
        out["gen_s_per_step"] = statistics.median(raw["gen_times"][warm:])
    return out
