"""Process-level setup for a run: device, precision, seeds, threads.

Everything here is single-process; the training loops call it once at start-up.
"""

from __future__ import annotations

import contextlib
import functools
import random
from pathlib import Path
from typing import ContextManager

import torch

from rlft.atomic import atomic_write
from rlft.config import check_choice
from rlft.errors import RlftError


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> cuda when available, else cpu; ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'``.

    A device that does not exist on this machine is a user error, reported before any model loads.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RlftError(f"config: run.device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RlftError(f"config: run.device={name!r} but CUDA is not available on this machine "
                            "(use run.device=cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RlftError(f"config: run.device={name!r} but only {torch.cuda.device_count()} "
                            "CUDA device(s) are visible")
        return device
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RlftError(f"config: run.device={name!r} but MPS is not available on this machine")
        return device
    raise RlftError(f"config: run.device: unsupported device type {device.type!r} (use auto, cpu, cuda or cuda:N)")


def _native_bf16(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    # Recent torch reports True on pre-Ampere GPUs through (slow) emulation; 'auto' wants native only.
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation and never counted emulation
        return torch.cuda.is_bf16_supported()


def resolved_precision(device: torch.device, precision: str) -> str:
    """``'bf16'`` or ``'fp32'``: what ``precision`` (``auto``/``fp32``/``bf16``) means on ``device``."""
    check_choice("run.precision", precision)
    if precision == "auto":
        if device.type == "cpu":
            return _auto_cpu_precision(torch.get_num_threads())
        return "bf16" if _native_bf16(device) else "fp32"
    return precision


# ---------------------------------------------------------------------------------------------
# run.precision=auto on a CPU: measured, because CPUs differ 60x in bf16 speed relative to fp32.
# With AVX512-BF16/AMX a bf16 matmul is ~2x fp32; without, PyTorch's bf16 fallback is ~30x slower.

BF16_MARGIN = 1.2  # bf16 rounds every matmul; take it only where it is clearly faster
CPU_PRECISION_FILE = "cpu_precision.json"


def choose_cpu_precision(fp32_s: float, bf16_s: float, margin: float = BF16_MARGIN) -> str:
    """``'bf16'`` (autocast, fp32 master weights) where a bf16 matmul takes ``margin`` times less
    time than fp32, else ``'fp32'``."""
    return "bf16" if bf16_s > 0 and fp32_s / bf16_s > margin else "fp32"


def time_matmul(dtype: torch.dtype, n: int = 512, repeats: int = 5) -> float:
    """Seconds for one (n, n) @ (n, n) matmul in ``dtype``: the best of ``repeats`` after a warm-up."""
    import time

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    a @ b  # first call builds the kernel (oneDNN primitive)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags (``avx512_bf16``, ``amx_bf16``, ...) from
    /proc/cpuinfo; elsewhere the platform's processor name and no flags."""
    import platform

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    return name, frozenset(fields.get("flags", "").split())


def machine_facts() -> dict[str, object]:
    """What a timing or a results file records about the machine: the CPU, its core count, whether it
    has bf16 matrix instructions, and the 1/5/15-minute load averages now."""
    import os

    cpu, flags = cpu_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def machine_key() -> str:
    """What the bf16/fp32 speed ratio depends on: CPU model, torch version, thread count."""
    return f"{cpu_info()[0]} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cpu_matmul_timings(measure=time_matmul, path: Path | None = None) -> dict[str, float]:
    """``{'fp32_s', 'bf16_s'}`` for this machine: measured once, then read from
    ``rlft.cache.cache_dir()/cpu_precision.json`` (keyed by :func:`machine_key`)."""
    import json

    from rlft.cache import cache_dir

    path = path or cache_dir() / CPU_PRECISION_FILE
    key = machine_key()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), dict) and {"fp32_s", "bf16_s"} <= set(cached[key]):
        return cached[key]
    cached = cached if isinstance(cached, dict) else {}
    cached[key] = {"fp32_s": measure(torch.float32), "bf16_s": measure(torch.bfloat16)}
    try:
        atomic_write(path, json.dumps(cached, indent=1) + "\n")
    except OSError:  # a read-only home: measure again next time
        pass
    return cached[key]


@functools.lru_cache(maxsize=None)
def _auto_cpu_precision(threads: int) -> str:
    """The measured choice, printed once per process (and per thread count)."""
    import sys

    t = cpu_matmul_timings()
    choice = choose_cpu_precision(t["fp32_s"], t["bf16_s"])
    speed = t["fp32_s"] / t["bf16_s"] if t["bf16_s"] > 0 else float("nan")
    print(f"run.precision=auto: {choice} on this CPU (a bf16 matmul runs at {speed:.2f}x fp32 speed, "
          f"{threads} threads; bf16 autocast needs > {BF16_MARGIN}x)", file=sys.stderr)
    return choice


def autocast_context(device: torch.device, precision: str) -> ContextManager:
    """A fresh context manager for forward passes: bf16 autocast (weights stay fp32) or a no-op.

    On CPUs without bf16 matmul instructions the bf16 matmuls run on fp32 kernels with bf16
    rounding (``rlft.models.bf16_emulation.autocast``): same numbers, 10-30x faster than PyTorch's fallback.
    """
    from rlft.models.bf16_emulation import autocast

    return autocast(device.type, torch.bfloat16 if resolved_precision(device, precision) == "bf16" else None)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    import numpy as np

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seeding only takes 32-bit values
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily when CUDA is not initialised yet)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def release_freed_memory(threshold: int = 1 << 20) -> bool:
    """glibc only: serve blocks of ``threshold`` bytes or more from mmap, so that freeing one gives
    its pages back to the system. glibc's default threshold starts at 128 KiB and rises to the size
    of each mmapped block freed (up to 32 MiB): after the first training step the activations come
    from the heap, whose freed holes stay resident, and the resident set keeps the step's high-water
    mark plus fragmentation. A fixed threshold turns that adjustment off (glibc's mallopt(3)).
    Returns whether it took effect (False off Linux, or without glibc's ``mallopt``, e.g. musl)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3  # <malloc.h>
    return bool(mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(threshold)))


def set_threads(n: int | None) -> None:
    """Set torch's CPU intra-op threads; ``None`` keeps torch's default."""
    if n is None:
        return
    if int(n) < 1:
        raise RlftError(f"config: run.threads must be >= 1, got {n!r}")
    torch.set_num_threads(int(n))
    # The inter-op pool can be sized only before its first use; after that torch raises, and the
    # intra-op setting above is the one that matters for a single training process anyway.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(int(n))

