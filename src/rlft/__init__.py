"""rlft: reinforcement-learning fine-tuning of Hugging Face language models for text generation.

    import rlft
    config = rlft.load_config("examples/translation.yaml", ["algo.name=rloo"])
    result = rlft.train(config)

Importing rlft is cheap: torch, transformers and the optional packages load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Config", "load_config", "train", "sft", "evaluate", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Config", "load_config"):
        from rlft import config

        return getattr(config, name)
    if name == "train":
        from rlft.training.loop import train

        return train
    if name == "sft":
        from rlft.training.sft import sft

        return sft
    if name == "evaluate":
        from rlft.api import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'rlft' has no attribute {name!r}")
