"""Task `translation`: English software messages -> Simplified Chinese, from gettext catalogs.

Source: the compiled message catalogs `/usr/share/locale/zh_CN/LC_MESSAGES/*.mo` that Debian
packages install. Each catalog pairs an English msgid with its zh_CN msgstr. The traffic
count of a message is the number of catalogs (programs) that ship it: "Memory exhausted" or
"Invalid regular expression" recur across programs, a real frequency signal.
"""

from __future__ import annotations

import re
import struct
from collections import Counter, defaultdict
from pathlib import Path

from rlft.tasks.common import Pair, merge_duplicates, split_pairs, write_datasheet, write_snapshot

SOURCE_DIR = Path("/usr/share/locale/zh_CN/LC_MESSAGES")
MIN_WORDS = 3
MAX_CHARS = 200  # longer single-line messages are paragraphs of prose, not UI strings

# printf conversions (%s, %d, %1$s, %.2f, %lu, %-*s, %'d, glibc's %m ...), Python's %(name)s and
# str.format's {0}/{name}. A space flag is left out on purpose: "50% of" is prose, not "% o".
_PLACEHOLDER = re.compile(
    r"%%"
    r"|%\([A-Za-z_]\w*\)[-+#0]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"
    r"|%(?:\d+\$)?[-+#0']*(?:\*(?:\d+\$)?|\d+)?(?:\.(?:\*(?:\d+\$)?|\d+))?"
    r"(?:hh|ll|[hlLqjzZt])?[diouxXeEfFgGaAcCsSpnm]"
    r"|\{\d*\}|\{[A-Za-z_]\w*\}"
)
# GTK/Qt mnemonics as zh_CN translators write them: "复制链接地址(_L)" for "Copy _Link Address".
_ZH_MNEMONIC = re.compile(r"\s*[(（][_&]([A-Za-z0-9])[)）]")
_EN_MNEMONIC = re.compile(r"[_&](?=[A-Za-z0-9])")
_CJK = re.compile(r"[\u3400-\u9fff]")
_GNUPG_TAG = re.compile(r"^\|[\w-]+\|")  # gnupg's pseudo-context, e.g. "|pinentry-label|"


def placeholders(text: str) -> Counter:
    """The multiset of format placeholders in a message; the literal '%%' is not one."""
    return Counter(m for m in _PLACEHOLDER.findall(text) if m != "%%")


def read_mo(data: bytes) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled gettext catalog, header and plurals included.

    A plural entry keeps its NUL-separated forms; a msgctxt stays as the 'ctx\\x04' prefix.
    The strings are decoded with the charset named in the header (UTF-8 when absent).
    """
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        raise ValueError("not a gettext .mo file (bad magic number)")
    _, n, orig_at, trans_at = struct.unpack(order + "4I", data[4:20])
    raw = []
    for i in range(n):
        olen, ooff = struct.unpack(order + "2I", data[orig_at + 8 * i: orig_at + 8 * i + 8])
        tlen, toff = struct.unpack(order + "2I", data[trans_at + 8 * i: trans_at + 8 * i + 8])
        raw.append((data[ooff:ooff + olen], data[toff:toff + tlen]))
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            found = re.search(rb"charset=([\w.-]+)", msgstr)
            if found and found.group(1).upper() != b"CHARSET":  # "CHARSET" is the .pot placeholder
                charset = found.group(1).decode("ascii")
    return [(m.decode(charset, "replace"), s.decode(charset, "replace")) for m, s in raw]


def _words(text: str) -> int:
    """Words with at least one letter, placeholders not counted."""
    return sum(1 for tok in _PLACEHOLDER.sub(" ", text).split() if re.search(r"[A-Za-z]", tok))


def clean_pair(msgid: str, msgstr: str) -> tuple[str, str] | None:
    """The cleaned (english, chinese) pair, or None when a rule drops it (see DATASHEET)."""
    if not msgid or not msgstr or "\x00" in msgid or "\x00" in msgstr:
        return None  # header entry, untranslated, or plural forms
    if "\x04" in msgid:
        msgid = msgid.split("\x04", 1)[1]  # msgctxt disambiguates; the English text is what we learn
    tag = _GNUPG_TAG.match(msgid)
    if tag:
        msgid = msgid[tag.end():]
        msgstr = msgstr[len(tag.group(0)):] if msgstr.startswith(tag.group(0)) else msgstr
    en, zh = msgid.strip(), msgstr.strip()
    if "\n" in en or "\n" in zh or "\t" in en:
        return None  # --help blocks, option tables, multi-line notices
    if len(en) > MAX_CHARS or _words(en) < MIN_WORDS or not _CJK.search(zh):
        return None
    mnemonic = _ZH_MNEMONIC.search(zh)
    if mnemonic:
        if len(_EN_MNEMONIC.findall(en)) != 1:
            return None  # ambiguous which '_' is the mnemonic
        en = _EN_MNEMONIC.sub("", en, count=1)
        zh = _ZH_MNEMONIC.sub("", zh, count=1)
    if placeholders(en) != placeholders(zh):
        return None
    en, zh = re.sub(r"\s+", " ", en), re.sub(r"\s+", " ", zh)
    return en, zh


def collect(source_dir: Path = SOURCE_DIR) -> tuple[list[Pair], dict[str, Counter]]:
    """Cleaned pairs, one per distinct English message, with ``count`` = catalogs that ship it.

    Symbolic links are skipped (iso-codes installs old domain names as links to the new ones),
    so a catalog is counted once. Also returns per-catalog statistics for the datasheet.
    """
    by_en: dict[str, Counter] = defaultdict(Counter)
    catalogs_of: dict[str, set[str]] = defaultdict(set)
    stats: dict[str, Counter] = {}
    for path in sorted(Path(source_dir).glob("*.mo")):
        if path.is_symlink():
            continue
        catalog = path.stem
        entries = read_mo(path.read_bytes())
        kept = 0
        for msgid, msgstr in entries:
            cleaned = clean_pair(msgid, msgstr)
            if cleaned is None:
                continue
            en, zh = cleaned
            by_en[en][zh] += 1
            if catalog not in catalogs_of[en]:
                catalogs_of[en].add(catalog)
                kept += 1
        stats[catalog] = Counter(entries=len(entries), kept=kept)
    pairs = []
    for en, translations in by_en.items():
        refs = [zh for zh, _ in translations.most_common()]
        catalogs = sorted(catalogs_of[en])
        pairs.append(Pair(en, refs, len(catalogs), {"catalogs": catalogs}))
    return pairs, stats


INTRO = """
English -> Simplified Chinese translation of software messages (UI strings, error messages).

