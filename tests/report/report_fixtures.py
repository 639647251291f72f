"""Synthetic run outputs in the format the training loop writes (metrics.jsonl, eval/<tag>.json)."""

import json
import math

from rlft.eval.result import EvalResult

N = 12
BUCKETS = ["head"] * 3 + ["torso"] * 4 + ["tail"] * 5
COUNTS = [100.0, 80.0, 50.0, 10.0, 8.0, 6.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0]
SHIFT = {"head": 10.0, "torso": 0.0, "tail": -4.0}  # exact per-bucket changes


def _eval(tag, step, per_example, outputs, second=None):
    return EvalResult.from_dict({
        "tag": tag, "step": step, "split": "validation", "metric_name": "chrf",
        "metric": sum(per_example) / len(per_example), "per_example": per_example,
        "ids": [f"ex{i}" for i in range(N)], "counts": list(COUNTS), "buckets": list(BUCKETS),
        "second_metric_name": "bleu", "second_metric": sum(second) / len(second) if second else None,
        "second_per_example": second, "reward": 0.25 if tag == "before" else 0.5,
        "kl": None if tag == "before" else 0.0123, "length": 20.0 if tag == "before" else 18.5,
        "truncation_rate": 0.25 if tag == "before" else 0.0,
        "samples": [{"id": f"ex{i}", "prompt": f"<script>alert({i})</script> translate this " + "word " * 40,
                     "reference": f"reference {i} & more", "output": outputs[i]} for i in range(5)],
    })


def make_evals():
    before = [float(10 + 3 * i) for i in range(N)]
    after = [b + SHIFT[k] for b, k in zip(before, BUCKETS)]
    second_b = [float(5 + i) for i in range(N)]
    second_a = [s + 1.0 for s in second_b]
    return (_eval("before", 0, before, [f"old output {i}" for i in range(N)], second_b),
            _eval("after", 40, after, [f"new output {i} <b>bold</b>" for i in range(N)], second_a))


def write_run(tmp_path, before=None, after=None, *, train_steps=30, torn_last_line=True):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    lines = []
    for step in range(1, train_steps + 1):
        lines.append({"step": step, "split": "train", "time": float(step), "reward": 0.2 + 0.01 * step,
                      "kl": 0.001 * step if step != 5 else None, "loss": 0.1, "lr": 1e-5})
        if step % 10 == 0:
            lines.append({"step": step, "split": "validation", "time": float(step), "metric": 30.0 + step / 10,
                          "traffic_weighted": 35.0 + step / 10, "head": 40.0, "torso": 30.0, "tail": math.nan})
    text = "".join(json.dumps(x) + "\n" for x in lines)
    if torn_last_line:
        text += '{"step": 31, "split": "tra'  # a write in progress
    (run / "metrics.jsonl").write_text(text)
    for data in (before, after):
        if data is not None:
            (run / "eval" / f"{data['tag']}.json").write_text(json.dumps(data))
    return run
