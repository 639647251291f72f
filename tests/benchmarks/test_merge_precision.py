"""benchmarks.merge_precision end to end on a tiny chat model: a LoRA SFT run under bf16, then its
export scored four ways; base + adapter under bf16 must reproduce the run's own validation figure."""

from __future__ import annotations

import json

import pytest

from benchmarks import common, merge_precision


def test_base_plus_adapter_reproduces_the_in_training_figure(tmp_path, monkeypatch):
    from tests.tiny import tiny_causal

    monkeypatch.chdir(tmp_path)
    model = tiny_causal(tmp_path, chat=True)
    settings = {"data.template": "chat", "rollout.max_new_tokens": 4}
    sft_dir = tmp_path / "sft"
    info = common.sft_with_patience("dialogue", str(model), sft_dir, base_val=None, val_n=4, eval_every=2,
                                    patience=1, max_steps=2, max_minutes=5, lr=1e-2, batch_size=2, threads=1,
                                    precision="bf16", seed=0, model_settings={**settings, "lora.r": 4},
                                    base_competes=False)
    assert info["best_step"] == 2 and (sft_dir / "best" / "adapter").is_dir()
    out = tmp_path / "merge.json"
    merge_precision.main(["--sft-dir", str(sft_dir), "--task", "dialogue", "--model", str(model), "--set",
                          *(f"{k}={v}" for k, v in settings.items()), "--lora-r", "4", "--val-rows", "4",
                          "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["results"]
    assert set(rows) == {"merged, bf16", "base + adapter, bf16", "merged, fp32", "base + adapter, fp32"}
    # the adapter on the base under bf16 is what the run trained and evaluated, bit for bit
    assert rows["base + adapter, bf16"]["metric"] == pytest.approx(info["best_val"], abs=1e-9)
    assert result["in_training_curve"][-1]["metric"] == pytest.approx(info["best_val"], abs=1e-9)
    assert all(0 <= r["truncation_rate"] <= 1 for r in rows.values()) and "cpu_flags" in result["machine"]
