"""A reward for the multi-process tests: chrF, after a pause of $RLFT_TEST_REWARD_PAUSE seconds, so
that a test can kill a run between two checkpoints."""

from __future__ import annotations

import os
import time


def slow_chrf(prompts, completions, references, **meta):
    from rlft.rewards.registry import chrf

    time.sleep(float(os.environ.get("RLFT_TEST_REWARD_PAUSE", "0")))
    return chrf(prompts, completions, references)
