"""A run's setup: the loop renders prompts with each row's columns; task and model defaults."""

from __future__ import annotations

from rlft.config import load_config


def test_rl_training_fills_the_template_with_each_rows_extra_columns(tmp_path, tiny_causal_dir):
    """`rlft train` renders the same way as eval: a template field other than {prompt} is filled from
    the row's own columns (once it failed with "unknown field"); the sampler sees the filled text."""
    from rlft.training.loop import train
    from rlft.training.setup import build_parts
    from tests.conftest import tiny_overrides, write_jsonl

    rows = [{"prompt": f"the cat {i}", "reference": "cat the", "topic": f"t{i}"} for i in range(30)]
    data = {name: str(write_jsonl(tmp_path / f"{name}.jsonl", rows[k * 10:(k + 1) * 10]))
            for k, name in enumerate(("train", "validation", "test"))}
    cfg = load_config(None, tiny_overrides(tiny_causal_dir, data, tmp_path / "run", **{
        "data.template": "[{topic}] {prompt} =>", "run.steps": 1, "eval.max_examples": 2}))
    parts = build_parts(cfg)
    seen: list[str] = []
    sample = parts.sampler.sample

    def recording_sample(prompts, *args, **kwargs):
        seen.extend(prompts)
        return sample(prompts, *args, **kwargs)

    parts.sampler.sample = recording_sample
    assert train(cfg, parts).step == 1
    train_rows = {f"[t{i}] the cat {i} =>" for i in range(10)}
    validation_rows = {f"[t{i}] the cat {i} =>" for i in range(10, 20)}  # the step-0 evaluation's
    assert set(seen) & train_rows and set(seen) <= train_rows | validation_rows


def test_a_known_instruct_model_is_prompted_through_its_chat_template_unless_told_otherwise():
    from rlft.training.setup import apply_task_defaults

    cfg = apply_task_defaults(load_config(None, ["model.name_or_path=smollm2-135m", "data.task=summarization"]))
    assert cfg.data.template == "chat" and "{prompt}" in cfg.data.instruction
    assert cfg.reward.spec == "rouge_l"  # the task's other defaults still apply
    plain = apply_task_defaults(load_config(None, ["model.name_or_path=smollm2-135m", "data.task=summarization",
                                                   "data.template=Summarize: {prompt}\nSummary:"]))
    assert plain.data.template.startswith("Summarize:")
    other = apply_task_defaults(load_config(None, ["model.name_or_path=gpt2", "data.task=summarization"]))
    assert other.data.template != "chat"
