"""Run configuration: frozen dataclasses, one per concern.

These classes are the single source of truth for every setting: the YAML schema, the
dotted command-line overrides (``algo.name=rloo rollout.group_size=8``) and ``rlft --help``
are all generated from them, so flags and docs cannot drift apart.

    schema.py   the dataclasses (``doc``: default, documentation, range) and their introspection
    loading.py  defaults < ``base`` < YAML file < overrides -> Config, and which keys were explicit
    checks.py   choices, ranges and the settings that must fit together (``validate``, ``check_choice``)
    docs.py     ``rlft --help`` and docs/config.md
"""

from __future__ import annotations

from rlft.config.checks import check_choice, numeric_fields, validate
from rlft.config.docs import config_markdown, help_text
from rlft.config.loading import (_coerce, explicit_keys, load_args, load_config, parse_overrides, with_defaults,
                                 with_overrides)
from rlft.config.schema import (AlgoConfig, Config, DataConfig, EvalConfig, FrequencyConfig, Interval, LoraConfig,
                                ModelConfig, OptimConfig, RewardConfig, RolloutConfig, RunConfig, SFTConfig, all_keys,
                                choices, doc)

__all__ = ["AlgoConfig", "Config", "DataConfig", "EvalConfig", "FrequencyConfig", "Interval", "LoraConfig",
           "ModelConfig", "OptimConfig", "RewardConfig", "RolloutConfig", "RunConfig", "SFTConfig", "all_keys",
           "check_choice", "choices", "config_markdown", "doc", "explicit_keys", "help_text", "load_args", "load_config",
           "numeric_fields", "parse_overrides", "validate", "with_defaults", "with_overrides",
           "_coerce"]  # the pretraining recipe (recipes.pretrain) coerces its own settings with it
