"""Loading: defaults, then a ``base`` mapping, a YAML file and dotted overrides -> a validated Config,
remembering which keys were given explicitly (a bundled task's defaults fill in only the others)."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlft.config.checks import validate
from rlft.config.schema import Config, all_keys, field_types, get
from rlft.errors import RlftError


def _unknown_key(key: str, source: str) -> RlftError:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    if not close:  # try the last component alone: 'group_sise' -> 'rollout.group_size'
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys()}
        match = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[match[0]]] if match else []
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return RlftError(f"{source}: unknown config key '{key}'{hint}")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:  # a choice setting reads as text; validate checks it is one of the choices
        tp = str
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0], key, source)
    bad = RlftError(f"{source}: config key '{key}' expects {getattr(tp, '__name__', tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        try:
            as_float = float(value)
        except ValueError:
            raise bad from None
        if as_float != int(as_float):
            raise bad
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], source: str, prefix: str = "") -> Any:
    types = field_types(cls)
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in types:
            raise _unknown_key(full, source)
        tp = types[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise RlftError(f"{source}: config section '{full}' must be a mapping, got {value!r}")
            kwargs[key] = _build(tp, value, source, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full, source)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``['algo.name=rloo', 'rollout.group_size=8']`` -> nested dict (values parsed as YAML scalars)."""
    import yaml

    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise RlftError(f"command line: override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)):  # every setting is a scalar: 'Summarize: {prompt}' is text
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RlftError(f"command line: override '{item}' conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: Mapping[str, Any] | None = None) -> Config:
    """Build a Config from defaults, an optional ``base`` mapping, an optional YAML file and
    dotted overrides, each layer winning over the previous.

    ``base`` holds a caller's own settings, nested (``{'run': {'steps': 5}}``) or dotted
    (``{'run.steps': 5}``): a demo profile, a benchmark's. Like the file and the overrides they
    count as given (``explicit_keys``). A bundled task's defaults are not a base: they fill in
    only what no layer gave, after loading (``rlft.training.setup.apply_task_defaults``)."""
    import yaml

    values = _nest(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise RlftError(f"{path}: config file does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise RlftError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if not isinstance(loaded, dict):
            raise RlftError(f"{path}: the config must be a mapping of sections")
        _build(Config, loaded, str(path))  # validate the file on its own, to blame the right source
        values = _merge(values, loaded)
    if overrides:
        parsed = parse_overrides(overrides)
        _build(Config, parsed, "command line")
        values = _merge(values, parsed)
    config = _build(Config, values, str(path) if path else "config")
    validate(config)
    return _set_explicit(config, _dotted(values))


def load_args(args: list[str], base: Mapping[str, Any] | None = None) -> Config:
    """The command-line form ``[CONFIG.yaml] [section.key=value ...]``: ``load_config`` of the file
    (when the first word is not a setting) and the overrides, over ``base``."""
    path = args[0] if args and "=" not in args[0] else None
    return load_config(path, list(args[1:] if path else args), base=base)


def _nest(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``{'run.steps': 5, 'data': {'task': 'x'}}`` -> ``{'run': {'steps': 5}, 'data': {'task': 'x'}}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        head, _, rest = key.partition(".")
        out = _merge(out, {head: _nest({rest: value}) if rest else value})
    return out


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``config`` with some fields replaced: ``with_overrides(c, run={'steps': 5})``.
    The replaced fields count as given explicitly, as the ones ``config`` had already."""
    new = _build(Config, _merge(config.to_dict(), sections), "config")
    return _set_explicit(new, explicit_keys(config) | _dotted(sections))


def with_defaults(config: Config, **sections: dict[str, Any]) -> Config:
    """Like ``with_overrides``, but the replaced fields stay defaults, not explicit settings
    (a bundled task's values: applying a task again may still replace them)."""
    new = _build(Config, _merge(config.to_dict(), sections), "config")
    return _set_explicit(new, explicit_keys(config))


def explicit_keys(config: Config) -> frozenset[str]:
    """The dotted keys the user gave (``base``, YAML file and overrides of ``load_config``, and
    ``with_overrides``): a bundled task's defaults fill in only the others, so a setting given
    equal to the global default (``reward.spec=chrf``) still wins. For a Config built directly,
    the keys whose value differs from the default."""
    given = config.__dict__.get("_explicit")
    if given is not None:
        return given
    default = Config()
    return frozenset(k for k in all_keys() if get(config, k) != get(default, k))


def _set_explicit(config: Config, keys: frozenset[str]) -> Config:
    # Not a dataclass field: it is bookkeeping, not a setting (no flag, no docs, not saved).
    object.__setattr__(config, "_explicit", frozenset(keys))
    return config


def _dotted(nested: dict[str, Any], prefix: str = "") -> frozenset[str]:
    """``{'data': {'task': 'x'}}`` -> ``{'data.task'}``."""
    keys: set[str] = set()
    for key, value in nested.items():
        keys |= _dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return frozenset(keys)

