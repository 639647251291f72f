"""Regenerate docs/config.md from the config dataclasses: `python scripts/gen_config_docs.py`."""

from pathlib import Path

from rlft.config import config_markdown

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    out.write_text(config_markdown(), encoding="utf-8")
    print(out)
