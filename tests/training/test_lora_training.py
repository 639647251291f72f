"""LoRA in the RL and SFT loops: adapter-only updates, the adapter-off KL reference, the final export."""

from __future__ import annotations

import json

import pytest
import torch

from rlft.config import load_config
from tests.conftest import tiny_overrides


def _lp(model, rollout, is_seq2seq=False):
    from rlft.models.logprobs import completion_logprobs

    with torch.no_grad():
        return completion_logprobs(model, rollout, is_seq2seq=is_seq2seq)[0]


def test_reference_is_the_base_model_before_and_after_an_update(tmp_path, tiny_causal_dir, tiny_dataset):
    from rlft.models.loading import load_reference
    from rlft.models.logprobs import completion_logprobs
    from rlft.training.optim import build_optimizer
    from rlft.training.setup import build_parts, prepare_parts

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        "lora.r": 4, "algo.kl_coef": 0.1, "optim.lr": 0.05}))
    parts = build_parts(cfg)
    rollout = parts.sampler.sample(["reverse: the cat =>", "reverse: a dog ran =>"], 3, temperature=1.0, top_p=1.0,
                                   top_k=0, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    base_lp = _lp(parts.policy.model, rollout)                 # the model before the adapter
    base_weights = {k: v.clone() for k, v in parts.policy.model.state_dict().items()}
    parts = prepare_parts(cfg, parts)                          # the shared setup puts the adapter on
    model = parts.policy.model
    reference = load_reference(parts.policy, cfg.model)
    assert reference.model is model                            # no second copy in memory
    with reference.active() as ref_model:  # equal up to fp32 summation order (GEMM kernels vary with the
        torch.testing.assert_close(_lp(ref_model, rollout), base_lp, atol=1e-5, rtol=0)  # buffers' alignment)

    optimizer = build_optimizer(model, cfg.optim)
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for n, p in model.named_parameters() if "lora_" in n}
    model.train()
    for _ in range(3):  # a few steps raising the sampled completions' likelihood
        optimizer.zero_grad()
        lp, _ = completion_logprobs(model, rollout, is_seq2seq=False)
        (-(lp * rollout.completion_mask).sum() / rollout.completion_mask.sum()).backward()
        optimizer.step()
    model.eval()

    assert (_lp(model, rollout) - base_lp).abs().max() > 1e-3  # the policy moved
    with reference.active() as ref_model:                      # the reference did not
        torch.testing.assert_close(_lp(ref_model, rollout), base_lp, atol=1e-5, rtol=0)
    assert (_lp(model, rollout) - base_lp).abs().max() > 1e-3  # and the adapter is back on after the block
    for key, value in model.state_dict().items():              # base weights are untouched
        if "lora_" not in key:
            assert torch.equal(value, base_weights[key.replace(".base_layer.", ".")]), key


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_rl_run_with_lora_exports_a_final_model_that_eval_and_generate_load(tmp_path, tiny_causal_dir, tiny_dataset,
                                                                            precision):
    """bf16: the base is kept in bf16 during the run (keep_base_in_bf16); final/ is an fp32 model that
    computes what the run's model computes under autocast."""
    import yaml
    from transformers import AutoModelForCausalLM

    from rlft.api import evaluate_model, generate
    from rlft.training.loop import train
    from rlft.training.runtime import autocast_context
    from rlft.training.setup import build_parts

    cfg = load_config(None, tiny_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "run", **{
        "lora.r": 4, "algo.kl_coef": 0.05, "optim.lr": 0.02, "run.precision": precision}))
    parts = build_parts(cfg)
    result = train(cfg, parts)
    policy = parts.policy
    final = result.final_dir
    assert (final / "adapter" / "adapter_config.json").is_file()
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["lora"]["r"] == 4
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if r["split"] == "train"]
    assert rows[-1]["kl"] > 0  # the reference (adapter off) differs from the trained policy

    ids = policy.tokenizer(["reverse: the cat sat =>"], return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(final).eval()
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    bases = [p.dtype for n, p in policy.model.named_parameters() if "base_layer" in n]
    assert bases and set(bases) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    with torch.no_grad(), autocast_context(torch.device("cpu"), precision):
        got, want = merged(input_ids=ids).logits.float(), policy.model(input_ids=ids).logits.float()
    # bf16: the merged weight is rounded once (W + BA), the run's model rounds W and BA's inputs apart
    tol = 1e-5 if precision == "fp32" else 0.1
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    ours = generate(cfg, ["the cat sat"], parts=parts)
    on_final = load_config(None, tiny_overrides(final, tiny_dataset, tmp_path / "eval", **{
        "lora.r": 4, "run.precision": precision}))
    assert generate(on_final, ["the cat sat"]) == ours
    ev = evaluate_model(on_final, split="test", with_kl=True)
    assert ev["n"] > 0 and ev["metric"] == ev["metric"] and ev["kl"] is not None


def test_sft_with_lora_trains_only_the_adapter(tmp_path, tiny_seq2seq_dir, tiny_dataset):
    from transformers import AutoModelForSeq2SeqLM

    from rlft.training.setup import build_parts
    from rlft.training.sft import sft

    cfg = load_config(None, tiny_overrides(tiny_seq2seq_dir, tiny_dataset, tmp_path / "sft", **{
        "lora.r": 8, "lora.dropout": 0.1, "run.steps": 6, "sft.batch_size": 8, "optim.lr": 1e-2,
        "run.eval_every": 3}))
    parts = build_parts(cfg)
    base = {k: v.clone() for k, v in parts.policy.model.state_dict().items()}
    result = sft(cfg, parts)
    model = parts.policy.model
    for key, value in model.state_dict().items():
        if "lora_" not in key:
            assert torch.equal(value, base[key.replace(".base_layer.", ".")]), key
    assert any(v.abs().max() > 0 for k, v in model.state_dict().items() if "lora_B" in k)
    for name in ("final", "best"):
        assert (result.run_dir / name / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForSeq2SeqLM.from_pretrained(result.final_dir).eval()
    model.eval()
    x = torch.tensor([[5, 6, 7, 2]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=x, decoder_input_ids=x).logits,
                                   model(input_ids=x, decoder_input_ids=x).logits, atol=1e-5, rtol=1e-5)
