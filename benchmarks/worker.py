"""One measurement per process: ``run_worker`` runs ``python -m <module> --worker SPEC`` and reads
back the JSON line the worker prints, so that each measurement's peak RSS (``peak_rss_mb``) is its
own and one run's allocations cannot leak into the next. Used by throughput and lora_memory.

The child inherits the working directory: run the benchmark from the repository root
(``python -m benchmarks.<name>``) and the child finds the ``benchmarks`` package there too.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(module: str, spec: dict[str, Any], *, threads: int, label: str, timeout: float,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m module --worker <spec as JSON>`` with ``threads`` BLAS/OpenMP threads, offline and
    quiet; returns the last JSON object the child printed, or raises with the end of its stderr.
    ``env``: more environment variables for the child (e.g. PYTHONPATH of another source tree)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", module, "--worker", json.dumps(spec)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])
