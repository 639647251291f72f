"""The bundled tasks: a real-text dataset snapshot + prompt template + reward + metrics each.

The snapshots are committed under ``rlft/assets/tasks/<name>/`` and read like any user data.
The code that builds them from the raw sources runs once and lives outside the package, in
``recipes/tasks/`` (``python -m recipes.tasks --task NAME`` on a Debian machine). Importing this
module reads no data.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.errors import RlftError


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    language: str  # of the references: 'en', 'zh' or 'fr'; the off_language monitor's target (eval.language)
    template: str  # for base models: a Python format string with {prompt}
    reward: str  # reward spec, as in RewardConfig.spec
    metric: str
    second_metric: str
    max_new_tokens: int
    max_prompt_tokens: int = 256
    # For chat models (data.template='chat'): the user turn, a format string with {prompt}. It says
    # what the output looks like, since a chat model has no 'Summary:' cue to continue.
    instruction: str = "{prompt}"


# max_new_tokens comes from the p95 reference length of each task's datasheet, in tokens of a
# byte-level BPE tokenizer (about 4 characters per English token, 1.5-2 tokens per CJK character).
TASKS: dict[str, Task] = {
    "translation": Task(
        name="translation",
        description="English software messages -> Simplified Chinese (gettext catalogs of Debian packages).",
        language="zh",
        template="Translate to Chinese: {prompt}\nChinese:",
        reward="0.8*chrf + 0.2*placeholders",
        metric="chrf",
        second_metric="bleu",
        max_new_tokens=64,
        instruction="Translate this software message from English to Simplified Chinese. Keep placeholders "
                    "such as %s unchanged. Reply with the translation only.\n\n{prompt}",
    ),
    "translation_fr": Task(
        name="translation_fr",
        description="English software messages -> French (gettext catalogs of Debian packages).",
        language="fr",
        template="Translate to French: {prompt}\nFrench:",
        reward="0.8*chrf + 0.2*placeholders",
        metric="chrf",
        second_metric="bleu",
        max_new_tokens=64,
        instruction="Translate this software message from English to French. Keep placeholders "
                    "such as %s unchanged. Reply with the translation only.\n\n{prompt}",
    ),
    "summarization": Task(
        name="summarization",
        description="Man page DESCRIPTION -> the one-line summary of its NAME section.",
        language="en",
        template="Summarize: {prompt}\nSummary:",
        reward="rouge_l",
        metric="rouge_l",
        second_metric="chrf",
        max_new_tokens=24,
        # Chosen on 48 validation rows with SmolLM2-135M-Instruct among four wordings (ROUGE-L 16.5;
        # "Write the one-line NAME summary ..." 5.5, "What is this manual page about? ..." 10.9,
        # "Write a short title (3 to 8 words) ..." before the text 16.6 but 69% copying).
        instruction="{prompt}\n\nSummarize the text above as a short title of 3 to 8 words.",
    ),
    "dialogue": Task(
        name="dialogue",
        description="Last 1-3 turns of a human-human chat (Chit-Chat Challenge) -> the next turn.",
        language="en",
        template="{prompt}\nB:",
        reward="0.4*rouge_l + 0.4*embedding + 0.2*no_truncation",
        metric="rouge_l",
        second_metric="chrf",
        max_new_tokens=48,
        # The instruction follows the chat, so a long chat truncated from its start keeps it.
        instruction="{prompt}\n\nThis is a casual online chat between A and B. Write B's next message: "
                    "one short, natural line. Reply with the message only.",
    ),
    "code_summary": Task(
        name="code_summary",
        description="Python standard-library function/class source without its docstring -> the docstring's first sentence.",
        language="en",
        template="{prompt}\n# Summary:",
        reward="rouge_l",
        metric="rouge_l",
        second_metric="chrf",
        max_new_tokens=32,
        max_prompt_tokens=512,
        # The instruction follows the code, so a long function truncated from its start keeps it.
        instruction="```python\n{prompt}\n```\n\nWrite the first sentence of the docstring of this Python "
                    "code: one short sentence saying what it does, like 'Return the number of items.'. "
                    "Reply with the sentence only.",
    ),
}


def get_task(name: str) -> Task:
    """The registered task, or an RlftError naming the known ones."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RlftError(f"config: data.task: unknown task '{name}' (known: {', '.join(sorted(TASKS))}){hint}")
    return TASKS[name]


def task_dir(name: str) -> Path:
    """The snapshot directory of a task inside the installed package."""
    get_task(name)
    from importlib.resources import files

    return Path(str(files("rlft") / "assets" / "tasks" / name))


def task_config(name: str) -> dict[str, Any]:
    """Nested defaults for rlft's Config: data files, template (base models) and instruction (chat
    models, ``data.template=chat``), reward, metric and lengths of the task. They fill in only the
    settings the user did not give (``rlft.training.setup.apply_task_defaults``, after loading):
    given as a ``base`` to ``load_config`` they would count as the user's own."""
    task = get_task(name)
    root = task_dir(name)
    return {
        "data": {
            "train": str(root / "train.jsonl.gz"),
            "validation": str(root / "validation.jsonl.gz"),
            "test": str(root / "test.jsonl.gz"),
            "template": task.template,
            "instruction": task.instruction,
            "max_prompt_tokens": task.max_prompt_tokens,
        },
        "reward": {"spec": task.reward},
        "eval": {"metric": task.metric, "language": task.language},
        "rollout": {"max_new_tokens": task.max_new_tokens},
    }


__all__ = ["TASKS", "Task", "get_task", "task_config", "task_dir"]
