"""rlft's side: one run of ``rlft.train`` (what ``rlft.train(config)`` is) on the shared inputs, in
the worker process, timed from the metrics it logs."""

from __future__ import annotations

import time
from pathlib import Path


def worker_rlft(spec: dict) -> dict:
    """Train ``spec`` with rlft; step, generation and CPU times and completion lengths per step."""
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
    if spec.get("tuning") == "lora":  # the same adapter as TRL's peft_config (trl_side)
        flat.update({"lora.r": spec["lora_r"], "lora.alpha": 2.0 * spec["lora_r"], "lora.dropout": 0.0})
    config = load_config(None, base=flat)
    # CPU seconds per step, read when the loop logs each step (the loop itself is untouched): on a
    # shared machine they do not count the time other processes hold the core.
    from rlft.training.metrics import MetricsLogger

    from benchmarks.worker import peak_rss_mb

    cpu_marks, rss_marks, log = [], [], MetricsLogger.log

    def timed_log(self, step, split, metrics):
        if split == "train":
            cpu_marks.append(time.process_time())
            rss_marks.append(peak_rss_mb())   # the peak so far: the steps', before the run's final export
        return log(self, step, split, metrics)

    MetricsLogger.log = timed_log
    t0 = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(result.run_dir, split="train") if "step_time" in r]
    return {"step_times": [r["step_time"] for r in rows], "gen_times": [r["gen_time"] for r in rows],
            "lengths": [r["length"] for r in rows], "wall": wall, "peak_rss_steps_mb": rss_marks[-1],
            # the first step's start is not observable from outside the loop
            "cpu_times": [float("nan")] + [b - a for a, b in zip(cpu_marks, cpu_marks[1:])]}
