"""Checks that types alone cannot express: choices, numeric ranges and finiteness, and the
settings that must fit together."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any

from rlft.algorithms import ALGORITHMS, KL_MODE_ESTIMATORS
from rlft.config.schema import Config, all_keys, choices, field_types, get
from rlft.errors import RlftError


def check_choice(key: str, value: Any) -> None:
    """Raise unless ``value`` is one of the choices of the setting ``key`` (any value for a free one).
    Also for the modules that dispatch on a setting, when they are called without ``validate``."""
    allowed = choices(key)
    if allowed and value not in allowed:
        raise RlftError(f"config: {key}={value!r} is not one of {', '.join(allowed)}")


def validate(config: Config) -> None:
    """Range and choice checks that types alone cannot express."""
    flat = {k: get(config, k) for k in all_keys()}
    if config.algo.name not in ALGORITHMS:
        close = difflib.get_close_matches(config.algo.name, list(ALGORITHMS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise RlftError(f"config: algo.name: unknown algorithm '{config.algo.name}' "
                        f"(known: {', '.join(sorted(ALGORITHMS))}){hint}")
    for key, value in flat.items():
        check_choice(key, value)
    for key, meta in numeric_fields().items():
        value = flat[key]
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise RlftError(f"config: {key} must be a finite number, got {value!r}")
        if "range" in meta and value not in meta["range"]:
            raise RlftError(f"config: {key} must be {meta['range']}, got {value!r}")
    if not [m for m in config.lora.target_modules.split(",") if m.strip()]:
        raise RlftError("config: lora.target_modules must be 'auto' or a comma list of module names, got ''")
    if config.lora.init_adapter and config.lora.r == 0:
        raise RlftError("config: lora.init_adapter needs lora.r > 0 (the rank the adapter was saved with)")
    allowed = KL_MODE_ESTIMATORS[config.algo.kl_mode]
    if config.algo.kl_estimator not in allowed:
        raise RlftError(f"config: algo.kl_estimator={config.algo.kl_estimator!r} does not fit algo.kl_mode="
                        f"{config.algo.kl_mode!r} (takes {', '.join(allowed)}; k1 in the loss has zero expected gradient)")
    algo = ALGORITHMS[config.algo.name]  # what it needs, declared in rlft.algorithms.registry
    if config.reward.normalize_components and algo.needs_greedy:
        raise RlftError(f"config: reward.normalize_components does not apply to algo.name={algo.name} (its baseline, "
                        "the greedy output's reward, is on the raw scale)")
    if config.reward.normalize_components and config.rollout.group_size * config.rollout.prompts_per_step < 2:
        raise RlftError("config: reward.normalize_components needs at least 2 samples per step to standardize over "
                        "(rollout.group_size x rollout.prompts_per_step is 1)")
    if config.algo.kl_target > 0 and config.algo.kl_coef == 0:
        raise RlftError("config: algo.kl_target adapts algo.kl_coef, which is 0 (no reference model); "
                        "give kl_coef a starting value > 0")
    if config.algo.minibatches > config.rollout.prompts_per_step * config.rollout.group_size:
        raise RlftError(f"config: algo.minibatches={config.algo.minibatches} is more than the rows of a batch "
                        "(rollout.prompts_per_step x rollout.group_size)")
    if config.rollout.group_size < algo.min_group_size:
        raise RlftError(f"config: algo.name={algo.name} needs rollout.group_size >= {algo.min_group_size} "
                        "(its baseline compares the samples of one prompt)")


def numeric_fields(cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> field metadata, for every int or float setting (Optional ones included)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(numeric_fields(tp, f"{prefix}{f.name}."))
        elif {a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)} & {int, float}:
            out[f"{prefix}{f.name}"] = f.metadata
    return out
