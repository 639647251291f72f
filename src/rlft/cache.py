"""Where rlft keeps what it builds once per machine (converted models, measurements): one root."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "RLFT_CACHE_DIR"


def cache_dir() -> Path:
    """``$RLFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/rlft``, else ``~/.cache/rlft``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlft"
