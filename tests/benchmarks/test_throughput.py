"""The throughput benchmark's guard and records: it refuses a busy machine (or marks the run BUSY),
records the CPU flags, threads and load, and compares LoRA rows with TRL's LoRA rows only."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.throughput import __main__ as cli
from benchmarks.throughput import flops, report


def _args(**kw):
    return argparse.Namespace(**{"max_load": None, "allow_busy": False, **kw})


def test_a_busy_machine_is_refused_or_marked(monkeypatch, capsys):
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    assert cli.max_load(_args()) == 1.5                      # 0.75 per core
    idle = {"cores": 2, "load_average": [1.2, 3.0, 3.0]}   # the 1-minute figure decides
    busy = {"cores": 2, "load_average": [2.4, 1.0, 1.0]}
    assert cli.check_load(idle, _args()) is False
    with pytest.raises(SystemExit, match=r"refusing to measure: the 1-minute load average is 2.40, above 1.50"):
        cli.check_load(busy, _args())
    assert cli.check_load(busy, _args(allow_busy=True)) is True
    assert "marked BUSY" in capsys.readouterr().err
    assert cli.check_load(busy, _args(max_load=3.0)) is False


def _row(system, tuning, s_per_step, **kw):
    return {"system": system, "model": "smollm2-135m", "algo": "grpo", "precision": "fp32", "tuning": tuning,
            "s_per_step": s_per_step, "cpu_s_per_step": s_per_step, "step_times": [s_per_step], "params": 134.5e6,
            "completions_per_s": 1.0, "tokens_per_s": 1.0, "mfu": 0.5,
            "hardware_utilization": 0.5, "loadavg_start": 0.4, "peak_rss_mb": 1809.0, "peak_rss_steps_mb": 1353.0,
            **kw}


def _meta(**kw):
    peak = {"float32": {"gflops": 200.0}, "bfloat16": {"gflops": 400.0, "paths": {"mm": 400.0}}}
    return {"trl": "1.16.0", "command": "python -m benchmarks.throughput", "date": "d", "cpu": "c", "torch": "t",
            "transformers": "x", "threads": 2, "b": 8, "g": 4, "t": 24, "kl": 0.05, "steps": 1, "warmup": 1,
            "wall_s": 60.0, "loadavg_start": [0.4, 0.3, 0.2], "loadavg_end": [0.5, 0.4, 0.3], "peak": peak,
            "cpu_flags": ["amx_bf16", "avx512_bf16", "avx512f"], "machine": {"cores": 2}, "max_load": 1.5,
            "busy": False, "lora_r": 16, **kw}


def test_lora_rows_are_compared_with_trl_lora_rows_and_the_machine_is_recorded():
    results = [_row("rlft", "full", 2.0), _row("trl", "full", 6.0), _row("rlft", "lora", 1.0), _row("trl", "lora", 5.0)]
    report.speedups(results)
    assert results[0]["speedup"] == 3.0 and results[2]["speedup"] == 5.0
    text = report.markdown(results, _meta())
    assert "smollm2-135m (134.5M) LoRA r=16 | grpo" in text
    assert "| 1809 | 1353 | 50% |" in text          # the whole run's peak RSS, then the steps' peak
    assert "CPU flags: amx_bf16, avx512_bf16, avx512f; 2 cores, 2 torch thread(s)" in text
    assert "BUSY" not in text
    busy = report.markdown(results, _meta(busy=True, loadavg_start=[2.4, 1.0, 1.0]))
    assert busy.splitlines()[2].startswith("**BUSY MACHINE: the 1-minute load average was 2.40 at the start")


def test_lora_model_flops_count_no_weight_gradients():
    shape = {"body": 100e6, "head": 28e6, "layers": 30, "width": 576, "params": 135e6}
    full = flops.step_flops(shape, 8, 4, 180, 24, True)
    lora = flops.step_flops(shape, 8, 4, 180, 24, True, lora=True)
    scored = flops.step_flops(shape, 8, 4, 180, 24, False) - flops.step_flops(shape, 8, 4, 180, 24, False, lora=True)
    assert lora < full and scored > 0
    # one scored pass fewer: the training backward is one forward's worth, not two
    assert full - lora == pytest.approx(scored)
