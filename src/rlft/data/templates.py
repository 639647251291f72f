"""Turn a prompt into the model's input: fill the template, then tokenize within the length budget."""

from __future__ import annotations

import functools
import string
import warnings
from typing import TYPE_CHECKING, Any, Callable

from rlft.config import check_choice
from rlft.errors import RlftError

if TYPE_CHECKING:
    from rlft.config import Config
    from rlft.data.example import Example

CHAT = "chat"


@functools.lru_cache(maxsize=64)
def template_fields(template: str, key: str = "data.template") -> frozenset[str]:
    """The top-level field names a format template uses (``{a.b}`` and ``{a[0]}`` use ``a``);
    ``key`` names the setting in error messages."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise RlftError(f"{key}: malformed format string ({err}); write literal braces as {{{{ }}}}") from None
    names = set()
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise RlftError(f"{key}: positional fields such as {{}} are not supported; use {{prompt}}")
        names.add(root)
    if "prompt" not in names:
        raise RlftError(f"{key} must contain {{prompt}}")
    return frozenset(names)


def render_prompt(template: str, prompt: str, tokenizer: Any = None, instruction: str = "{prompt}",
                  system_prompt: str = "", /, **meta: Any) -> str:
    """Fill ``template`` with the prompt and the Example.meta columns it names.

    ``template == 'chat'`` (chat/instruct models) fills ``instruction`` the same way and sends it
    as the user turn, after a system turn when ``system_prompt`` is not empty, through the
    tokenizer's chat template, ending with the assistant cue. The parameters before ``/`` are
    positional-only so that a data column called ``prompt``, ``tokenizer`` or ``instruction`` can
    still arrive through ``meta``; the Example's own prompt always wins.
    """
    if template == CHAT:
        return _render_chat(_fill(instruction, prompt, meta, "data.instruction"), system_prompt, tokenizer)
    return _fill(template, prompt, meta, "data.template")


def render(config: Config, tokenizer: Any, examples: list[Example], max_tokens: int | None = None) -> list[str]:
    """Prompt texts as the model sees them: the template (or, for 'chat', the instruction) filled
    with each example's prompt and its other columns (``Example.meta``). With ``max_tokens`` (and
    ``data.overlong='truncate'``) an over-long prompt is cut inside its prompt field, so the
    template, instruction and chat headers stay whole (``fit_prompt_field``).

    The one renderer of ``rlft train``, ``sft``, ``eval`` and ``generate``."""
    d = config.data
    out = []
    for i, ex in enumerate(examples):
        def fill(prompt: str, ex: Example = ex) -> str:
            return render_prompt(d.template, prompt, tokenizer, d.instruction, d.system_prompt, **ex.meta)

        if max_tokens is None or tokenizer is None or d.overlong != "truncate":
            out.append(fill(ex.prompt))
        else:
            out.append(fit_prompt_field(fill, ex.prompt, tokenizer, max_tokens, f"prompt {ex.id or i}"))
    return out


def _fill(template: str, prompt: str, meta: dict[str, Any], key: str) -> str:
    missing = sorted(template_fields(template, key) - {"prompt"} - set(meta))
    if missing:
        available = ", ".join(["prompt", *sorted(meta)])
        raise RlftError(f"{key}: unknown field '{missing[0]}' (available: {available})")
    try:
        return template.format_map({**meta, "prompt": prompt})
    except (KeyError, IndexError, AttributeError, ValueError) as err:
        raise RlftError(f"{key}: cannot fill the template ({type(err).__name__}: {err})") from None


def _render_chat(user: str, system_prompt: str, tokenizer: Any) -> str:
    if tokenizer is None:
        raise RlftError("data.template='chat' needs a tokenizer")
    if getattr(tokenizer, "chat_template", None) is None:
        raise RlftError("data.template='chat' but the tokenizer has no chat template; "
                        "use a format template such as 'Question: {prompt}\\nAnswer:'")
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages = [*system, {"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token the chat template closes an assistant turn with (ChatML ``<|im_end|>``, Llama 3
    ``<|eot_id|>``, Gemma ``<end_of_turn>``): SFT targets end with it and decoding stops at it.

    Found by rendering a conversation whose assistant turn is a marker and taking the first
    special token after the marker; the tokenizer's EOS when the template writes none there
    (Mistral's templates close the turn with ``</s>``), None without a chat template.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    marker = "rlftEndOfTurnMarker"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - templates raise their own errors (jinja's, custom ones)
        return tokenizer.eos_token_id
    if marker not in text:
        return tokenizer.eos_token_id
    after = text[text.rindex(marker) + len(marker):]
    special = set(tokenizer.all_special_ids)
    special.update(i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special)
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    return next((i for i in ids if i in special), tokenizer.eos_token_id)


def fit_prompt_field(fill: Callable[[str], str], prompt: str, tokenizer: Any, max_tokens: int, where: str) -> str:
    """``fill(prompt)`` held to ``max_tokens`` by cutting the prompt field, not the rendered text.

    Cutting the rendered text would drop what the template puts first: a chat template's system
    and user headers, an instruction or 'Summarize:' written before ``{prompt}``. Here tokens are
    dropped from the start of the prompt text (its end is kept, as ``fit_prompt`` keeps the end)
    until the rendering fits; when the template alone is too long the full rendering is returned
    and ``fit_prompt`` reports or cuts it.
    """
    text = fill(prompt)
    n = _count(text, tokenizer)
    if n <= max_tokens:
        return text
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    cut = n - max_tokens
    while cut < len(ids):
        shorter = fill(tokenizer.decode(ids[cut:]))
        over = _count(shorter, tokenizer) - max_tokens
        if over <= 0:
            warnings.warn(f"{where}: prompt is {n} tokens, longer than data.max_prompt_tokens={max_tokens}; "
                          f"dropped the first {cut} tokens of the prompt text, the template kept whole", stacklevel=2)
            return shorter
        cut += over
    return text


def _count(text: str, tokenizer: Any) -> int:
    """Tokens of a rendered prompt, counted as ``fit_prompt`` counts them."""
    return len(tokenizer(text, add_special_tokens=_adds_special(text, tokenizer))["input_ids"])


def _adds_special(text: str, tokenizer: Any) -> bool:
    """Whether tokenizing a rendered prompt adds the tokenizer's special tokens: not when a chat
    template already wrote the BOS token into the text (another one would give the model a
    sequence it never saw in training)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def fit_prompt(text: str, tokenizer: Any, max_tokens: int, overlong: str, where: str) -> list[int]:
    """Tokenize a rendered prompt and hold it to ``max_tokens``.

    'truncate' keeps the prompt's end, because templates put the generation cue ('Answer:',
    the assistant header) last and the model must still see it; special tokens the tokenizer
    adds at either end (BOS, T5's EOS) are kept. 'reject' raises.
    """
    check_choice("data.overlong", overlong)
    if max_tokens < 1:
        raise RlftError(f"data.max_prompt_tokens must be at least 1, got {max_tokens}")
    add_special = _adds_special(text, tokenizer)
    ids = list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    if len(ids) <= max_tokens:
        return ids
    message = f"{where}: prompt is {len(ids)} tokens, longer than data.max_prompt_tokens={max_tokens}"
    if overlong == "reject":
        raise RlftError(message)
    if add_special:
        prefix, body, suffix = _split_special(ids, text, tokenizer)
    else:  # the BOS written by the chat template stays first
        keep = 1 if ids[0] == getattr(tokenizer, "bos_token_id", None) else 0
        prefix, body, suffix = ids[:keep], ids[keep:], []
    budget = max_tokens - len(prefix) - len(suffix)
    if budget < 1:
        raise RlftError(f"{message}; the tokenizer's special tokens alone fill it")
    warnings.warn(f"{message}; kept its last {max_tokens} tokens", stacklevel=2)
    return prefix + body[-budget:] + suffix


def _split_special(ids: list[int], text: str, tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """Split ``ids`` into (tokens the tokenizer added before, the text's tokens, tokens added after)."""
    plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    extra = len(ids) - len(plain)
    for start in range(max(extra, 0) + 1):
        if ids[start:start + len(plain)] == plain:
            return ids[:start], plain, ids[start + len(plain):]
    return [], ids, []  # the added tokens are interleaved; treat everything as text
