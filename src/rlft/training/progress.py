"""A live progress bar (tqdm) that shows reward, KL and step time; silent when disabled."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "rl") -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int, figures: dict[str, float]) -> None:
        if self._bar is None:
            return
        if figures:
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in figures.items()}, refresh=False)
        self._bar.update(n)

    def write(self, message: str) -> None:
        if self._bar is None:
            print(message, file=sys.stderr)
        else:
            self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
