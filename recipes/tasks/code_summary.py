"""Task `code_summary`: a Python function or class without its docstring -> the docstring's first sentence.

Source: the standard library of the running interpreter (``sysconfig.get_paths()["stdlib"]``),
read with ``ast``. The prompt is the definition's source with every docstring inside it
removed; the reference is the first sentence of its own docstring.

Build (from the repository root): ``python -m recipes.tasks --task code_summary``.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import sysconfig
from collections import Counter
from pathlib import Path

from recipes.tasks.common import Pair, merge_duplicates, split_pairs, squash, write_zipf_task

MAX_LINES = 40
MAX_CHARS = 1500
REFERENCE_WORDS = (3, 30)
SEED = 23
TRUNCATION_MARK = "# ..."
# Test suites, the IDLE and 2to3 applications, demos, bundled wheels and generated codecs.
SKIP_PARTS = {"test", "tests", "idle_test", "idlelib", "lib2to3", "site-packages", "dist-packages",
              "turtledemo", "ensurepip", "encodings", "pydoc_data", "__pycache__", "lib-dynload"}

_Def = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def module_files(root: Path) -> list[Path]:
    """Public stdlib modules: no skipped directory, no private module (leading '_')."""
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in SKIP_PARTS or part.startswith("config-") for part in rel[:-1]):
            continue
        if any(part.startswith("_") and part not in ("__init__.py", "__main__.py") for part in rel):
            continue
        files.append(path)
    return files


def first_sentence(docstring: str) -> str:
    """First sentence of the docstring's first paragraph, whitespace collapsed."""
    paragraph = squash(inspect.cleandoc(docstring).split("\n\n", 1)[0])
    match = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?](?=\s+[A-Z(`'\"])", paragraph)
    return paragraph[:match.end()] if match else paragraph


def _docstring_node(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0]
    return None


def _owns_lines(lines: list[str], expr: ast.Expr) -> bool:
    """True when the docstring is alone on its lines, so dropping them leaves valid code."""
    first, last = lines[expr.lineno - 1], lines[expr.end_lineno - 1]
    return first[:expr.col_offset].strip() == "" and last[expr.end_col_offset:].strip() in ("", ";")


def strip_docstrings(source_lines: list[str], node: ast.AST) -> str | None:
    """The node's source (decorators included) with all docstrings inside it removed.

    A nested function or class whose body was only a docstring gets ``...`` instead, so the
    code still parses. Returns None when the node itself has nothing but a docstring, or when a
    docstring shares a line with code.
    """
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    end = node.end_lineno
    drop: dict[int, str | None] = {}  # 1-based line -> replacement (None: delete)
    for inner in ast.walk(node):
        if not isinstance(inner, (*_Def, ast.Module)):
            continue
        doc = _docstring_node(inner)
        if doc is None:
            continue
        if not _owns_lines(source_lines, doc):
            return None
        only_statement = len(inner.body) == 1
        if only_statement and inner is node:
            return None
        for line in range(doc.lineno, doc.end_lineno + 1):
            drop[line] = None
        if only_statement:
            drop[doc.lineno] = " " * doc.col_offset + "..."
        elif doc.end_lineno < end and not source_lines[doc.end_lineno].strip():
            drop[doc.end_lineno + 1] = None  # the blank line that set the docstring off
    kept = []
    for number in range(start, end + 1):
        if number in drop:
            if drop[number] is not None:
                kept.append(drop[number])
        else:
            kept.append(source_lines[number - 1])
    indent = len(kept[0]) - len(kept[0].lstrip())
    text = "\n".join(ln[indent:] if ln[:indent].strip() == "" else ln.lstrip() for ln in kept)
    return text.rstrip()


def truncate(code: str, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> str:
    """Whole lines up to both limits, then a TRUNCATION_MARK line if anything was cut."""
    lines = code.split("\n")
    kept, size = [], 0
    for line in lines:
        if len(kept) >= max_lines or size + len(line) + 1 > max_chars:
            return "\n".join(kept + [TRUNCATION_MARK])
        kept.append(line)
        size += len(line) + 1
    return code


def pairs_from_source(source: str, module: str) -> tuple[list[Pair], Counter]:
    """Pairs for the public functions, classes and methods of one module's source."""
    dropped: Counter = Counter()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        dropped["module does not parse"] += 1
        return [], dropped
    lines = source.splitlines()
    targets: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, _Def) and not node.name.startswith("_"):
            targets.append((node.name, node))
            if isinstance(node, ast.ClassDef):
                targets += [(f"{node.name}.{m.name}", m) for m in node.body
                            if isinstance(m, _Def) and not m.name.startswith("_")]
    pairs = []
    for qualname, node in targets:
        docstring = ast.get_docstring(node, clean=False)
        if not docstring:
            dropped["no docstring"] += 1
            continue
        reference = first_sentence(docstring)
        n_words = len(reference.split())
        if not REFERENCE_WORDS[0] <= n_words <= REFERENCE_WORDS[1]:
            dropped["docstring sentence under 3 or over 30 words"] += 1
            continue
        if "->" in reference or re.match(r"^[\w.]+\(.*\)\s*$", reference):
            dropped["docstring starts with a signature"] += 1
            continue
        code = strip_docstrings(lines, node)
        if code is None:
            dropped["body is only a docstring, or docstring shares a line"] += 1
            continue
        try:
            ast.parse(code)
        except SyntaxError:
            dropped["stripped source does not parse"] += 1
            continue
        kind = "class" if isinstance(node, ast.ClassDef) else "function"
        pairs.append(Pair(truncate(code), [reference], 1,
                          {"module": module, "qualname": qualname, "kind": kind}))
    return pairs, dropped


def collect(root: Path | None = None) -> tuple[list[Pair], Counter]:
    root = Path(root) if root is not None else stdlib_dir()
    pairs, dropped = [], Counter()
    for path in module_files(root):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        found, why = pairs_from_source(path.read_text(encoding="utf-8", errors="replace"), module)
        pairs += found
        dropped += why
    return pairs, dropped


INTRO = f"""
Summarize Python code: the source of a standard-library function, method or class with its
docstring removed -> the first sentence of that docstring.

Template: `{{prompt}}\\n# Summary:`. Reward `rouge_l`; metric ROUGE-L, second metric chrF.
`rollout.max_new_tokens` = 32: the p95 reference is 18 words (109 characters, ~28 tokens of
a byte-level BPE tokenizer). Prompts are long (up to {MAX_CHARS} characters), so the
task sets `data.max_prompt_tokens` = 512.

## Source and licence

The `.py` files of the Python {sys.version_info.major}.{sys.version_info.minor} standard library of the interpreter that ran
the build (`sysconfig.get_paths()["stdlib"]`), read with `ast`.
Licence: Python Software Foundation License Version 2 (PSF-2.0).

## Cleaning rules

1. Modules: skip private modules and packages (a path component starting with `_`, except
   `__init__.py`), `config-*` and the directories
   {", ".join(f"`{part}`" for part in sorted(SKIP_PARTS))}.
2. Definitions: public module-level functions and classes and the public methods of those
   classes (names starting with `_`, dunder methods included, are left out).
3. Reference: the first sentence of the first paragraph of the docstring (cleaned with
   `inspect.cleandoc`, whitespace collapsed; a sentence ends at `.`/`!`/`?` followed by a
   capital, not after "e.g."/"i.e."/"etc"). 3-30 words; a docstring that starts with a
   signature (`name(...)` or `-> type`) is left out.
4. Prompt: the definition's source with its decorators, with every docstring inside it (its
   own and those of nested methods) removed; a nested body left empty gets `...`. Dedented.
   Left out when the definition has nothing but a docstring or a docstring shares a line with
   code; the result must parse. Truncated at {MAX_LINES} lines / {MAX_CHARS} characters (whole
   lines) with a final `{TRUNCATION_MARK}` line.
5. Identical sources (e.g. the same method in two classes) are merged into one prompt.
"""


def build(out_dir: Path, root: Path | None = None, cap: int = 500) -> dict[str, int]:
    """Collect, clean, split and write the snapshot and datasheet; returns rows per split."""
    pairs, dropped = collect(root)
    pairs = merge_duplicates(pairs)
    splits = split_pairs(pairs, cap=cap)
    return write_zipf_task("code_summary", "Task `code_summary` (Python source -> docstring sentence)", INTRO,
                           splits, out_dir, seed=SEED, scale=max(1.0, len(pairs) / 2), dropped=dropped,
                           drops_title="Definitions left out", unit=("reason", "definitions"), cap=cap)
