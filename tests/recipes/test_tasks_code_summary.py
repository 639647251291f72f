"""code_summary builder: docstrings leave the prompt, the first sentence becomes the reference."""

from __future__ import annotations

import ast

from recipes.tasks.code_summary import (TRUNCATION_MARK, build, first_sentence, module_files,
                                     pairs_from_source, truncate)
from recipes.tasks.common import SPLITS, read_snapshot

SOURCE = '''
import os


def parse_line(line, sep=","):
    """Split one line of the file into fields. Empty fields are kept.

    More detail that is not part of the reference.
    """
    # a comment stays
    return line.split(sep)


def _private(x):
    """Private helpers are not tasks."""
    return x


def undocumented(x):
    return x + 1


def abstract(x):
    """Only a docstring here, so nothing to summarize."""


class Store:
    """Keep values by key, e.g. a small cache. Not thread safe."""

    def get(self, key):
        """Return the value stored under the key."""
        return self._data[key]

    def hook(self):
        """Called when the store changes; does nothing by default."""

    @property
    def size(self):
        """Number of stored values."""
        return len(self._data)
'''


def pairs_by_name():
    pairs, dropped = pairs_from_source(SOURCE, "demo")
    return {p.meta["qualname"]: p for p in pairs}, dropped


def test_docstrings_are_removed_from_the_prompt():
    pairs, _ = pairs_by_name()
    func = pairs["parse_line"]
    assert func.references == ["Split one line of the file into fields."]
    assert '"""' not in func.prompt and "Split one line" not in func.prompt and "More detail" not in func.prompt
    assert func.prompt.startswith("def parse_line(line, sep=\",\"):\n    # a comment stays")
    ast.parse(func.prompt)
    cls = pairs["Store"]
    assert cls.references == ["Keep values by key, e.g. a small cache."]
    assert "Return the value" not in cls.prompt and '"""' not in cls.prompt
    assert cls.prompt.startswith("class Store:\n    def get(self, key):\n        return")
    assert "    def hook(self):\n        ..." in cls.prompt  # a docstring-only body keeps valid code
    ast.parse(cls.prompt)


def test_methods_are_dedented_and_keep_decorators():
    pairs, _ = pairs_by_name()
    assert pairs["Store.get"].prompt == "def get(self, key):\n    return self._data[key]"
    assert pairs["Store.size"].prompt.startswith("@property\ndef size(self):")


def test_private_undocumented_and_empty_definitions_are_left_out():
    pairs, dropped = pairs_by_name()
    assert set(pairs) == {"parse_line", "Store", "Store.get", "Store.size"}
    assert dropped["no docstring"] == 1
    assert dropped["body is only a docstring, or docstring shares a line"] == 2


def test_first_sentence_and_truncation():
    assert first_sentence("Compute it, i.e. the sum. Then stop.") == "Compute it, i.e. the sum."
    assert first_sentence("  Return the\n   value.\n\n  Details.") == "Return the value."
    code = "\n".join(f"x{i} = {i}" for i in range(100))
    cut = truncate(code, max_lines=40, max_chars=1500)
    assert cut.splitlines()[-1] == TRUNCATION_MARK and len(cut.splitlines()) == 41
    assert truncate("a = 1", 40, 1500) == "a = 1"
    assert len(truncate("y = 1\n" * 400, 400, 100)) <= 100 + len(TRUNCATION_MARK)


def test_module_files_skip_tests_and_private_modules(tmp_path):
    for rel in ["json/__init__.py", "json/decoder.py", "test/test_json.py", "idlelib/run.py",
                "_pyio.py", "email/_parseaddr.py", "site-packages/pkg/mod.py", "shutil.py"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    found = {p.relative_to(tmp_path).as_posix() for p in module_files(tmp_path)}
    assert found == {"json/__init__.py", "json/decoder.py", "shutil.py"}


def test_build_on_a_tiny_library(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "demo.py").write_text(SOURCE)
    sizes = build(tmp_path / "out", root=lib)
    rows = [r for s in SPLITS for r in read_snapshot(tmp_path / "out" / f"{s}.jsonl.gz")]
    assert sum(sizes.values()) == 4 == len(rows)
    assert sorted(r["count"] for r in rows)[-1] == 2  # Zipf scale N/2 for the rank-1 prompt
    assert {r["meta"]["module"] for r in rows} == {"demo"}
