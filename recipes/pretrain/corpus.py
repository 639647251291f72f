"""Step 1 of the pretraining recipe (``python -m recipes.pretrain``): the corpus.

(a) The *train* splits of the bundled tasks, rendered exactly as RL and SFT feed them:
``ids(template.format(prompt)) + ids(reference) + [EOS]`` (prompt and reference are tokenized
separately, as ``rlft.training.sft.encode_pairs`` does, so the model sees the same token boundary
it will be sampled from), every reference. (b) Other local text: English documentation under
/usr/share/doc (no changelogs, no copyright files), the licences in /usr/share/common-licenses,
the Python standard library's source, and the Chinese side (msgstr) of the zh_CN and zh_TW
gettext catalogs. Any (b) chunk that contains a validation or test prompt or reference of any
task is dropped (``LeakFilter``). Documents are then hash-split into train and held-out.
"""

from __future__ import annotations

import gzip
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from recipes.pretrain.config import PretrainConfig
from rlft.errors import RlftError

DOC_ROOT, LICENSE_ROOT = Path("/usr/share/doc"), Path("/usr/share/common-licenses")
LOCALE_ROOT = Path("/usr/share/locale")
CHUNK_CHARS = 3000  # (b) text is cut into chunks of at most this many characters
# Code is cut only before a definition (module level or a method), so a function's docstring and
# body stay in one chunk and the leak filter sees them together.
CODE_BOUNDARY = r"\n(?=(?:    )?(?:def |async def |class |@))"
ANCHOR = 12  # needles at least this long are searched inside text; shorter ones must equal a line


@dataclass
class Document:
    """One unit of the corpus. Task documents carry a ``completion`` (the reference), tokenized
    separately from ``text`` (the rendered prompt); plain documents have ``completion=None``."""

    source: str
    text: str
    completion: str | None = None


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class LeakFilter:
    """Finds validation/test strings inside corpus text.

    Every needle (a prompt or reference) is compared after whitespace is collapsed and case
    folded (a capitalised copy of a test reference is still a leak). A needle of
    at least ``ANCHOR`` characters is a leak anywhere inside the text: its first ANCHOR
    characters index a dict, a window slides over the text and each hit is verified in full.
    A shorter needle ("OK", "lol", "打开文件") only counts when it is a whole line, since such
    strings occur innocently inside other text.
    """

    def __init__(self, needles: Iterable[str]):
        self.lines: set[str] = set()
        self.by_anchor: dict[str, list[str]] = defaultdict(list)
        for needle in needles:
            flat = self.normalize(needle)
            if not flat:
                continue
            self.lines.add(flat)
            if len(flat) >= ANCHOR:
                self.by_anchor[flat[:ANCHOR]].append(flat)

    @staticmethod
    def normalize(text: str) -> str:
        return squash(text).lower()

    def leaks(self, text: str) -> bool:
        if any(self.normalize(line) in self.lines for line in text.splitlines()):
            return True
        flat, get = self.normalize(text), self.by_anchor.get
        for i in range(len(flat) - ANCHOR + 1):
            found = get(flat[i:i + ANCHOR])
            if found and any(flat.startswith(needle, i) for needle in found):
                return True
        return False


def task_rows(cfg: PretrainConfig, name: str, split: str) -> list[dict[str, Any]]:
    from recipes.tasks.common import read_snapshot

    path = snapshot_dir(cfg, name) / f"{split}.jsonl.gz"
    if not path.is_file():
        raise RlftError(f"{path}: task snapshot missing (build it with `python -m recipes.tasks --task {name}`)")
    return list(read_snapshot(path))


def snapshot_dir(cfg: PretrainConfig, name: str) -> Path:
    """``cfg.tasks_dir/<name>``, or the bundled snapshot the runtime loads (``rlft.tasks.task_dir``)."""
    from rlft.tasks import task_dir

    return Path(cfg.tasks_dir) / name if cfg.tasks_dir else task_dir(name)


