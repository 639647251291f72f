"""Tasks `translation` (en -> zh_CN) and `translation_fr` (en -> fr), from gettext catalogs.

Source: the compiled message catalogs `/usr/share/locale/<locale>/LC_MESSAGES/*.mo` that Debian
packages install. Each catalog pairs an English msgid with its translated msgstr. The traffic
count of a message is the number of catalogs (programs) that ship it: "Memory exhausted" or
"Invalid regular expression" recur across programs, a real frequency signal.

Both tasks come from one code path; a `Language` holds what differs (the locale directory, how
a real translation is recognized, how its translators mark accelerators, the datasheet prose).

Build (from the repository root): ``python -m recipes.tasks --task translation --task translation_fr``.
"""

from __future__ import annotations

import re
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from recipes.tasks.common import Pair, merge_duplicates, split_pairs, write_datasheet, write_snapshot

LOCALE_ROOT = Path("/usr/share/locale")
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
_EN_MNEMONIC = re.compile(r"[_&](?=[A-Za-z0-9])")
_WORD = re.compile(r"[\w&]+")
_GNUPG_TAG = re.compile(r"^\|[\w-]+\|")  # gnupg's pseudo-context, e.g. "|pinentry-label|"


@dataclass(frozen=True)
class Language:
    """What differs between the target languages of the gettext translation tasks."""

    task: str  # the task (and snapshot directory) name
    locale: str  # the directory under /usr/share/locale
    name: str  # in the datasheet: "English -> {name} translation"
    script: re.Pattern  # a translation without a match is an untranslated copy
    # An accelerator as this language's translators mark it. A match inside a word that the
    # English also contains (an identifier such as wal_level) is not one.
    mnemonic: re.Pattern
    cjk: bool  # the datasheet counts CJK characters of the references instead of words
    usage: str  # datasheet: template, reward, metrics and the reason for max_new_tokens
    untranslated: str  # datasheet, rule 4: what an untranslated copy looks like
    mnemonic_rule: str  # datasheet, rule 5
    licences: str  # datasheet: the licences of the packages whose catalogs are used
    whitespace: str = ""  # datasheet, rule 7: a language-specific addition

    @property
    def source_dir(self) -> Path:
        return LOCALE_ROOT / self.locale / "LC_MESSAGES"


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


def _mnemonics(lang: Language, msgstr: str, msgid: str) -> list[re.Match]:
    """The accelerator markers of a translation, leaving out those inside a word that the English
    also contains: 'wchar_t' or 'pg_dump' in a French message are identifiers, not '_t', '_d'."""
    shared = set(_WORD.findall(msgid))
    return [m for m in lang.mnemonic.finditer(msgstr) if _word_at(msgstr, m) not in shared]


def _word_at(text: str, match: re.Match) -> str:
    """The word around the match's '_' or '&' (a match may also hold '(' and spaces: "(_L)")."""
    i = match.start() + re.search(r"[_&]", match.group(0)).start()
    for word in _WORD.finditer(text):
        if word.start() <= i < word.end():
            return word.group(0)
    return ""


def clean_pair(msgid: str, msgstr: str, lang: Language | None = None) -> tuple[str, str] | None:
    """The cleaned (english, translation) pair, or None when a rule drops it (see DATASHEET).

    ``lang`` defaults to Simplified Chinese, the `translation` task."""
    lang = lang or ZH
    if not msgid or not msgstr or "\x00" in msgid or "\x00" in msgstr:
        return None  # header entry, untranslated, or plural forms
    if "\x04" in msgid:
        msgid = msgid.split("\x04", 1)[1]  # msgctxt disambiguates; the English text is what we learn
    tag = _GNUPG_TAG.match(msgid)
    if tag:
        msgid = msgid[tag.end():]
        msgstr = msgstr[len(tag.group(0)):] if msgstr.startswith(tag.group(0)) else msgstr
    en, tgt = msgid.strip(), msgstr.strip()
    if "\n" in en or "\n" in tgt or "\t" in en:
        return None  # --help blocks, option tables, multi-line notices
    if len(en) > MAX_CHARS or _words(en) < MIN_WORDS or not lang.script.search(tgt) or tgt == en:
        return None
    marks = _mnemonics(lang, tgt, en)
    if marks:
        if len(marks) != 1 or len(_EN_MNEMONIC.findall(en)) != 1:
            return None  # ambiguous which '_' is the mnemonic
        en = _EN_MNEMONIC.sub("", en, count=1)
        tgt = tgt[:marks[0].start()] + tgt[marks[0].end():]
    if placeholders(en) != placeholders(tgt):
        return None
    en, tgt = re.sub(r"\s+", " ", en), re.sub(r"\s+", " ", tgt)
    return en, tgt


