"""Train / validation / test splits that are stable across runs, machines and dataset edits.

Each prompt's split is decided by a hash of its text alone, so adding or removing other rows
never moves a prompt between splits, and a prompt can never be in two splits.
"""

from __future__ import annotations

import hashlib
import os
import warnings

from rlft.config import DataConfig
from rlft.data.example import Example
from rlft.data.loading import load_examples
from rlft.errors import RlftError

SPLITS = ("train", "validation", "test")


def hash_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``; Python's ``hash()`` is salted per process, sha256 is not."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_examples(examples: list[Example], validation_fraction: float,
                   test_fraction: float) -> dict[str, list[Example]]:
    """Assign each example by ``h = hash_fraction(prompt)``: test if h < test_fraction,
    validation if h < test_fraction + validation_fraction, else train. Order is preserved.
    """
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise RlftError(f"data.{name} must be in [0, 1), got {value}")
    if validation_fraction + test_fraction >= 1.0:
        raise RlftError("data.validation_fraction + data.test_fraction must be below 1, "
                        f"got {validation_fraction} + {test_fraction}")
    out: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for ex in examples:
        h = hash_fraction(ex.prompt)
        split = "test" if h < test_fraction else "validation" if h < test_fraction + validation_fraction else "train"
        out[split].append(ex)
    return out


def load_splits(cfg: DataConfig, task_dir: str | None = None, *, normalize: bool = False) -> dict[str, list[Example]]:
    """Load ``train``, ``validation`` and ``test`` Examples as ``cfg`` describes.

    A validation or test file, when given, is used as is; a split without one is carved from
    train by hash. A prompt that is both in a given held-out file and in train is dropped from
    train, so a held-out score never rewards memorizing it. Relative paths that do not exist
    from the working directory are looked up in ``task_dir`` (a bundled task's data folder).
    """
    if cfg.train is None:
        raise RlftError("data.train: no training data given; set data.task or data.train")
    if cfg.max_examples is not None and cfg.max_examples < 1:
        raise RlftError(f"data.max_examples must be at least 1 (or empty for all), got {cfg.max_examples}")
    train = load_examples(_resolve(cfg.train, task_dir), cfg, normalize=normalize)
    given = {name: load_examples(_resolve(path, task_dir), cfg, normalize=normalize)
             for name, path in (("validation", cfg.validation), ("test", cfg.test)) if path is not None}

    carved = split_examples(train,
                            0.0 if "validation" in given else cfg.validation_fraction,
                            0.0 if "test" in given else cfg.test_fraction)
    splits = {**carved, **given}

    if "validation" in given and "test" in given:
        # Test is the last word; a prompt in both is only trusted as test.
        splits["validation"] = _drop_overlap(splits["validation"], splits["test"], "data.validation", "data.test")
    for name in given:
        splits["train"] = _drop_overlap(splits["train"], given[name], "data.train", f"data.{name}")
    if not splits["train"]:
        raise RlftError(f"{cfg.train}: no training examples left after holding out validation and test")
    if cfg.max_examples is not None:
        splits["train"] = splits["train"][:cfg.max_examples]
    return splits


def _drop_overlap(keep_from: list[Example], held_out: list[Example], name: str, held_name: str) -> list[Example]:
    held = {ex.prompt for ex in held_out}
    kept = [ex for ex in keep_from if ex.prompt not in held]
    dropped = len(keep_from) - len(kept)
    if dropped:
        warnings.warn(f"{name}: dropped {dropped} prompt(s) that also appear in {held_name}", stacklevel=3)
    return kept


def _resolve(path: str, task_dir: str | None) -> str:
    if task_dir is None or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(task_dir, path)
    return candidate if os.path.exists(candidate) else path