Template: `Translate to Chinese: {prompt}\\nChinese:`. Reward: `0.8*chrf + 0.2*placeholders`
(chrF against the references plus agreement of format placeholders); metric chrF, second
metric BLEU (sacrebleu's `zh` tokenizer for Chinese). `rollout.max_new_tokens` = 64: the p95
reference is 38 characters (20 of them CJK, 74 UTF-8 bytes), which a byte-level BPE tokenizer
(GPT-2 style, 1.5-2 tokens per CJK character) encodes in roughly 45-60 tokens.

## Source and licence

The compiled gettext catalogs `/usr/share/locale/zh_CN/LC_MESSAGES/*.mo` of a Debian 12
(bookworm) machine, read with a small .mo parser (`rlft.tasks.translation.read_mo`). Each
catalog is part of the Debian package that installs it and carries that package's licence
(mostly GPL-2+/GPL-3+/LGPL-2.1+; iso-codes is LGPL-2.1+; see
`/usr/share/doc/<package>/copyright`). The table at the end lists the catalogs used.

## Cleaning rules

1. Skip the header entry, plural entries (msgid with NUL-separated forms) and empty
   translations. Fuzzy entries never reach a .mo file (msgfmt leaves them out).
2. Strip a msgctxt prefix (`ctx\\x04`) and gnupg's `|pinentry-label|`-style tag; strip
   leading/trailing whitespace (trailing `\\n` of printf messages) on both sides.
3. Drop messages with an internal newline or a tab (--help blocks, option tables) and those
   over 200 characters.
4. Drop messages of fewer than 3 words (a word has a letter; placeholders are not words) and
   translations without a CJK character (untranslated copies).
5. Accelerators: when the translation carries a mnemonic such as `(_L)`, the mnemonic is
   removed from the translation and the single `_`/`&` marker from the English
   ("Copy _Link Address" / "复制链接地址(_L)" -> "Copy Link Address" / "复制链接地址").
   A message with several candidate markers is dropped. Underscores elsewhere (identifiers
   such as `file_name`) are kept.
6. Drop pairs whose placeholders differ as multisets: printf conversions (`%s`, `%d`,
   `%1$s`, `%.2f`, `%lu`, `%-*s`, glibc's `%m` ...; `%%` is a literal), Python `%(name)s` and
   `{0}`/`{name}`.
   The comparison is exact, so a translation that reorders `%s %s` as `%2$s %1$s` is dropped.
7. Collapse internal runs of whitespace to one space.
"""

COUNTS_NOTE = """
`count` is the number of catalogs (programs) whose cleaned English message is identical to the
prompt: a real frequency signal (e.g. regular-expression errors shipped by every gnulib user).
Catalogs that are symbolic links (iso-codes' legacy domain names) are not counted twice. The
references of a message are its distinct translations across catalogs, most frequent first.
"""


def build(out_dir: Path, source_dir: Path = SOURCE_DIR, cap: int = 1000) -> dict[str, int]:
    """Collect, clean, split and write the snapshot and datasheet; returns rows per split."""
    pairs, stats = collect(source_dir)
    pairs = merge_duplicates(pairs)
    splits = split_pairs(pairs, cap=cap)
    sizes = write_snapshot("translation", splits, out_dir)
    table = ["## Catalogs\n", "| catalog | entries in .mo | distinct messages kept |", "| --- | ---: | ---: |"]
    table += [f"| {name} | {c['entries']} | {c['kept']} |" for name, c in sorted(stats.items())]
    write_datasheet(out_dir, "Task `translation` (en -> zh_CN)", INTRO, splits, COUNTS_NOTE,
                    cap=cap, extra="\n".join(table), cjk_reference=True)
    return sizes
