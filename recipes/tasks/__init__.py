"""The builders of the bundled task snapshots: each scrapes a raw source into a task's snapshot.

    python -m recipes.tasks                   # all tasks
    python -m recipes.tasks --task dialogue   # one task

One module per source (``translation``: gettext catalogs, ``summarization``: man pages,
``dialogue``: the chitchat-dataset package, ``code_summary``: the standard library's AST), and
``common`` for what they share (dedup, hash splits, traffic counts, snapshot files, datasheet).
The task definitions (template, instruction, reward, metrics) and the snapshot paths stay in
``rlft.tasks``, where the runtime loads them from; a build writes to ``rlft.tasks.task_dir(name)``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from recipes.tasks import code_summary, dialogue, summarization, translation
from rlft.tasks import get_task, task_dir

# Task name -> build(out_dir, **source_overrides) -> rows per split. ``translation`` builds one
# task per target language.
BUILDERS: dict[str, Callable[..., dict[str, int]]] = {
    "translation": functools.partial(translation.build, task="translation"),
    "translation_fr": functools.partial(translation.build, task="translation_fr"),
    "summarization": summarization.build,
    "dialogue": dialogue.build,
    "code_summary": code_summary.build,
}


def build(name: str, out_dir: Path | None = None, **kwargs: Any) -> dict[str, int]:
    """Rebuild the snapshot and datasheet of task ``name`` into ``out_dir`` (default: the package's
    own ``task_dir(name)``); ``kwargs`` override its sources. Returns rows per split."""
    get_task(name)  # an unknown name fails with the list of known ones
    return BUILDERS[name](Path(out_dir) if out_dir is not None else task_dir(name), **kwargs)


__all__ = ["BUILDERS", "build"]
