"""TRL's side: one run of ``GRPOTrainer`` or ``RLOOTrainer`` on the shared inputs, in the worker
process, timed by a callback; LoRA rows pass a peft ``LoraConfig`` (TRL's peft integration). TRL
is a benchmark-only dependency (``pip install trl==1.16.0``)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def worker_trl(spec: dict) -> dict:
    """Train ``spec`` with TRL; step and CPU times per step and the logged completion lengths."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from rlft.rewards.metrics import chrf_scores

    from benchmarks.worker import peak_rss_mb

    torch.set_num_threads(spec["threads"])
    import trl

    rows = [json.loads(line) for line in (Path(spec["work"]) / "prompts.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "reference": r["reference"]} for r in rows])

    def chrf(prompts, completions, reference, **_):  # rlft's 'chrf' reward: sentence chrF / 100
        return [s / 100 for s in chrf_scores(completions, [[r] for r in reference])]

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self.lengths, self.t0, self.c0 = [], [], [], None, None
            self.rss = float("nan")   # peak RSS (MB) when the last step ended

        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)
            self.rss = peak_rss_mb()

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
                      processing_class=tokenizer, callbacks=[timer], peft_config=_peft_config(spec, model))
    t0 = time.perf_counter()
    trainer.train()
    return {"step_times": timer.times, "cpu_times": timer.cpu, "lengths": timer.lengths,
            "wall": time.perf_counter() - t0, "peak_rss_steps_mb": timer.rss}


def _peft_config(spec: dict, model):
    """TRL's LoRA (its peft integration) for a LoRA row, on the modules rlft's lora.target_modules=auto
    picks, with rlft's rank, alpha and dropout; None for full fine-tuning."""
    if spec.get("tuning") != "lora":
        return None
    from peft import LoraConfig

    from rlft.models.lora import target_modules

    return LoraConfig(r=spec["lora_r"], lora_alpha=2.0 * spec["lora_r"], lora_dropout=0.0,
                      target_modules=target_modules(model, "auto"), task_type="CAUSAL_LM")


def trl_version() -> str:
    """The installed TRL's version, for the results' meta."""
    try:
        import trl

        return trl.__version__
    except ImportError:
        return "not installed"
