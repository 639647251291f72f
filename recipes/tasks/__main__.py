"""Rebuild the bundled task snapshots from their sources (Debian files, PyPI packages).

    python -m recipes.tasks                    # all tasks
    python -m recipes.tasks --task dialogue    # one task

Run from the repository root. Writes src/rlft/assets/tasks/<name>/{train,validation,test}.jsonl.gz
and DATASHEET.md (into the installed package's directory; with an editable install that is the
source tree). The build is single-process and I/O-bound; `summarization` renders ~3,000 man
pages (minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from recipes.tasks import BUILDERS, build
from rlft.tasks import task_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.tasks", description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", choices=sorted(BUILDERS),
                        help="task to build (repeatable); default: all")
    parser.add_argument("--out", type=Path, default=None,
                        help="write into OUT/<task>/ instead of the package's assets directory")
    parser.add_argument("--man-cache", type=Path, default=None,
                        help="summarization: JSON file caching rendered man pages between runs")
    args = parser.parse_args(argv)
    for name in args.task or list(BUILDERS):
        out = (args.out / name) if args.out else task_dir(name)
        kwargs = {}
        cache = None
        if name == "summarization" and args.man_cache is not None:
            cache = json.loads(args.man_cache.read_text()) if args.man_cache.exists() else {}
            kwargs["cache"] = cache
        start = time.time()
        print(f"building {name} -> {out}", file=sys.stderr, flush=True)
        sizes = build(name, out, **kwargs)
        if cache is not None:
            args.man_cache.write_text(json.dumps(cache))
        size = sum(p.stat().st_size for p in out.glob("*.jsonl.gz"))
        print(f"{name}: {sizes} ({size / 1e6:.2f} MB gzip, {time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
