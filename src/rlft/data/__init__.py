"""Prompt datasets: loading, templates, splits and traffic counts.

High-frequency fine-tuning, in the order a run uses it: ``counting`` (traffic log -> unique
prompts with counts) -> ``sampling`` (counts -> probabilities p -> B prompt indices per step,
plus loss weights) -> ``buckets`` (head/torso/tail evaluation, and the tail guard that boosts
the tail's weight when its validation metric drops).
"""

from rlft.data.example import Example

__all__ = ["Example"]
