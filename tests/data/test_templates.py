"""Prompt templates (format strings and chat) and the prompt length budget."""

from __future__ import annotations

import warnings

import pytest

from rlft.config import load_config
from rlft.data.example import Example
from rlft.data.templates import end_of_turn_id, fit_prompt, render, render_prompt
from rlft.errors import RlftError

WORDS = "hello world the answer question is : user assistant a b c d e f g h".split()
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


def make_tokenizer(*, bos: bool = True, eos: bool = False, chat: bool = True):
    """A whitespace word-level tokenizer built offline; optionally adds <s> before and </s> after."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    single = " ".join((["<s>"] if bos else []) + ["$A"] + (["</s>"] if eos else []))
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", 1), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# ---------------------------------------------------------------------------- render_prompt


def test_format_template():
    assert render_prompt("Question: {prompt}\nAnswer:", "why?") == "Question: why?\nAnswer:"
    assert render_prompt("{prompt}", "as is") == "as is"


def test_template_with_meta_fields():
    text = render_prompt("[{topic}] {prompt} ({tags[0]})", "q", None, topic="math", tags=["easy"])
    assert text == "[math] q (easy)"


def test_example_prompt_wins_over_a_meta_column_named_prompt():
    assert render_prompt("{prompt}/{template}", "real", None, prompt="column", template="t") == "real/t"


def test_template_without_prompt():
    with pytest.raises(RlftError, match=r"^data\.template must contain \{prompt\}$"):
        render_prompt("Answer the question:", "q")


def test_unknown_field_is_named():
    with pytest.raises(RlftError) as info:
        render_prompt("{context}\n{prompt}", "q", None, topic="x")
    message = str(info.value)
    assert "unknown field 'context'" in message and "topic" in message


@pytest.mark.parametrize("template, expected", [
    ("{prompt} {", "malformed format string"),
    ("{} {prompt}", "positional fields"),
])
def test_malformed_templates(template, expected):
    with pytest.raises(RlftError, match=expected):
        render_prompt(template, "q")


def test_chat_template():
    tokenizer = make_tokenizer()
    assert render_prompt("chat", "hello world", tokenizer) == "<s>user : hello world assistant :"


def test_chat_without_chat_template_suggests_format_template():
    with pytest.raises(RlftError) as info:
        render_prompt("chat", "q", make_tokenizer(chat=False))
    message = str(info.value)
    assert "no chat template" in message and "{prompt}" in message


def test_chat_needs_a_tokenizer():
    with pytest.raises(RlftError, match="needs a tokenizer"):
        render_prompt("chat", "q")


def test_chat_instruction_with_row_fields_and_system_prompt():
    from tests.tiny import tiny_chat_tokenizer

    text = render_prompt("chat", "the cat", tiny_chat_tokenizer(), "Summarize {meta[page]}: {prompt}", "Be brief.",
                         meta={"page": "cp"})
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSummarize cp: the cat<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_chat_without_system_prompt_has_no_system_turn():
    from tests.tiny import tiny_chat_tokenizer

    text = render_prompt("chat", "the cat", tiny_chat_tokenizer(), "Say {prompt}.")
    assert text == "<|im_start|>user\nSay the cat.<|im_end|>\n<|im_start|>assistant\n"


def test_instruction_errors_name_the_instruction():
    tokenizer = make_tokenizer()
    with pytest.raises(RlftError, match=r"^data\.instruction must contain \{prompt\}$"):
        render_prompt("chat", "q", tokenizer, "Answer the question.")
    with pytest.raises(RlftError, match=r"^data\.instruction: unknown field 'topic' \(available: prompt, page\)"):
        render_prompt("chat", "q", tokenizer, "{topic}: {prompt}", "", page="x")


def test_a_column_named_instruction_reaches_the_template():
    assert render_prompt("{instruction}: {prompt}", "q", None, instruction="do") == "do: q"


def test_end_of_turn_is_the_chat_templates_turn_end():
    from tests.tiny import tiny_chat_tokenizer

    chatml = tiny_chat_tokenizer()
    assert end_of_turn_id(chatml) == chatml.convert_tokens_to_ids("<|im_end|>") != chatml.eos_token_id
    # a template that closes the turn with no special token: the tokenizer's EOS; none: None
    assert end_of_turn_id(make_tokenizer()) == make_tokenizer().eos_token_id
    assert end_of_turn_id(make_tokenizer(chat=False)) is None


# ---------------------------------------------------------------------------- fit_prompt


def test_fit_within_budget_adds_special_tokens():
    tokenizer = make_tokenizer()
    assert fit_prompt("hello world", tokenizer, 8, "truncate", "t.jsonl:1") == [1, 3, 4]


def test_chat_text_does_not_get_a_second_bos():
    tokenizer = make_tokenizer()
    text = render_prompt("chat", "hello", tokenizer)
    ids = fit_prompt(text, tokenizer, 64, "truncate", "t.jsonl:1")
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_truncate_keeps_the_end_and_bos_and_warns():
    tokenizer = make_tokenizer()
    text = "a b c d e f g h question :"  # 10 words + BOS = 11 tokens
    with pytest.warns(UserWarning, match=r"train\.jsonl:12: prompt is 11 tokens"):
        ids = fit_prompt(text, tokenizer, 5, "truncate", "train.jsonl:12")
    assert len(ids) == 5
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "g", "h", "question", ":"]


def test_truncate_keeps_trailing_eos_of_encoder_inputs():
    tokenizer = make_tokenizer(bos=False, eos=True)
    with pytest.warns(UserWarning):
        ids = fit_prompt("a b c d e", tokenizer, 3, "truncate", "x")
    assert tokenizer.convert_ids_to_tokens(ids) == ["d", "e", "</s>"]


def test_truncated_chat_prompt_keeps_bos_and_generation_cue():
    tokenizer = make_tokenizer()
    text = render_prompt("chat", "a b c d e f g h", tokenizer)
    with pytest.warns(UserWarning):
        ids = fit_prompt(text, tokenizer, 4, "truncate", "x")
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "h", "assistant", ":"]


def test_reject_raises_with_lengths():
    tokenizer = make_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reject must not also warn
        with pytest.raises(RlftError) as info:
            fit_prompt("a b c d e f", tokenizer, 4, "reject", "train.jsonl:3")
    assert str(info.value) == "train.jsonl:3: prompt is 7 tokens, longer than data.max_prompt_tokens=4"


def test_bad_overlong_choice():
    with pytest.raises(RlftError, match="data.overlong"):
        fit_prompt("a", make_tokenizer(), 4, "drop", "x")


def test_budget_too_small_for_special_tokens():
    tokenizer = make_tokenizer(bos=True, eos=True)
    with pytest.raises(RlftError, match="special tokens"):
        fit_prompt("a b c", tokenizer, 2, "truncate", "x")


def test_an_overlong_prompt_is_cut_inside_its_field_so_chat_headers_and_instruction_stay():
    import warnings as w

    from rlft.data.templates import fit_prompt_field, render_prompt
    from tests.tiny import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    prompt = " ".join(f"word{i}" for i in range(200)) + " THE-END"
    fill = lambda p: render_prompt("chat", p, tok, "{prompt}\n\nGive it a title.", "Be brief.")  # noqa: E731
    full = len(tok(fill(prompt), add_special_tokens=False)["input_ids"])
    budget = full // 2
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        text = fit_prompt_field(fill, prompt, tok, budget, "prompt 7")
    assert len(tok(text, add_special_tokens=False)["input_ids"]) <= budget
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("THE-END\n\nGive it a title.<|im_end|>\n<|im_start|>assistant\n")
    assert "word0 " not in text and any("prompt 7" in str(c.message) for c in caught)
    assert fit_prompt_field(fill, "short", tok, full, "p") == fill("short")  # fits: untouched


def test_a_plain_template_keeps_its_prefix_when_the_prompt_is_cut():
    from rlft.data.templates import fit_prompt_field, render_prompt
    from tests.tiny import tiny_tokenizer

    tok = tiny_tokenizer("causal")
    prompt = " ".join(f"w{i}" for i in range(300))
    fill = lambda p: render_prompt("Summarize: {prompt}\nSummary:", p)  # noqa: E731
    text = fit_prompt_field(fill, prompt, tok, 40, "p")
    assert text.startswith("Summarize: ") and text.endswith("w299\nSummary:")
    bos = getattr(tok, "bos_token", None)
    assert len(tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]) <= 40


# ---------------------------------------------------------------------------- render (a run's prompts)

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