def snapshot_hashes(cfg: PretrainConfig) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every snapshot file the build read: the leak filter is only
    valid for these exact splits, so a rebuilt snapshot means a rebuilt model."""
    import hashlib

    out = {}
    for name in task_names(cfg):
        root = snapshot_dir(cfg, name)
        for split in ("train", "validation", "test"):
            out[f"{name}/{split}"] = hashlib.sha256((root / f"{split}.jsonl.gz").read_bytes()).hexdigest()[:16]
    return out


def task_names(cfg: PretrainConfig) -> list[str]:
    return [name.strip() for name in cfg.tasks.split(",") if name.strip()]


def held_out_needles(row: dict[str, Any]) -> list[str]:
    """What a held-out row must not leak: its prompt, its references, and the prompt without its
    first line (a code prompt is a definition with its docstring removed, so only its body
    appears verbatim in the source file)."""
    body = "\n".join(line for line in row["prompt"].split("\n")[1:] if line.strip() != "# ...")
    return [row["prompt"], *row["references"], *([body] if len(body) >= 4 * ANCHOR else [])]


def task_documents(cfg: PretrainConfig) -> tuple[list[Document], LeakFilter]:
    """(a): one Document per (train prompt, reference), at most ``task_mb`` per task (a hash
    subset of prompts); and the filter of every validation and test row of the same tasks."""
    from rlft.data.templates import render_prompt
    from rlft.tasks import get_task
    from recipes.tasks.common import unit_hash

    docs, needles = [], []
    for name in task_names(cfg):
        template, size = get_task(name).template, 0
        rows = sorted(task_rows(cfg, name, "train"), key=lambda r: unit_hash(r["prompt"], "pretrain:"))
        for row in rows:
            if size >= cfg.task_mb * 1e6:
                break
            text = render_prompt(template, row["prompt"])
            for ref in row["references"]:
                docs.append(Document(f"task:{name}", text, ref))
                size += len((text + ref).encode("utf-8"))
        for split in ("validation", "test"):
            for row in task_rows(cfg, name, split):
                needles += held_out_needles(row)
    return docs, LeakFilter(needles)


def chunks(text: str, limit: int = CHUNK_CHARS, boundary: str = r"\n\s*\n") -> Iterator[str]:
    """Pieces of ``text`` between ``boundary`` matches, grouped into chunks of at most ``limit``
    characters (a longer piece is cut at line ends, then hard)."""
    buf = ""
    for para in re.split(boundary, text):
        para = para.strip("\n")
        if not para.strip():
            continue
        if buf and len(para) > limit:
            yield buf
            buf = ""
        while len(para) > limit:
            cut = para.rfind("\n", 0, limit)
            cut = cut if cut > 0 else limit
            yield para[:cut]
            para = para[cut:].lstrip("\n")
        if buf and len(buf) + len(para) + 2 > limit:
            yield buf
            buf = ""
        buf = f"{buf}\n\n{para}" if buf else para
    if buf:
        yield buf


def _read_text(path: Path) -> str | None:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in text[:20000])
    return text if text and printable >= 0.97 * min(len(text), 20000) else None


_DOC_FILE = re.compile(r"^(readme|news|faq|todo|thanks|bugs|hacking|usage|.*\.(txt|md|rst))(\.gz)?$", re.I)


def doc_files() -> list[Path]:
    """English plain-text documentation: README/NEWS/FAQ/... and *.txt/*.md/*.rst, no
    changelogs or copyright files (which repeat the licences), translated docs left out."""
    if not DOC_ROOT.is_dir():
        return []
    found = []
    for path in DOC_ROOT.rglob("*"):
        name = path.name.lower()
        if path.is_symlink() or not path.is_file() or "changelog" in name or "copyright" in name:
            continue
        if _DOC_FILE.match(path.name) and not re.search(r"[._-](de|fr|es|ja|ru|zh|it|pt|ko)\b", name):
            found.append(path)
    return found


def code_files() -> list[Path]:
    """Standard-library sources outside the test suites (the code_summary task's skip list)."""
    from recipes.tasks.code_summary import SKIP_PARTS, stdlib_dir

    root = stdlib_dir()
    return [p for p in root.rglob("*.py")
            if not any(part in SKIP_PARTS or part.startswith("config-") for part in p.relative_to(root).parts[:-1])]


def capped_chunks(source: str, paths: list[Path], cap_mb: float, leak: LeakFilter,
                  dropped: Counter, boundary: str = r"\n\s*\n") -> list[Document]:
    """Chunks of ``paths`` (in a seeded-hash order, so the cap takes a spread of packages rather
    than the alphabet's start) until ``cap_mb`` of UTF-8; leaking chunks are counted and dropped."""
    from recipes.tasks.common import sha256_hex

    docs, size, cap = [], 0, int(cap_mb * 1e6)
    for path in sorted(paths, key=lambda p: sha256_hex(str(p))):
        text = _read_text(path) if size < cap else None
        for chunk in chunks(text or "", boundary=boundary):
            if leak.leaks(chunk):
                dropped[source] += 1
                continue
            docs.append(Document(source, chunk))
            size += len(chunk.encode("utf-8"))
        if size >= cap:
            break
    return docs


_MNEMONIC = re.compile(r"\s*[(（][_&][A-Za-z0-9][)）]")


def chinese_documents(cap_mb: float, leak: LeakFilter, dropped: Counter) -> list[Document]:
    """The msgstr side of the zh_CN and zh_TW catalogs, one document per catalog (one message a
    line, mnemonics removed). A message is dropped when its English msgid is a validation/test
    translation prompt or its Chinese text leaks, so no held-out pair is seen even in halves."""
    from recipes.tasks.translation import clean_pair, read_mo

    docs, size, cap = [], 0, int(cap_mb * 1e6)
    paths = sorted((LOCALE_ROOT / "zh_CN" / "LC_MESSAGES").glob("*.mo")) + \
        sorted((LOCALE_ROOT / "zh_TW" / "LC_MESSAGES").glob("*.mo"))
    for path in paths:
        if path.is_symlink() or size >= cap:
            continue
        try:
            entries = read_mo(path.read_bytes())
        except (OSError, ValueError):
            continue
        lines = []
        for msgid, msgstr in entries:
            if not msgid or not re.search(r"[\u3400-\u9fff]", msgstr):
                continue
            cleaned = clean_pair(msgid, msgstr)
            english = leak.normalize(cleaned[0] if cleaned else msgid.split("\x04")[-1])
            text = "\n".join(_MNEMONIC.sub("", form).strip() for form in msgstr.split("\x00"))
            if english in leak.lines or leak.leaks(text):
                dropped["zh"] += 1
                continue
            lines.append(text)
        if lines:
            docs.append(Document("zh", "\n".join(lines)))
            size += len(docs[-1].text.encode("utf-8"))
    return docs


def build_corpus(cfg: PretrainConfig) -> tuple[list[Document], dict[str, Any]]:
    """All documents of the corpus and a report of what was dropped for leaking."""
    docs, leak = task_documents(cfg)
    dropped: Counter = Counter()
    if cfg.doc_mb > 0:
        docs += capped_chunks("doc", doc_files(), cfg.doc_mb, leak, dropped)
    if cfg.license_mb > 0 and LICENSE_ROOT.is_dir():
        licences = [p for p in LICENSE_ROOT.iterdir() if p.is_file() and not p.is_symlink()]
        docs += capped_chunks("license", licences, cfg.license_mb, leak, dropped)
    if cfg.code_mb > 0:
        docs += capped_chunks("code", code_files(), cfg.code_mb, leak, dropped, CODE_BOUNDARY)
    if cfg.zh_mb > 0:
        docs += chinese_documents(cfg.zh_mb, leak, dropped)
    return docs, {"leak_needles": len(leak.lines), "leak_dropped": dict(dropped)}


def corpus_stats(docs: list[Document], token_docs: list[list[int]]) -> dict[str, dict[str, int]]:
    stats: dict[str, Counter] = defaultdict(Counter)
    for d, ids in zip(docs, token_docs):
        text = d.text + (d.completion or "")
        stats[d.source].update(docs=1, chars=len(text), bytes=len(text.encode("utf-8")), tokens=len(ids))
    return {k: dict(v) for k, v in sorted(stats.items())}


def split_heldout(docs: list[Document], token_docs: list[list[int]], cfg: PretrainConfig) -> tuple[list, list]:
    """Hash split of documents into (train, held-out), each in a seeded order (the corpus lists
    sources one after another, so an unshuffled held-out slice would be one source only)."""
    from recipes.tasks.common import unit_hash

    train, held = [], []
    for d, ids in zip(docs, token_docs):
        (held if unit_hash(d.text + (d.completion or ""), "heldout:") < cfg.heldout_fraction else train).append(ids)
    rng = random.Random(cfg.seed)
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held
