"""run.precision=auto on a CPU: the bf16-or-fp32 decision from measured matmul timings, cached per machine."""

from __future__ import annotations

import json

import pytest
import torch

from rlft.training import runtime
from rlft.training.runtime import BF16_MARGIN, choose_cpu_precision, cpu_matmul_timings, machine_key


@pytest.fixture(autouse=True)
def _fresh_choice():
    runtime._auto_cpu_precision.cache_clear()
    yield
    runtime._auto_cpu_precision.cache_clear()


@pytest.mark.parametrize("fp32_s, bf16_s, expected", [
    (1.0, 0.5, "bf16"),     # AVX512-BF16 / AMX: bf16 about twice as fast
    (1.0, 30.0, "fp32"),    # no bf16 kernels: PyTorch's fallback, ~30x slower
    (1.0, 1.0, "fp32"),     # a tie: bf16 would only cost accuracy
    (1.0, 1.0 / BF16_MARGIN, "fp32"),          # exactly the margin is not enough
    (1.0, 1.0 / (BF16_MARGIN * 1.01), "bf16"),  # just over it is
    (1.0, 0.0, "fp32"),     # a broken measurement never picks bf16
])
def test_decision_from_timings(fp32_s, bf16_s, expected):
    assert choose_cpu_precision(fp32_s, bf16_s) == expected


def test_timings_are_measured_once_per_machine_and_reused(tmp_path, monkeypatch):
    calls = []

    def fake(dtype):
        calls.append(dtype)
        return {torch.float32: 0.02, torch.bfloat16: 0.01}[dtype]

    path = tmp_path / "cache" / "cpu_precision.json"
    first = cpu_matmul_timings(fake, path)
    assert first == {"fp32_s": 0.02, "bf16_s": 0.01} and calls == [torch.float32, torch.bfloat16]
    assert json.loads(path.read_text())[machine_key()] == first
    assert cpu_matmul_timings(fake, path) == first and len(calls) == 2  # read back, not measured
    # another thread count is another machine key: measured again, the first entry kept
    monkeypatch.setattr(torch, "get_num_threads", lambda: 977)
    cpu_matmul_timings(fake, path)
    assert len(calls) == 4 and len(json.loads(path.read_text())) == 2


def test_auto_on_cpu_uses_the_cached_timings_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLFT_CACHE_DIR", str(tmp_path))
    (tmp_path / "cpu_precision.json").write_text(json.dumps({machine_key(): {"fp32_s": 1.0, "bf16_s": 0.4}}))
    monkeypatch.setattr(runtime, "time_matmul", lambda dtype: pytest.fail("measured despite the cache"))
    cpu = torch.device("cpu")
    assert runtime.resolved_precision(cpu, "auto") == "bf16"
    assert runtime.resolved_precision(cpu, "auto") == "bf16"
    err = capsys.readouterr().err
    assert err.count("run.precision=auto: bf16") == 1  # printed once
    assert runtime.resolved_precision(cpu, "fp32") == "fp32"  # an explicit setting is never measured


def test_time_matmul_measures_a_finite_positive_time():
    assert 0 < runtime.time_matmul(torch.float32, n=64, repeats=2) < float("inf")


def test_the_run_config_records_the_chosen_precision(tmp_path, monkeypatch, tiny_causal_dir, tiny_dataset):
    from rlft.config import load_config
    from rlft.training.setup import prepare_parts
    from tests.conftest import tiny_overrides

    monkeypatch.setattr(runtime, "cpu_matmul_timings", lambda: {"fp32_s": 1.0, "bf16_s": 0.5})
    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{"run.precision": "auto"}))
    parts = prepare_parts(cfg)
    assert parts.precision == "bf16" and parts.config.run.precision == "bf16"  # saved as config.yaml by the loops
    with parts.autocast():
        assert parts.policy.model.lm_head(torch.ones(1, parts.policy.model.config.hidden_size)).dtype == torch.bfloat16


_FRAGMENTS = """
import sys, torch
from rlft.training.runtime import release_freed_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
if sys.argv[1] == "on":
    assert release_freed_memory()
x = torch.empty(4 << 20, dtype=torch.uint8); x.fill_(1); del x    # glibc raises its threshold to 4 MiB
before = rss()
blocks = [torch.ones(2 << 20, dtype=torch.uint8) for _ in range(100)]  # 200 MiB in 2 MiB blocks
keep = blocks[-1]; del blocks                                        # the last one pins the heap's top
print(rss() - before)
"""


def test_release_freed_memory_gives_freed_blocks_back(tmp_path):
    """run.release_memory (runtime.release_freed_memory): 200 MiB of freed 2 MiB blocks stay resident
    under glibc's default (its threshold rose to 4 MiB when a 4 MiB block was freed), and go back
    to the system with the fixed 1 MiB threshold."""
    import ctypes
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("glibc's mallopt only")
    script = tmp_path / "fragments.py"
    script.write_text(_FRAGMENTS)
    kept = {mode: float(subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("off", "on")}
    assert kept["off"] > 150 and kept["on"] < 20, kept


def test_a_run_releases_freed_memory_when_told_to(monkeypatch, tiny_causal_dir, tiny_dataset, tmp_path):
    from rlft.config import load_config
    from rlft.training.setup import build_parts
    from tests.conftest import tiny_overrides

    calls = []
    monkeypatch.setattr(runtime, "release_freed_memory", lambda: calls.append(1) or True)
    for flag in ("true", "false", None):
        extra = {} if flag is None else {"run.release_memory": flag}
        build_parts(load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / str(flag), **extra)))
    assert calls == [1]  # run.release_memory=true did; false and the default (off) did not
