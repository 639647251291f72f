"""The settings reference, generated from the dataclasses: ``rlft --help`` and docs/config.md."""

from __future__ import annotations

import dataclasses

from rlft.config.schema import Config, field_choices, field_types


def _help(cls: type, f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    if "range" in f.metadata:
        text += f" Must be {f.metadata['range']}."
    allowed = field_choices(cls, f.name)
    return f"{text} Must be one of {', '.join(allowed)}." if allowed else text


def help_text(cls: type = Config, prefix: str = "") -> str:
    """The settings reference shown by ``rlft --help`` and written to docs/config.md."""
    lines = []
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"\n[{prefix}{f.name}]")
            lines.append(help_text(tp, f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {prefix}{f.name}={default!r}\n      {_help(cls, f)}")
    return "\n".join(lines)


def config_markdown() -> str:
    """docs/config.md: every setting with its default and documentation (a test keeps it in sync)."""
    lines = ["# Settings", "", "Generated from `src/rlft/config/schema.py` by `python scripts/gen_config_docs.py`; "
             "set them in a YAML file (`section:` then `key: value`) or as `section.key=value` on the command line.", ""]
    for section in dataclasses.fields(Config):
        cls = field_types(Config)[section.name]
        lines += [f"## `{section.name}`", "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"| `{section.name}.{f.name}` | `{default!r}` | {_help(cls, f)} |")
        lines.append("")
    return "\n".join(lines)
