"""Rendering a run's prompts: the template or the chat instruction, filled with each row's columns."""

from __future__ import annotations

from rlft.config import load_config
from rlft.data.example import Example
from rlft.training.setup import render

ROWS = [Example("the cat", ("x",), "0", meta={"topic": "pets", "meta": {"page": "cat"}}),
        Example("a dog", ("y",), "1", meta={"topic": "parks", "meta": {"page": "dog"}})]


def test_format_template_gets_the_rows_extra_columns():
    cfg = load_config(None, ["data.template=[{topic}] {prompt} ({meta[page]}) =>"])
    assert render(cfg, None, ROWS) == ["[pets] the cat (cat) =>", "[parks] a dog (dog) =>"]


def test_chat_instruction_gets_the_rows_extra_columns_and_the_system_prompt():
    from tests.tiny import tiny_chat_tokenizer

    cfg = load_config(None, ["data.template=chat", "data.instruction=About {topic}: {prompt}",
                             "data.system_prompt=Answer briefly."])
    texts = render(cfg, tiny_chat_tokenizer(), ROWS)
    assert texts[1] == ("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nAbout parks: a dog<|im_end|>\n"
                        "<|im_start|>assistant\n")


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
