"""Does a LoRA run's merged export score what its adapter scored? One SFT run, four evaluations.

```
python -m benchmarks.merge_precision --sft-dir runs/bench-dialogue/learning-v2/dialogue/sft/lr0.0003-seed0 \
  --task dialogue --set data.template=chat data.max_prompt_tokens=256 --lora-r 16 --val-rows 60 \
  --out benchmarks/results/merge-precision.json
```

``--sft-dir`` is a run of ``rlft sft`` with LoRA (as ``benchmarks.learning`` leaves under its
``--work``): ``summary.json`` with its in-training validation curve, and ``best/``, the merged model
with the adapter alone in ``best/adapter/``. The first ``--val-rows`` validation rows are scored
(greedy, as the learning benchmark scores them) four ways: the merged model and the base model with
the adapter on top, each under bf16 autocast and in fp32. The adapter under bf16 computes what the
run trained and evaluated (its frozen base rounded to bf16, the adapter's product added beside);
the merged model under bf16 rounds base + delta to bf16 in every matmul, so a delta smaller than
the base weight's bf16 spacing is partly lost. Writes the four results and the run's curve to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import log, make_config, settings_of, utc_now, write_json


def score(task: str, model: str, settings: dict, precision: str, rows: int, adapter: Path | None) -> dict:
    from rlft.eval.evaluate import evaluate
    from rlft.models.lora import load_adapter_weights
    from rlft.training.setup import prepare_parts

    t0 = time.perf_counter()
    config = make_config(task, model, "runs/merge-precision", {**settings, "eval.max_examples": 0},
                         threads=2, precision=precision, seed=0)
    parts = prepare_parts(config)  # applies lora.r and, under bf16, stores the frozen base in bf16
    if adapter is not None:
        load_adapter_weights(parts.policy.adapter, adapter)
    ev = evaluate(parts, parts.splits["validation"][:rows], tag="merge-precision", split="validation")
    keys = ("metric_name", "metric", "second_metric_name", "second_metric", "length", "truncation_rate")
    return {**{k: ev[k] for k in keys}, "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    from rlft.training.runtime import machine_facts

    from benchmarks.throughput.__main__ import cpu_flags

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sft-dir", required=True, type=Path)
    p.add_argument("--task", required=True)
    p.add_argument("--model", default="smollm2-135m", help="the base model the SFT run started from")
    p.add_argument("--set", nargs="*", default=[], help="the run's model settings, without lora.*")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--val-rows", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/merge-precision.json"))
    args = p.parse_args(argv)
    summary = json.loads((args.sft_dir / "summary.json").read_text(encoding="utf-8"))
    best, settings = args.sft_dir / "best", settings_of(args.set)
    at_start = machine_facts()
    rows = {}
    for precision in ("bf16", "fp32"):
        rows[f"merged, {precision}"] = score(args.task, str(best), settings, precision, args.val_rows, None)
        rows[f"base + adapter, {precision}"] = score(args.task, args.model, {**settings, "lora.r": args.lora_r},
                                                    precision, args.val_rows, best / "adapter")
    for name, r in rows.items():
        log(f"{name}: {r['metric_name']} {r['metric']:.2f}, {r['second_metric_name']} {r['second_metric']:.2f}, "
            f"length {r['length']:.1f}, truncated {r['truncation_rate']:.3f}")
    write_json(args.out, {
        "date": utc_now(), "sft_dir": str(args.sft_dir), "task": args.task, "model": args.model,
        "settings": settings, "lora_r": args.lora_r, "val_rows": args.val_rows,
        "in_training_curve": summary["curve"], "best_step": summary["best_step"], "lr": summary["lr"],
        "results": rows,
        "machine": {**at_start, "cpu_flags": cpu_flags(), "load_average_at_end": machine_facts()["load_average"]}})
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
