"""Every numeric setting is range- and finiteness-checked at config time, from one table (the
`range=` of each field's `doc()`), with one-line errors."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rlft.config import Config, load_config, numeric_fields, validate
from rlft.errors import RlftError


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", r"config: optim.lr must be >= 0, got -1.0"),
    ("optim.lr=nan", r"config: optim.lr must be a finite number, got nan"),
    ("optim.lr=inf", r"config: optim.lr must be a finite number, got inf"),
    ("optim.beta2=1", r"config: optim.beta2 must be in \[0, 1\), got 1.0"),
    ("rollout.top_p=0", r"config: rollout.top_p must be in \(0, 1\], got 0.0"),
    ("rollout.temperature=0", r"config: rollout.temperature must be > 0, got 0.0"),
    ("algo.baseline_momentum=1", r"config: algo.baseline_momentum must be in \[0, 1\), got 1.0"),
    ("algo.kl_coef=-0.1", r"config: algo.kl_coef must be >= 0, got -0.1"),
    ("data.validation_fraction=1.5", r"config: data.validation_fraction must be in \[0, 1\), got 1.5"),
    ("run.steps=0", r"config: run.steps must be >= 1, got 0"),
    ("run.threads=0", r"config: run.threads must be >= 1, got 0"),
    ("eval.max_new_tokens=-3", r"config: eval.max_new_tokens must be >= 1, got -3"),
    ("frequency.tail_guard=nan", r"config: frequency.tail_guard must be a finite number, got nan"),
])
def test_bad_numbers_are_one_line_errors(override, message):
    with pytest.raises(RlftError, match=f"^{message}$"):
        load_config(None, [override])


def test_defaults_and_empty_optionals_pass():
    validate(Config())
    assert load_config(None, ["run.threads=", "eval.max_new_tokens=null"]).run.threads is None


def test_every_numeric_setting_has_a_range_and_every_default_is_inside_it():
    fields = numeric_fields()  # every number declares its range once, lora.* included
    assert len(fields) > 30
    missing = [k for k, m in fields.items() if "range" not in m]
    assert not missing, f"numeric settings without range=: {missing}"
    default = Config()
    for key, meta in fields.items():
        section, name = key.split(".")
        value = getattr(getattr(default, section), name)
        if value is not None:
            assert math.isfinite(value) and value in meta["range"], key


def test_ranges_are_shown_in_the_settings_reference():
    from rlft.config import help_text

    assert "Must be in (0, 1]." in help_text() and "Must be >= 0." in help_text()
