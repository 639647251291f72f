"""Task `summarization`: a man page's DESCRIPTION -> the one-line summary of its NAME line.

Source: the English manual pages under /usr/share/man/man*/ (translated subdirectories are
left out), rendered with `man -l` as plain text. "memcpy - copy memory area" gives the
reference "copy memory area"; the prompt is the start of the DESCRIPTION section.

Build (from the repository root): ``python -m recipes.tasks --task summarization``.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from recipes.tasks.common import Pair, merge_duplicates, split_pairs, squash, write_zipf_task

MAN_ROOT = Path("/usr/share/man")
MAX_WORDS = 120
MIN_PROMPT_WORDS = 8
SUMMARY_WORDS = (2, 20)
FAMILY_LIMIT = 300  # a name prefix with more pages than this is a generated family (gcloud_*)
TEMPLATE_LIMIT = 4  # a summary pattern shared by more pages than this is templated
SEED = 17

_HEADING = re.compile(r"^[A-Z][A-Z0-9 ,/&()-]*$")
_DASH = re.compile(r"\s+(?:-|\\-|\u2010|\u2011|\u2012|\u2013|\u2014|\u2212)+\s+")
_CHAR_MAP = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2212": "-", "\u2013": "-", "\u2014": "--",
                           "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})


def family(page_name: str) -> str:
    """The name prefix that groups generated pages: 'gcloud_compute_ssh' -> 'gcloud'."""
    return re.split(r"[_.:-]", page_name, maxsplit=1)[0].lower()


def page_name(path: Path) -> str:
    """'memcpy.3.gz' -> 'memcpy'; 'Algorithm::Diff.3pm.gz' -> 'Algorithm::Diff'."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.rsplit(".", 1)[0] if "." in name else name


def list_pages(man_root: Path = MAN_ROOT) -> list[Path]:
    """English pages: man*/ files that are neither symbolic links nor '.so' redirects."""
    pages = []
    for section in sorted(Path(man_root).glob("man*")):
        for path in sorted(section.iterdir()):
            if path.is_symlink() or not path.is_file():
                continue
            opener = gzip.open if path.suffix == ".gz" else open
            try:
                with opener(path, "rb") as f:
                    head = f.read(4096).decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            body = [ln for ln in head.splitlines() if ln.strip() and not re.match(r"^[.']\s*\\\"", ln)]
            if body and body[0].startswith(".so "):
                continue
            pages.append(path)
    return pages


def render(path: Path, timeout: float = 20.0) -> str:
    """Plain-text rendering of one page, no hyphenation; '' on failure.

    The width is 1000 columns so that a paragraph is one line: at 80 columns a line-end hyphen
    is ambiguous (a compound's "user-level" or a word broken by mdoc's own hyphenation).
    """
    env = dict(os.environ, MANWIDTH="1000", LC_ALL="C.UTF-8", MANROFFOPT="-rHY=0", MAN_KEEP_FORMATTING="")
    env.pop("MANPAGER", None)
    try:
        done = subprocess.run(["man", "-P", "cat", "-l", str(path)], env=env, capture_output=True,
                              timeout=timeout, check=False)
    except (subprocess.TimeoutExpired, OSError):
        return ""
    return done.stdout.decode("utf-8", "replace")