def collect(source_dir: Path | None = None, lang: Language | None = None) -> tuple[list[Pair], dict[str, Counter]]:
    """Cleaned pairs, one per distinct English message, with ``count`` = catalogs that ship it.

    ``source_dir`` defaults to the language's locale directory, ``lang`` to Simplified Chinese.
    Symbolic links are skipped (iso-codes installs old domain names as links to the new ones),
    so a catalog is counted once. Also returns per-catalog statistics for the datasheet.
    """
    lang = lang or ZH
    by_en: dict[str, Counter] = defaultdict(Counter)
    catalogs_of: dict[str, set[str]] = defaultdict(set)
    stats: dict[str, Counter] = {}
    for path in sorted(Path(source_dir or lang.source_dir).glob("*.mo")):
        if path.is_symlink():
            continue
        catalog = path.stem
        entries = read_mo(path.read_bytes())
        kept = 0
        for msgid, msgstr in entries:
            cleaned = clean_pair(msgid, msgstr, lang)
            if cleaned is None:
                continue
            en, tgt = cleaned
            by_en[en][tgt] += 1
            if catalog not in catalogs_of[en]:
                catalogs_of[en].add(catalog)
                kept += 1
        stats[catalog] = Counter(entries=len(entries), kept=kept)
    pairs = []
    for en, translations in by_en.items():
        refs = [tgt for tgt, _ in translations.most_common()]
        catalogs = sorted(catalogs_of[en])
        pairs.append(Pair(en, refs, len(catalogs), {"catalogs": catalogs}))
    return pairs, stats


ZH = Language(
    task="translation", locale="zh_CN", name="Simplified Chinese",
    script=re.compile(r"[\u3400-\u9fff]"),
    # "复制链接地址(_L)" for "Copy _Link Address": the key in parentheses after the text.
    mnemonic=re.compile(r"\s*[(（][_&]([A-Za-z0-9])[)）]"),
    cjk=True,
    usage="""
Template: `Translate to Chinese: {prompt}\\nChinese:`. Reward: `0.8*chrf + 0.2*placeholders`
(chrF against the references plus agreement of format placeholders); metric chrF, second
metric BLEU (sacrebleu's `zh` tokenizer for Chinese). `rollout.max_new_tokens` = 64: the p95
reference is 38 characters (20 of them CJK, 74 UTF-8 bytes), which a byte-level BPE tokenizer
(GPT-2 style, 1.5-2 tokens per CJK character) encodes in roughly 45-60 tokens.
""",
    untranslated="translations without a CJK character",
    mnemonic_rule="""
5. Accelerators: when the translation carries a mnemonic such as `(_L)`, the mnemonic is
   removed from the translation and the single `_`/`&` marker from the English
   ("Copy _Link Address" / "复制链接地址(_L)" -> "Copy Link Address" / "复制链接地址").
   A message with several candidate markers is dropped. Underscores elsewhere (identifiers
   such as `file_name`) are kept.
""",
    licences="mostly GPL-2+/GPL-3+/LGPL-2.1+; iso-codes is LGPL-2.1+",
)

_LOWER = "a-zß-öø-ÿœæ"
_WORD_START = r"(?<![^\s(\[«\"'“])"  # at the text's start or after a space, bracket or quote
FR = Language(
    task="translation_fr", locale="fr", name="French",
    script=re.compile(r"[^\W\d_]"),
    # "Pages par _feuille" for "Pages per _sheet", "E_space" for "_Zero width space": an underscore
    # before the key, as in the English (gtk20). Mid-word, only next to a word's first or last letter
    # and before a lower-case one, so translated identifiers ("contrainte_domaine", "LISTE_G") are not
    # taken; the rare mid-word accelerator ("rem_placer") is missed and stays, as in the English.
    mnemonic=re.compile(
        _WORD_START + r"_(?=[^\W\d_])"
        r"|(?<=" + _WORD_START + r"[^\W\d_])_(?=[" + _LOWER + r"])"
        r"|(?<=[^\W\d_])_(?=[" + _LOWER + r"](?!\w))"
    ),
    cjk=False,
    usage="""
Template: `Translate to French: {prompt}\\nFrench:`. Reward: `0.8*chrf + 0.2*placeholders`
(chrF against the references plus agreement of format placeholders); metric chrF, second
metric BLEU (sacrebleu's default `13a` tokenizer). `rollout.max_new_tokens` = 64: the p95
reference is 94 characters, 33 tokens of SmolLM2's tokenizer and 46 of the bundled rlft-base's
(trained on English and Chinese); 64 also covers their p99 (47 and 65 tokens).
""",
    untranslated="translations identical to the English or without a letter",
    mnemonic_rule="""
5. Accelerators: French translators mark them like English, with `_` before the key
   ("_Save color here" / "_Enregistrer la couleur ici" -> "Save color here" / "Enregistrer la
   couleur ici"). A `_` counts as a French accelerator at the start of a word, or after a
   word's first letter or before its last one when a lower-case letter follows ("E_space");
   it is removed with the single `_`/`&` marker of the English, and a message with several
   candidate markers in the English is dropped. An underscore inside a word that the English
   also contains (`wchar_t`, `pg_dump`) or inside a translated identifier (`contrainte_domaine`,
   `LISTE_G`) is kept, and so is an accelerator the translator placed mid-word (`Co_uper`),
   on both sides.
""",
    licences="mostly GPL-2+/GPL-3+/LGPL-2.1+; iso-codes is LGPL-2.1+; the 21 catalogs of\n"
             "postgresql-15, postgresql-client-15 and libpq5 are under the PostgreSQL licence,\n"
             "xkb-data's under an MIT/X11-style licence",
    whitespace="\n   French no-break spaces (before `:`, `;`, `!`, `?` and inside `« »`) become plain spaces.",
)

