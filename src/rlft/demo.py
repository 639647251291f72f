"""``rlft demo``: RL on the bundled translation task, honest before/after numbers and a report.

1. load the bundled base model and the translation task (en->zh software messages);
2. greedy-decode held-out test rows: the "before" numbers;
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
from typing import Any

# The embedded defaults: sized to finish in a few minutes on 2 CPU cores.
DEMO_SETTINGS: dict[str, Any] = {
    "data.task": "translation",
    "model.name_or_path": "rlft-base",
    "run.output_dir": "runs/demo",
    "run.steps": 60,
    "run.eval_every": 0,
    "run.save_every": 0,
    "run.threads": 2,
    "rollout.prompts_per_step": 8,
    "rollout.group_size": 4,
    "rollout.temperature": 0.7,
    # The translation setting with the best validation chrF among the four that
    # benchmarks/learning.py tried on rlft-base (BENCHMARKS.md, "Learning"): RLOO, lr 5e-5, KL 0.05,
    # and a reward with a length term (chrF alone, which favours recall, drew longer, worse outputs).
    "optim.lr": 5e-5,
    "algo.kl_coef": 0.05,
    "reward.spec": "0.7*chrf + 0.15*placeholders + 0.15*length_penalty",
    # Traffic-weighted sampling: alpha 1 with a 10% floor had the better traffic-weighted validation
    # chrF than uniform sampling in benchmarks/frequency.py (BENCHMARKS.md, "High-frequency").
    "frequency.alpha": 1.0,
    "frequency.floor": 0.1,
    "eval.max_examples": 32,
    "eval.batch_size": 32,
}
TEST_ROWS = 200
QUICK = {"run.steps": 2, "eval.max_examples": 4, "rollout.prompts_per_step": 2, "rollout.group_size": 2}
QUICK_TEST_ROWS = 8


def run_demo(args: list[str], *, quick: bool = False) -> int:
    from rlft.config import load_config
    from rlft.eval.bootstrap import paired_bootstrap
    from rlft.eval.evaluate import evaluate, write_eval
    from rlft.models.loading import load_reference
    from rlft.eval.replay import evaluate_replay, replay_for
    from rlft.report import comparison_table, traffic_tables, write_report
    from rlft.training.loop import train
    from rlft.training.setup import build_parts

    t0 = time.perf_counter()
    settings = {**DEMO_SETTINGS, **(QUICK if quick else {})}
    path = args[0] if args and "=" not in args[0] else None
    user = args[1:] if path else args
    config = load_config(path, [f"{k}={v}" for k, v in settings.items()] + list(user))
    parts = build_parts(config)
    config = parts.config
    run_dir = Path(config.run.output_dir)
    test = parts.splits["test"][: QUICK_TEST_ROWS if quick else TEST_ROWS]
    print(f"rlft demo: {config.data.task} task, model {config.model.name_or_path}, algorithm {config.algo.name}, "
          f"{config.run.steps} steps of {config.rollout.prompts_per_step}x{config.rollout.group_size} samples; "
          f"{len(test)} held-out test rows")

    before = evaluate(parts, test, tag="before", split="test")
    write_eval(run_dir, before)
    # Traffic replay (rlft.eval.replay): future requests drawn from the training log's traffic.
    replay = replay_for(parts, len(test), held_out="test")
    replay_before = evaluate_replay(parts, replay, tag="replay-before")
    write_eval(run_dir, replay_before)
    start = load_reference(parts.policy)  # the policy before training, for the KL of 'after'
    result = train(config, parts)
    after = evaluate(parts, test, reference=start, tag="after", step=result.step, split="test")
    write_eval(run_dir, after)
    replay_after = evaluate_replay(parts, replay, tag="replay-after", step=result.step)
    write_eval(run_dir, replay_after)

    ci = paired_bootstrap(before["per_example"], after["per_example"], seed=config.run.seed)
    second = None
    if before.get("second_per_example"):
        second = paired_bootstrap(before["second_per_example"], after["second_per_example"], seed=config.run.seed)
    print()
    print(comparison_table(before, after, bootstrap=ci, second_bootstrap=second))
    print()
    print(traffic_tables(before, after, replay_before, replay_after, seed=config.run.seed))
    report = write_report(run_dir, seed=config.run.seed)
    print(f"\nreport: {report}\nmodel: {result.final_dir}\ntook {time.perf_counter() - t0:.0f} s")
    return 0
