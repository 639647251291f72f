"""rlft's benchmarks: scripts with recorded results, not tests (each takes minutes to hours on a CPU).

Run each from the repository root as a module, ``python -m benchmarks.<name> [args]`` (learning,
frequency, throughput, lora_memory, demo_selection); their results go to ``benchmarks/results/``
and BENCHMARKS.md cites them. They drive rlft through its library calls; ``benchmarks.common``
holds what the learning and frequency benchmarks share, ``benchmarks.protocol`` the evaluation
protocol, ``benchmarks.worker`` the one-process-per-measurement runner. Importing any of them
starts no work.
"""
