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

The modules, by concern: ``inputs`` (the prompt pool and the models every system loads),
``rlft_side`` and ``trl_side`` (one run of each system, in its worker process), ``flops`` (model
FLOPs of a step, the machine's matmul peak, each run's rates and MFU), ``report`` (the speedups,
the markdown table and the results files) and ``__main__`` (the command line and the order of the
runs).
"""
