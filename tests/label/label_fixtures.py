"""A small labeling database: an admin, two annotators and four man-page summaries to compare."""

from __future__ import annotations

import re
from pathlib import Path

from rlft.label.store import Store

ITEMS = [
    {"key": "ls", "prompt": "List information about the FILEs (the current directory by default). Sort entries "
                            "alphabetically if none of -cftuvSUX nor --sort is specified.",
     "a": "list directory contents", "b": "lists files", "model_a": "policy", "model_b": "sft", "gold": None},
    {"key": "cp", "prompt": "Copy SOURCE to DEST, or multiple SOURCE(s) to DIRECTORY.",
     "a": "copy files and directories", "b": "Copy SOURCE to DEST", "model_a": "sft", "model_b": "policy",
     "gold": None},
    {"key": "rm", "prompt": "This manual page documents the GNU version of rm. rm removes each specified file.",
     "a": "remove files or directories", "b": "delete", "model_a": "policy", "model_b": "sft", "gold": "a"},
    {"key": "mv", "prompt": "Rename SOURCE to DEST, or move SOURCE(s) to DIRECTORY.",
     "a": "move (rename) files", "b": "Rename SOURCE to DEST, or move", "model_a": "policy", "model_b": "sft",
     "gold": None},
]
BY_PROMPT = {it["prompt"]: it for it in ITEMS}


def make_db(path: Path, k: int = 2) -> dict[str, str]:
    """Create the database; returns name -> invite token ('ada' is the admin)."""
    store = Store(path)
    store.set_k(k)
    store.add_items(ITEMS)
    tokens = {name: store.add_annotator(name, admin=name == "ada") for name in ("ada", "alice", "bob")}
    store.close()
    return tokens


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)