def sections(text: str) -> dict[str, list[str]]:
    """Heading -> body lines of a rendered page (headings are unindented upper-case lines)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and _HEADING.match(line.strip()):
            current = line.strip()
            out.setdefault(current, [])
        elif current is not None:
            out[current].append(line)
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(lines: list[str]) -> str:
    """Join wrapped lines; a line ending in a word's hyphen ('user-' / 'level') joins without a
    space, since with hyphenation off every line-end hyphen is a real one."""
    text = ""
    for line in lines:
        line = line.strip()
        text += line if re.search(r"[A-Za-z]-$", text) else (" " + line if text else line)
    return text


def _paragraphs(lines: list[str]) -> list[tuple[int, str, bool]]:
    """(indent, joined text, is_term) per blank-line separated paragraph.

    A first line followed by deeper-indented lines is split off as a term: a subsection heading
    or the tag of a tagged list (an option, an apt-get command), with its body after it.
    """
    paras, block = [], []
    for line in lines + [""]:
        if line.strip():
            if len(block) == 1 and _indent(line) > _indent(block[0]):
                paras.append((_indent(block[0]), block[0].strip(), True))
                block = []
            block.append(line)
        elif block:
            paras.append((_indent(block[0]), _join(block), False))
            block = []
    return paras


def _cap_words(text: str, limit: int = MAX_WORDS) -> str:
    """At most ``limit`` words, cut at the last sentence end when that keeps half of them."""
    words = text.split()
    if len(words) <= limit:
        return text
    cut = " ".join(words[:limit])
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if end > 0 and len(cut[:end + 1].split()) >= limit // 2:
        return cut[:end + 1]
    return cut


def parse_page(text: str) -> tuple[str, str] | None:
    """(description, summary) of a rendered page, or None when either is missing.

    The description is the DESCRIPTION section's paragraphs at the indentation of its first
    prose paragraph, in order, until about MAX_WORDS words.
    """
    secs = sections(text.translate(_CHAR_MAP))
    name_lines = secs.get("NAME")
    desc_lines = secs.get("DESCRIPTION")
    if not name_lines or not desc_lines:
        return None
    name_line = squash(" ".join(name_lines))
    parts = _DASH.split(name_line, maxsplit=1)
    if len(parts) != 2:
        return None
    summary = parts[1].strip().rstrip(".").strip()
    if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1]:
        return None
    paras = _paragraphs(desc_lines)
    prose = [indent for indent, para, term in paras if not term and not para.startswith("-")]
    if not prose:
        return None
    base = prose[0]  # subsection headings sit left of it, examples and list bodies right of it
    kept: list[str] = []
    for indent, para, term in paras:
        if term or indent != base or para.startswith("-"):
            if kept:
                break  # a subsection, an example or a list: the introduction is over
            continue
        kept.append(squash(para))
        if len(" ".join(kept).split()) >= MAX_WORDS:
            break
    description = _cap_words(" ".join(kept))
    if len(description.split()) < MIN_PROMPT_WORDS:
        return None
    return description, summary


def summary_template(name: str, summary: str) -> str:
    """The summary with words of the page name masked: spots generated, near-identical pages."""
    name_words = {w.lower() for w in re.split(r"[^A-Za-z0-9]+", name) if w}
    return " ".join("*" if re.sub(r"[^A-Za-z0-9]", "", w).lower() in name_words else w.lower()
                    for w in summary.split())


def collect(man_root: Path = MAN_ROOT, progress: bool = True,
            cache: dict[str, str] | None = None) -> tuple[list[Pair], Counter]:
    """Pairs from every English page outside generated families; also the drop statistics."""
    pages = list_pages(man_root)
    families = Counter(family(page_name(p)) for p in pages)
    dropped: Counter = Counter()
    candidates = []
    for path in pages:
        if families[family(page_name(path))] > FAMILY_LIMIT:
            dropped[f"family {family(page_name(path))}_*"] += 1
        else:
            candidates.append(path)
    found = []
    for i, path in enumerate(candidates, start=1):
        key = str(path)
        text = cache[key] if cache is not None and key in cache else render(path)
        if cache is not None:
            cache[key] = text
        parsed = parse_page(text)
        if parsed is None:
            dropped["NAME summary or DESCRIPTION missing or out of range"] += 1
        else:
            found.append((path, *parsed))
        if progress and (i % 250 == 0 or i == len(candidates)):
            print(f"  summarization: rendered {i}/{len(candidates)} pages", file=sys.stderr, flush=True)
    templates = Counter(summary_template(page_name(p), s) for p, _, s in found)
    pairs = []
    for path, description, summary in found:
        template = summary_template(page_name(path), summary)
        if templates[template] > TEMPLATE_LIMIT:
            dropped[f"templated summary '{template}'"] += 1
            continue
        pairs.append(Pair(description, [summary], 1,
                          {"page": page_name(path), "section": path.parent.name[3:]}))
    return pairs, dropped


INTRO = """
Summarize the DESCRIPTION of a manual page into the one-line summary of its NAME section
("memcpy - copy memory area" -> "copy memory area").

Template: `Summarize: {prompt}\\nSummary:`. Reward `rouge_l`; metric ROUGE-L, second metric chrF.
`rollout.max_new_tokens` = 24: the p95 summary is about 10 words (~60 characters, ~15 tokens of
a byte-level BPE tokenizer).

## Source and licence

The English manual pages `/usr/share/man/man*/` of a Debian 12 (bookworm) machine (translated
subdirectories such as `de/` are not read), rendered with `man -P cat -l PAGE` under
`MANWIDTH=1000 LC_ALL=C.UTF-8 MANROFFOPT=-rHY=0` (no hyphenation; 1000 columns so that a
paragraph is not wrapped and no line-end hyphen has to be guessed at), one subprocess per page
with a 20-second timeout. Each page is part of the Debian package that installs it and carries that
package's licence (the Linux man-pages project's pages use several free licences; GNU pages
GFDL/GPL; Perl module pages the Perl licence, ...; see `/usr/share/doc/<package>/copyright`).

## Cleaning rules

1. Skip symbolic links and `.so` redirect pages (aliases of another page).
2. Skip generated families: a name prefix (up to the first `_ . : -`) with more than 300 pages
   (on this machine only `gcloud_*`, the Google Cloud SDK reference), before rendering.
3. NAME: the text after the first ` - ` (or `\\-`, en/em dash) is the summary, its final period
   removed; 2-20 words required.
4. DESCRIPTION: the paragraphs at the indentation of its first prose paragraph, in order,
   until 120 words, stopping (once text was collected) at the first block indented
   differently (an example), a heading or list tag (a line followed by deeper-indented
   lines) or a block starting with `-` (an option list); cut
   at a sentence end when possible; at least 8 words required.
5. Typographic characters are mapped to ASCII (U+2010 hyphen, U+2212 minus, curly quotes,
   no-break space); wrapped lines are joined (without a space after a line-end hyphen that
   follows a letter: "user-" + "level"); whitespace is collapsed.
6. Templated summaries: the summary with words of the page name masked by `*` (e.g.
   "API function", "The * EVP_MD implementation") is a pattern; a pattern shared by more than
   4 pages is a generated family and all its pages are left out.
7. Pages with the same description are merged into one prompt (their summaries become
   several references).
"""


def build(out_dir: Path, man_root: Path = MAN_ROOT, cap: int = 500, progress: bool = True,
          cache: dict[str, str] | None = None) -> dict[str, int]:
    """Render, clean, split and write the snapshot and datasheet; returns rows per split."""
    pairs, dropped = collect(man_root, progress, cache)
    pairs = merge_duplicates(pairs)
    splits = split_pairs(pairs, cap=cap)
    return write_zipf_task("summarization", "Task `summarization` (man page DESCRIPTION -> NAME summary)", INTRO,
                           splits, out_dir, seed=SEED, scale=max(1.0, len(pairs) / 2), dropped=dropped,
                           drops_title="Pages left out", unit=("reason", "pages"), cap=cap)
