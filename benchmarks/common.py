"""Shared helpers of the benchmarks, mostly of the learning and frequency ones: configs, SFT with
patience, RL runs, cached evaluations, paired comparisons and incremental result files.

Only rlft's public API is used: ``rlft.config.load_config`` with dotted settings as its base,
``rlft.training.sft.sft``, ``rlft.training.loop.train``, ``rlft.training.setup.build_parts``,
``rlft.eval.evaluate.evaluate`` and ``rlft.eval.bootstrap.paired_bootstrap``; files are written
by ``rlft.atomic.atomic_write`` through ``rlft.rundir.jsonable`` and run metrics read by
``rlft.rundir.read_metrics``. The benchmarks are scripts, not tests: they take minutes per task on a CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from rlft.atomic import atomic_write
from rlft.rundir import jsonable, read_metrics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUMMARY_KEYS = ("n", "metric_name", "metric", "corpus_metric", "second_metric_name", "second_metric", "reward",
                "length", "truncation_rate", "traffic_weighted", "unweighted")


def utc_now(fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    """The time now in UTC, as the results files write it (throughput's omit the seconds)."""
    return datetime.now(timezone.utc).strftime(fmt)


def log(msg: str) -> None:
    print(f"[{datetime.now(timezone.utc).strftime('%H:%M:%S')}] {msg}", flush=True)


def settings_of(items: list[str]) -> dict[str, Any]:
    """['data.template=chat', 'lora.r=16'] -> {'data.template': 'chat', 'lora.r': '16'}."""
    return dict(item.split("=", 1) for item in items)


def make_config(task: str, model: str, out_dir: str | Path, settings: dict[str, Any], *, threads: int,
                precision: str, seed: int) -> Any:
    """A Config for one run of a bundled task: the benchmark's settings (``settings``, dotted keys,
    over the common ones below); the task's defaults fill in the rest when the run is built."""
    from rlft.config import load_config

    common = {"data.task": task, "model.name_or_path": model, "run.output_dir": str(out_dir),
              "run.threads": threads, "run.precision": precision, "run.seed": seed, "run.progress": False,
              "run.tensorboard": False, "eval.show_samples": 0, "eval.batch_size": 32}
    return load_config(None, base={**common, **settings})


def build(config: Any) -> Any:
    from rlft.training.setup import build_parts

    return build_parts(config)


# ---------------------------------------------------------------------------------------------
# Evaluation, cached on disk so that two benchmarks (or a rerun) never decode the same model twice

def fingerprint(model: str) -> str:
    """The model path and the modification time of its weights (a retrained run is a new model)."""
    from rlft.models.loading import BUNDLED_DIR, BUNDLED_NAME

    path = BUNDLED_DIR if model == BUNDLED_NAME else Path(model)
    weights = [f for f in path.iterdir() if f.suffix in (".safetensors", ".bin")] if path.is_dir() else []
    if weights:  # not every file: a model card edited later must not invalidate the evaluations
        return f"{model}@{max(f.stat().st_mtime for f in weights):.3f}"
    return model


def cached_result(cache: Path, ids: list[str], model: str, label: str,
                  compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """(``compute()``, True), stored at ``cache`` with its wall time and the model's fingerprint; or
    (the stored result, False) when ``cache`` holds one of the same model on the same example ids."""
    key = fingerprint(model)
    if cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("ids") == ids and stored.get("model") == key:
            log(f"{label}: cached ({cache})")
            return stored, False
    t0 = time.perf_counter()
    result = compute()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["model"] = key
    write_json(cache, result)
    return result, True


def evaluate_cached(parts: Any, examples: list, *, cache: Path, tag: str, split: str,
                    model: str = "") -> dict[str, Any]:
    """``rlft.eval.evaluate.evaluate`` on ``examples``; the full result (per-example scores included)
    is stored at ``cache`` and read back on a later call with the same model and example ids."""
    from rlft.eval.evaluate import evaluate

    result, fresh = cached_result(cache, [ex.id for ex in examples], model, f"eval {tag}",
                                  lambda: evaluate(parts, examples, tag=tag, split=split))
    if fresh:
        log(f"eval {tag} on {len(examples)} {split} rows: {result['metric_name']} {result['metric']:.2f}, "
            f"{result['second_metric_name']} {result['second_metric']:.2f}, length {result['length']:.1f}, "
            f"truncated {result['truncation_rate']:.3f} ({result['wall_s']} s)")
    return result


def summary(ev: dict[str, Any]) -> dict[str, Any]:
    """The scalar part of an eval result (what the results files keep)."""
    out = {k: ev[k] for k in SUMMARY_KEYS if k in ev}
    if "wall_s" in ev:
        out["eval_wall_s"] = ev["wall_s"]
    return out


def compare(before: dict[str, Any], after: dict[str, Any], *, seed: int) -> dict[str, Any]:
    """Paired-bootstrap 95% CIs of after - before: the task metric and the second metric."""
    from rlft.eval.bootstrap import paired_bootstrap

    assert before["ids"] == after["ids"], "comparisons must score the same examples"
    out = {}
    for key, field in (("metric", "per_example"), ("second_metric", "second_per_example")):
        if before.get(field) and after.get(field):
            out[key] = ci_record(paired_bootstrap(before[field], after[field], seed=seed))
    return out


def ci_record(ci: Any) -> dict[str, Any]:
    """What a results file keeps of an ``rlft.eval.bootstrap.BootstrapResult``."""
    return {"before": ci.mean_before, "after": ci.mean_after, "delta": ci.delta, "low": ci.low, "high": ci.high,
            "significant": ci.significant, "n": ci.n}


# ---------------------------------------------------------------------------------------------
# SFT until the validation metric stops improving

def sft_with_patience(task: str, model: str, out_dir: Path, *, base_val: float | None, val_n: int,
                      eval_every: int, patience: int, max_steps: int, max_minutes: float, lr: float, batch_size: int,
                      threads: int, precision: str, seed: int, model_settings: dict[str, Any] | None = None,
                      base_competes: bool = True) -> dict[str, Any]:
    """Supervised fine-tuning from ``model`` in chunks of ``eval_every`` steps (``run.resume``
    continues the same optimizer and data order), stopping after ``patience`` evaluations without
    a new best validation metric, at ``max_steps`` or after ``max_minutes``.

    The base model counts as step 0 with ``base_val``: when no SFT checkpoint beats it, the
    "SFT" model is the base model itself. With ``base_competes=False`` (the protocol's SFT candidates,
    compared with the base model by ``protocol.select`` instead) the best SFT checkpoint is kept even
    when the base model was better. Returns the summary, also written to out_dir/summary.json,
    and reused as is when that file exists (so both benchmarks share one SFT per task).

    The training is rlft's own ``rlft.training.sft.sft``, resumed chunk by chunk; only the stopping
    rule is counted here, not by its ``sft.patience``, which has neither the base model as step 0
    nor a wall-clock cap (checked between chunks), so that recorded commands still stop where they did.
    """
    from rlft.training.sft import sft

    done = out_dir / "summary.json"
    if done.is_file():
        log(f"sft {task}: reusing {done}")
        return json.loads(done.read_text(encoding="utf-8"))
    settings = {**(model_settings or {}), "optim.lr": lr, "sft.batch_size": batch_size, "sft.epochs": 1000,
                "run.eval_every": eval_every, "run.save_every": eval_every, "run.keep_checkpoints": 1, "run.resume": True,
                "eval.max_examples": val_n, "optim.schedule": "constant"}
    curve = [{"step": 0, "metric": base_val}] if base_competes else []
    best_step, best_val, since_best = 0, base_val if base_competes else -math.inf, 0
    t0 = time.perf_counter()
    parts = None
    stop = "max_steps"
    step = 0
    while step < max_steps:
        step = min(step + eval_every, max_steps)
        config = make_config(task, model, out_dir, {**settings, "run.steps": step}, threads=threads,
                             precision=precision, seed=seed)
        parts = parts or build(config)
        parts.config = _with_steps(parts.config, step)
        result = sft(parts.config, parts)
        for ev in result.evals:
            curve.append({"step": ev["step"], "metric": ev["metric"], "second_metric": ev["second_metric"]})
            if ev["metric"] > best_val:
                best_step, best_val, since_best = ev["step"], ev["metric"], 0
            else:
                since_best += 1
        log(f"sft {task}: step {step}, validation {curve[-1]['metric']:.2f} (best {best_val:.2f} at step "
            f"{best_step}), {time.perf_counter() - t0:.0f} s")
        if since_best >= patience:
            stop = f"patience ({patience} evaluations without improvement)"
            break
        if (time.perf_counter() - t0) / 60 >= max_minutes:
            stop = f"time limit ({max_minutes} min)"
            break
    best_dir = str(out_dir / "best") if best_step > 0 else model
    out = {"task": task, "start_model": model, "best_dir": best_dir, "best_step": best_step,
           "best_val": best_val, "base_val": base_val, "steps_run": step, "stopped_by": stop, "curve": curve,
           "lr": lr, "batch_size": batch_size, "eval_every": eval_every, "patience": patience,
           "val_n": val_n, "wall_s": round(time.perf_counter() - t0, 1)}
    write_json(done, out)
    return out


def task_scope(task: str, args: Any, default_test_rows: dict[str, int]) -> Any:
    """What both benchmarks derive per task from their shared arguments: the run directory, the
    evaluation cache, the run keywords, the test-row count and the validation/test row selectors."""
    from types import SimpleNamespace

    test_n = args.test_rows if args.test_rows is not None else default_test_rows[task]
    return SimpleNamespace(
        work=Path(args.work), evals=Path(args.work) / "evals" / task, test_n=test_n,
        kw={"threads": args.threads, "precision": args.precision, "seed": args.seed},
        val_rows=lambda splits: splits["validation"][: args.val_rows],
        test_rows=lambda splits: splits["test"][: test_n or None])


def sft_start(task: str, args: Any, scope: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The start both benchmarks share (the same run directory): the base model's validation
    evaluation, then SFT from it until validation stops improving."""
    base_val = eval_model(task, args.model, scope.val_rows, cache=scope.evals / f"base-val{args.val_rows}.json",
                          tag="base-val", split="validation", **scope.kw)
    sft_info = sft_with_patience(task, args.model, scope.work / "sft" / task, base_val=base_val["metric"],
                                 val_n=args.val_rows, eval_every=args.sft_eval_every, patience=args.patience,
                                 max_steps=args.sft_max_steps, max_minutes=args.sft_minutes, lr=args.sft_lr,
                                 batch_size=args.sft_batch, **scope.kw)
    return base_val, sft_info


def _with_steps(config: Any, steps: int) -> Any:
    from rlft.config import with_overrides

    return with_overrides(config, run={"steps": steps})


# ---------------------------------------------------------------------------------------------
# RL runs

def rl_settings(candidate: dict[str, Any], *, steps: int, prompts: int, group: int) -> dict[str, Any]:
    """Dotted RL settings of one candidate at a fixed compute budget (steps x prompts x G)."""
    return {"algo.name": candidate["algo"], "optim.lr": candidate["lr"], "rollout.temperature": candidate["temperature"],
            "algo.kl_coef": candidate.get("kl_coef", 0.0), "frequency.alpha": candidate.get("alpha", 0.0),
            "frequency.floor": candidate.get("floor", 0.0), "run.steps": steps,
            "rollout.prompts_per_step": prompts, "rollout.group_size": group, "run.eval_every": 0,
            "run.save_every": 0, "eval.max_examples": 0, "run.keep_checkpoints": 1,
            **({"reward.spec": candidate["reward"]} if candidate.get("reward") else {})}


def rl_run(task: str, start_model: str, out_dir: Path, candidate: dict[str, Any], *, steps: int, prompts: int,
           group: int, threads: int, precision: str, seed: int,
           model_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One RL run from ``start_model``; reused when out_dir/summary.json exists. The policy is
    exported to out_dir/final; the summary holds the training curve's first and last rewards.
    ``model_settings`` (dotted, e.g. data.template=chat, lora.r=16) go under the candidate's."""
    from rlft.training.loop import train

    done = out_dir / "summary.json"
    if done.is_file():
        log(f"rl {task} {out_dir.name}: reusing {done}")
        return json.loads(done.read_text(encoding="utf-8"))
    config = make_config(task, start_model, out_dir,
                         {**(model_settings or {}), **rl_settings(candidate, steps=steps, prompts=prompts, group=group)},
                         threads=threads, precision=precision, seed=seed)
    t0 = time.perf_counter()
    parts = build(config)
    result = train(parts.config, parts)
    wall = time.perf_counter() - t0
    train_rows = [r for r in read_metrics(out_dir, split="train") if "reward" in r]
    rewards = [r["reward"] for r in train_rows]
    greedy = [r["greedy_reward"] for r in train_rows if "greedy_reward" in r]
    k = max(1, len(rewards) // 5)
    out = {"task": task, "start_model": start_model, "model_settings": model_settings or {},
           "final_dir": str(result.final_dir), "candidate": candidate,
           "steps": steps, "prompts_per_step": prompts, "group_size": group,
           "completions": steps * prompts * group, "skipped_steps": result.skipped_steps,
           "reward_first": mean(rewards[:k]), "reward_last": mean(rewards[-k:]),
           "greedy_reward_first": mean(greedy[:k]), "greedy_reward_last": mean(greedy[-k:]),
           "step_time_mean": mean([r["step_time"] for r in train_rows]), "wall_s": round(wall, 1),
           "settings": rl_settings(candidate, steps=steps, prompts=prompts, group=group)}
    write_json(done, out)
    log(f"rl {task} {out_dir.name}: {steps} steps in {wall:.0f} s, train reward {out['reward_first']:.3f} -> "
        f"{out['reward_last']:.3f}")
    return out


def eval_model(task: str, model_dir: str, examples_of: Any, *, cache: Path, tag: str, split: str, threads: int,
               precision: str, seed: int, eval_settings: dict[str, Any] | None = None,
               cache_key: str | None = None) -> dict[str, Any]:
    """Evaluate a saved model on ``examples_of(parts)`` (a function of the loaded splits).
    ``cache_key``: the directory whose weights identify the model, when it is not ``model_dir``
    (a LoRA adapter loaded on the base model through ``eval_settings``)."""
    from rlft.training.setup import prepare_parts

    config = make_config(task, model_dir, cache.parent, {"eval.max_examples": 0, **(eval_settings or {})},
                         threads=threads, precision=precision, seed=seed)
    parts = prepare_parts(config)  # build_parts, then lora.* when the settings have them
    return evaluate_cached(parts, examples_of(parts.splits), cache=cache, tag=tag, split=split,
                           model=cache_key or model_dir)


# ---------------------------------------------------------------------------------------------
# Files

def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, written atomically; values JSON has no type for become
    their ``str()``, and NaN stays NaN (as the results files have always written it)."""
    atomic_write(path, json.dumps(jsonable(obj, str, allow_nan=True), ensure_ascii=False, indent=1))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock next to ``path``, so that two benchmark processes can update one file."""
    import tempfile

    # The lock file lives in the temp directory, not next to the results that get committed.
    lock = Path(tempfile.gettempdir()) / f"rlft-bench-{path.name}.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_results(path: Path, task: str, entry: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Merge one task's entry into ``path`` (JSON with 'meta' and 'tasks'); returns the whole file."""
    with locked(path):
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"meta": {}, "tasks": {}}
        data["meta"].update(meta)
        data["tasks"][task] = entry
        write_json(path, data)
    return data


def mean(xs: list[float | None]) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    xs = [x for x in xs if x is not None]
    return float(sum(xs) / len(xs)) if xs else None


def fmt_ci(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    mark = " *" if c["significant"] else ""
    return f"{c['delta']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]{mark}"


def num(x: Any, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"
