"""Task `dialogue`: the last turns of a human-human chat -> the next turn.

Source: the Chit-Chat Challenge conversations shipped in the PyPI package `chitchat-dataset`
(a `dataset.json` inside the package: conversation id -> {"messages": [[utterance, ...], ...]},
one inner list per turn, all utterances of a turn from one sender).

Build (from the repository root): ``python -m recipes.tasks --task dialogue``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from recipes.tasks.common import Pair, merge_duplicates, split_pairs, squash, write_zipf_task

CONTEXT_TURNS = 3
MAX_TARGET_WORDS = 40
MAX_CONTEXT_TURN_WORDS = 50
MAX_REFS = 16
TRAIN_CAP = 20_000
SEED = 29


def source_path() -> Path:
    """The dataset.json inside the installed chitchat-dataset package."""
    try:
        import chitchat_dataset
    except ImportError as err:
        raise ImportError("the dialogue task is built from the PyPI package 'chitchat-dataset': "
                          "pip install chitchat-dataset") from err
    return Path(chitchat_dataset.__file__).parent / "dataset.json"


def turn_text(message: list[dict[str, Any]]) -> str:
    """One turn: its utterances joined with spaces, whitespace collapsed."""
    return squash(" ".join(str(u.get("text", "")) for u in message))


def _clip_front(text: str, max_words: int) -> str:
    """Keep the last ``max_words`` words of a long context turn: its end leads to the reply."""
    words = text.split()
    return text if len(words) <= max_words else "... " + " ".join(words[-max_words:])


def pairs_from_conversation(conv_id: str, messages: list[list[dict[str, Any]]]) -> tuple[list[Pair], Counter]:
    """One pair per turn after the first: up to CONTEXT_TURNS previous turns -> that turn.

    Speakers are tagged relative to the reply: the reply is always B's, the turn before it A's,
    the one before that B's, so the template `{prompt}\\nB:` asks for B's next turn.
    """
    dropped: Counter = Counter()
    turns = [turn_text(m) for m in messages]
    pairs = []
    for i in range(1, len(turns)):
        target = turns[i]
        if not target:
            dropped["empty reply"] += 1
            continue
        if len(target.split()) > MAX_TARGET_WORDS:
            dropped[f"reply over {MAX_TARGET_WORDS} words"] += 1
            continue
        previous = list(range(i - 1, max(-1, i - 1 - CONTEXT_TURNS), -1))  # newest first
        if not all(turns[j] for j in previous):
            dropped["empty turn in context"] += 1
            continue
        context = [f"{'A' if back % 2 == 0 else 'B'}: {_clip_front(turns[j], MAX_CONTEXT_TURN_WORDS)}"
                   for back, j in enumerate(previous)]
        prompt = "\n".join(reversed(context))
        pairs.append(Pair(prompt, [target], 1, {"conversation": conv_id, "turn": i}))
    return pairs, dropped


def collect(path: Path | None = None) -> tuple[list[Pair], Counter]:
    path = Path(path) if path is not None else source_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    pairs, dropped = [], Counter()
    for conv_id in sorted(data):
        found, why = pairs_from_conversation(conv_id, data[conv_id].get("messages", []))
        pairs += found
        dropped += why
    return pairs, dropped


INTRO = f"""
Next-turn prediction in open-domain human-human chat: the last 1-{CONTEXT_TURNS} turns of a
conversation -> the next turn.

Template: `{{prompt}}\\nB:` where the prompt is the context as lines `A: ...` / `B: ...`; the reply
is always B's (speaker tags are relative to the reply: the turn just before it is A's). Reward
`0.4*rouge_l + 0.4*embedding + 0.2*no_truncation` (embedding: cosine similarity of all-MiniLM-L6-v2
sentence embeddings; no_truncation: 1 for a reply that ends before `max_new_tokens`, since RL on
the first two terms alone learned to run every reply to the length limit);
metric ROUGE-L, second metric chrF. `rollout.max_new_tokens` = 48: the p95 reply
is 33 words (171 characters, ~45 tokens of a byte-level BPE tokenizer).

## Source and licence

The Chit-Chat Challenge dataset of the BYU Perception, Control & Cognition lab, from the PyPI
package `chitchat-dataset` 0.9.0 (file `chitchat_dataset/dataset.json`; 7,168 conversations).
Licence: MIT (the package's licence).

## Cleaning rules

1. A turn is one inner message list (consecutive utterances of one sender), its utterances
   joined with spaces; whitespace collapsed.
2. Every turn after the first is a reply; its context is the up to {CONTEXT_TURNS} turns before it
   (fewer at the start of a conversation), one line per turn.
3. Replies over {MAX_TARGET_WORDS} words are left out (a small model's completion is capped at
   `max_new_tokens`); a context turn over {MAX_CONTEXT_TURN_WORDS} words keeps its last
   {MAX_CONTEXT_TURN_WORDS} words after `... `. Pairs with an empty reply or context turn are
   left out.
4. Duplicate contexts (mostly openers such as "A: Hi") are merged; their replies become
   several references, the {MAX_REFS} most frequent kept.
5. Splits are by conversation (the sha256 of its id), not by prompt: every pair of a
   conversation lands in one split, so a held-out reply never reappears as context in a train
   prompt (a merged context belongs to the conversation it first came from). Validation and test
   are capped at 1,000 prompts each (the lowest hashes, whole conversations only); train is
   subsampled to {TRAIN_CAP:,} prompts by a second, salted sha256 of the prompt, to keep the
   package small.
"""


def held_out_replies_in_train(splits: dict[str, list[Pair]]) -> dict[str, int]:
    """Per held-out split: how many of its prompts have a reference that is a whole turn of some
    train prompt's context (the leak a split by prompt causes; by conversation it is left only
    for generic turns shared across conversations, such as "Hi")."""
    turns = {line.split(": ", 1)[-1] for pair in splits["train"] for line in pair.prompt.splitlines()}
    return {name: sum(any(ref in turns for ref in pair.references) for pair in splits[name])
            for name in ("validation", "test")}


def build(out_dir: Path, path: Path | None = None, cap: int = 1000,
          train_cap: int = TRAIN_CAP) -> dict[str, int]:
    """Collect, clean, split and write the snapshot and datasheet; returns rows per split."""
    pairs, dropped = collect(path)
    total = len(pairs)
    pairs = merge_duplicates(pairs, max_refs=MAX_REFS)
    splits = split_pairs(pairs, cap=cap, train_cap=train_cap, group=lambda p: p.meta["conversation"])
    kept = sum(len(s) for s in splits.values())
    leaks = held_out_replies_in_train(splits)
    preface = (f"{total} (context, reply) pairs collected, {len(pairs)} distinct contexts, {kept} kept after the caps. "
               f"Held-out prompts with a reference that is also a whole context turn of a train prompt "
               f"(generic turns such as greetings): {leaks['validation']} of {len(splits['validation'])} "
               f"validation, {leaks['test']} of {len(splits['test'])} test.\n")
    return write_zipf_task("dialogue", "Task `dialogue` (chat context -> next turn)", INTRO, splits, out_dir,
                           seed=SEED, scale=max(1.0, kept / 2), dropped=dropped, drops_title="Pairs",
                           unit=("left out", "pairs"), cap=cap, train_cap=train_cap, preface=preface)
