"""``rlft demo``: RL on a real pretrained model, honest before/after numbers and a report.

1. load the policy (SmolLM2-135M-Instruct from the offline model registry, with a LoRA adapter;
   ``--base`` takes the small bundled ``rlft-base`` and its translation task instead) and the task;
2. greedy-decode the whole held-out test split: the "before" numbers;
3. run RL with the default algorithm (settings below; any can be overridden on the command line);
4. greedy-decode the same test rows again: the "after" numbers, KL to the starting model;
5. print the comparison (paired-bootstrap 95% interval of the change; an interval that contains
   0 is reported as no significant change) and example outputs, then the traffic tables: the
   metric by training-count bucket, and a replay of future requests (seen vs new, with an
   exact-match cache baseline; ``rlft.eval.replay``), decoded before and after training;
6. write the report (PNG plots and a self-contained HTML page) into the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlft.eval.result import EvalResult

# The two profiles' settings, with the reasons for them, are YAML files in the package.
PROFILES = Path(__file__).resolve().parent / "assets" / "demo"


def profile_settings(base: bool = False) -> dict[str, Any]:
    """The dotted settings of a demo profile: ``smollm2.yaml`` (the default) or ``base.yaml``."""
    import yaml

    tree = yaml.safe_load((PROFILES / ("base.yaml" if base else "smollm2.yaml")).read_text(encoding="utf-8"))
    return {f"{section}.{key}": value for section, values in tree.items() for key, value in values.items()}


TEST_ROWS = 200  # at most; the summarization test split has 139 rows and is scored whole
QUICK = {"run.steps": 2, "eval.max_examples": 4, "rollout.prompts_per_step": 2, "rollout.group_size": 2,
         "eval.replay": 8}
QUICK_TEST_ROWS = 8


def demo_config(args: list[str], *, quick: bool = False, base: bool = False) -> Any:
    """The demo's Config: the profile's settings (and --quick's) under the user's YAML file and
    overrides ``args``; the task's defaults then fill in what none of them gives (build_parts)."""
    from rlft.config import load_args

    return load_args(args, base={**profile_settings(base), **(QUICK if quick else {})})


def run_demo(args: list[str], *, quick: bool = False, base: bool = False) -> int:
    from rlft.eval.bootstrap import paired_bootstrap
    from rlft.eval.evaluate import evaluate
    from rlft.eval.result import write_eval
    from rlft.models.loading import load_reference
    from rlft.eval.replay import evaluate_replay, replay_for
    from rlft.report import comparison_table, traffic_tables, write_report
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    t0 = time.perf_counter()
    parts = build_parts(demo_config(args, quick=quick, base=base))
    config = parts.config
    run_dir = Path(config.run.output_dir)
    test = parts.splits["test"][: QUICK_TEST_ROWS if quick else TEST_ROWS]
    print(f"rlft demo: {config.data.task} task, model {config.model.name_or_path}, algorithm {config.algo.name}, "
          f"{config.run.steps} steps of {config.rollout.prompts_per_step}x{config.rollout.group_size} samples; "
          f"{len(test)} held-out test rows")

    bar = config.run.progress
    before = evaluate(parts, test, tag="before", split="test", progress=bar)
    write_eval(run_dir, before)
    # Traffic replay (rlft.eval.replay): future requests drawn from the training log's traffic.
    replay = replay_for(parts, config.eval.replay, held_out="test") if config.eval.replay > 0 else None
    replay_before = evaluate_replay(parts, replay, tag="replay-before", progress=bar) if replay else None
    if replay_before:
        write_eval(run_dir, replay_before)
    start = load_reference(parts.policy)  # the policy before training, for the KL of 'after'
    result = train(config, parts)
    # The exact KL needs two extra full-vocabulary passes: one decoding batch of rows is enough for it.
    after = evaluate(parts, test, reference=start, tag="after", step=result.step, split="test", progress=bar,
                     kl_rows=config.eval.batch_size)
    write_eval(run_dir, after)
    replay_after = evaluate_replay(parts, replay, tag="replay-after", step=result.step, progress=bar) if replay else None
    if replay_after:
        write_eval(run_dir, replay_after)

    ci = paired_bootstrap(before.per_example, after.per_example, seed=config.run.seed)
    second = None
    if before.second_per_example:
        second = paired_bootstrap(before.second_per_example, after.second_per_example, seed=config.run.seed)
    print()
    print(comparison_table(before, after, bootstrap=ci, second_bootstrap=second))
    print()
    print(traffic_tables(before, after, replay_before, replay_after, seed=config.run.seed))
    report = write_report(run_dir, seed=config.run.seed)
    seconds = time.perf_counter() - t0
    _write_figures(run_dir, config, before, after, ci, second, seconds)
    print(f"\nreport: {report}\nmodel: {result.final_dir}\ntook {seconds:.0f} s")
    return 0


def _write_figures(run_dir: Path, config: Any, before: EvalResult, after: EvalResult, ci: Any, second: Any,
                   seconds: float) -> None:
    """``demo.json``: the demo's own figures with the machine they came from (BENCHMARKS.md cites it)."""
    import json

    from rlft.atomic import atomic_write
    from rlft.training.runtime import machine_facts

    machine = machine_facts()
    machine["load_average_at_end"] = machine.pop("load_average")
    figures = {
        "command": "rlft demo", "model": config.model.name_or_path, "task": config.data.task,
        "lora_r": config.lora.r, "precision": config.run.precision, "steps": config.run.steps,
        "prompts_per_step": config.rollout.prompts_per_step, "group_size": config.rollout.group_size,
        "seed": config.run.seed, "test_rows": before.n, "metric_name": before.metric_name,
        "before": ci.mean_before, "after": ci.mean_after, "delta": ci.delta, "ci": [ci.low, ci.high],
        "significant": ci.significant, "second_metric_name": before.second_metric_name,
        "second_delta": second.delta if second else None, "second_ci": [second.low, second.high] if second else None,
        "kl_after": after.kl, "kl_rows": after.kl_n, "length": [before.length, after.length],
        "truncation_rate": [before.truncation_rate, after.truncation_rate],
        "copy_rate": [before.monitors.get("copy_rate"), after.monitors.get("copy_rate")],
        "length_ratio": [before.monitors.get("length_ratio"), after.monitors.get("length_ratio")],
        "seconds": seconds, "machine": machine,
    }
    atomic_write(run_dir / "demo.json", json.dumps(figures, indent=2) + "\n")
