"""User-facing errors: one line that names the file, line and field at fault."""

from __future__ import annotations


class RlftError(ValueError):
    """An error caused by the user's input (config, data, model path, reward).

    The CLI prints ``str(err)`` as a single line and exits with status 2, without a traceback.
    """


def where(path: str | None = None, line: int | None = None, field: str | None = None) -> str:
    """Format a location prefix such as ``data.jsonl:12: field 'reference'``."""
    parts = []
    if path is not None:
        parts.append(f"{path}:{line}" if line is not None else str(path))
    if field is not None:
        parts.append(f"field '{field}'")
    return ": ".join(parts)