LANGUAGES = {lang.task: lang for lang in (ZH, FR)}

INTRO = """
English -> {name} translation of software messages (UI strings, error messages).

{usage}

## Source and licence

The compiled gettext catalogs `/usr/share/locale/{locale}/LC_MESSAGES/*.mo` of a Debian 12
(bookworm) machine, read with a small .mo parser (`recipes.tasks.translation.read_mo`). Each
catalog is part of the Debian package that installs it and carries that package's licence
({licences}; see
`/usr/share/doc/<package>/copyright`). The table at the end lists the catalogs used.

## Cleaning rules

1. Skip the header entry, plural entries (msgid with NUL-separated forms) and empty
   translations. Fuzzy entries never reach a .mo file (msgfmt leaves them out).
2. Strip a msgctxt prefix (`ctx\\x04`) and gnupg's `|pinentry-label|`-style tag; strip
   leading/trailing whitespace (trailing `\\n` of printf messages) on both sides.
3. Drop messages with an internal newline or a tab (--help blocks, option tables) and those
   over 200 characters.
4. Drop messages of fewer than 3 words (a word has a letter; placeholders are not words) and
   {untranslated} (untranslated copies).
{mnemonic_rule}
6. Drop pairs whose placeholders differ as multisets: printf conversions (`%s`, `%d`,
   `%1$s`, `%.2f`, `%lu`, `%-*s`, glibc's `%m` ...; `%%` is a literal), Python `%(name)s` and
   `{{0}}`/`{{name}}`.
   The comparison is exact, so a translation that reorders `%s %s` as `%2$s %1$s` is dropped.
7. Collapse internal runs of whitespace to one space.{whitespace}
"""

COUNTS_NOTE = """
**Real counts.** `count` is the number of catalogs (programs) whose cleaned English message is identical to the
prompt: a real frequency signal (e.g. regular-expression errors shipped by every gnulib user).
Catalogs that are symbolic links (iso-codes' legacy domain names) are not counted twice. The
references of a message are its distinct translations across catalogs, most frequent first.
"""


def build(out_dir: Path, task: str = "translation", source_dir: Path | None = None,
          cap: int = 1000) -> dict[str, int]:
    """Collect, clean, split and write the snapshot and datasheet of ``task`` (a key of
    ``LANGUAGES``); ``source_dir`` overrides its locale directory. Returns rows per split."""
    lang = LANGUAGES[task]
    pairs, stats = collect(source_dir, lang)
    pairs = merge_duplicates(pairs)
    splits = split_pairs(pairs, cap=cap)
    sizes = write_snapshot(lang.task, splits, out_dir)
    table = ["## Catalogs\n", "| catalog | entries in .mo | distinct messages kept |", "| --- | ---: | ---: |"]
    table += [f"| {name} | {c['entries']} | {c['kept']} |" for name, c in sorted(stats.items())]
    intro = INTRO.format(name=lang.name, usage=lang.usage.strip(), locale=lang.locale, licences=lang.licences,
                         untranslated=lang.untranslated, mnemonic_rule=lang.mnemonic_rule.strip(),
                         whitespace=lang.whitespace)
    write_datasheet(out_dir, f"Task `{lang.task}` (en -> {lang.locale})", intro, splits,
                    COUNTS_NOTE, cap=cap, extra="\n".join(table), cjk_reference=lang.cjk)
    return sizes
