"""translation builders (zh_CN and fr): .mo parsing and the cleaning rules, on hand-made catalogs."""

from __future__ import annotations

import gettext
import io
import struct
from collections import Counter

from recipes.tasks import BUILDERS
from recipes.tasks.common import SPLITS, read_snapshot
from recipes.tasks.translation import FR, build, clean_pair, collect, placeholders, read_mo

HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=1; plural=0;\n"


def mo_bytes(entries: dict[str, str]) -> bytes:
    """A little-endian GNU .mo file (no hash table) holding ``entries`` plus the header."""
    items = sorted({"": HEADER, **entries}.items())
    ids = [k.encode("utf-8") for k, _ in items]
    strs = [v.encode("utf-8") for _, v in items]
    n = len(items)
    orig_at, trans_at = 28, 28 + 8 * n
    data_at = trans_at + 8 * n
    blob, orig, trans = b"", [], []
    for table, strings in ((orig, ids), (trans, strs)):
        for s in strings:
            table.append((len(s), data_at + len(blob)))
            blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, orig_at, trans_at, 0, data_at)
    return head + b"".join(struct.pack("<2I", *e) for e in orig + trans) + blob


def test_mo_writer_agrees_with_gettext():
    data = mo_bytes({"Open the file": "打开文件", "one file\0%d files": "%d 个文件"})
    catalog = gettext.GNUTranslations(io.BytesIO(data))
    assert catalog.gettext("Open the file") == "打开文件"
    assert dict(read_mo(data))["one file\0%d files"] == "%d 个文件"


def test_placeholders_are_a_multiset_and_skip_literal_percent():
    assert placeholders("%s and %s, %d%% done") == Counter({"%s": 2, "%d": 1})
    assert placeholders("%1$s %.2f %lu %-*s %(name)s {0}") == Counter(
        ["%1$s", "%.2f", "%lu", "%-*s", "%(name)s", "{0}"])
    assert placeholders("50% of the disk") == Counter()
    assert placeholders("could not open %s: %m") == Counter(["%s", "%m"])


def test_cleaning_rules():
    assert clean_pair("Cannot open file %s\n", "无法打开文件 %s\n") == ("Cannot open file %s", "无法打开文件 %s")
    assert clean_pair("one file\0%d files", "%d 个文件") is None  # plural
    assert clean_pair("Cannot open file %s", "无法打开文件") is None  # placeholder lost
    assert clean_pair("Copied %s to %s", "复制 %2$s 到 %1$s") is None  # reordered: differs as a multiset
    assert clean_pair("Open file", "打开文件") is None  # under 3 words
    assert clean_pair("%s: %s: %s", "%s：%s：%s") is None  # placeholders are not words
    assert clean_pair("Usage: foo [OPTION]\n  -a, --all   show all\n  -h   help", "用法") is None
    assert clean_pair("Could not connect", "") is None
    assert clean_pair("Could not connect", "Could not connect") is None  # untranslated copy
    assert clean_pair("Copy _Link Address", "复制链接地址(_L)") == ("Copy Link Address", "复制链接地址")
    assert clean_pair("menu\x04Open the file", "打开该文件") == ("Open the file", "打开该文件")
    assert clean_pair("|pinentry-label|_Save the password", "|pinentry-label|保存密码(_S)") == (
        "Save the password", "保存密码")


def test_collect_counts_catalogs_and_merges_translations(tmp_path):
    shared = "Invalid regular expression given"
    (tmp_path / "grep.mo").write_bytes(mo_bytes({shared: "无效的正则表达式", "no such file %s": "没有文件 %s"}))
    (tmp_path / "sed.mo").write_bytes(mo_bytes({shared: "非法的正则表达式", "Open file": "打开"}))
    (tmp_path / "tar.mo").write_bytes(mo_bytes({shared: "无效的正则表达式"}))
    (tmp_path / "tar-old.mo").symlink_to(tmp_path / "tar.mo")  # an alias: not another program
    pairs, stats = collect(tmp_path)
    by_prompt = {p.prompt: p for p in pairs}
    assert set(by_prompt) == {shared, "no such file %s"}
    assert by_prompt[shared].count == 3
    assert by_prompt[shared].references == ["无效的正则表达式", "非法的正则表达式"]
    assert by_prompt[shared].meta["catalogs"] == ["grep", "sed", "tar"]
    assert stats["sed"]["kept"] == 1 and "tar-old" not in stats


def test_build_writes_a_snapshot(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    entries = {f"Cannot read block {i} of %s": f"无法读取 %s 的第 {i} 块" for i in range(60)}
    entries["files\0%d files"] = "%d 个文件"
    (src / "demo.mo").write_bytes(mo_bytes(entries))
    sizes = build(tmp_path / "out", source_dir=src, cap=2)
    assert sizes["validation"] <= 2 and sizes["test"] <= 2 and sum(sizes.values()) == 60
    rows = [r for s in SPLITS for r in read_snapshot(tmp_path / "out" / f"{s}.jsonl.gz")]
    assert {r["count"] for r in rows} == {1}
    assert "| demo | 62 | 60 |" in (tmp_path / "out" / "DATASHEET.md").read_text(encoding="utf-8")


def test_french_accelerators_are_stripped_like_the_english_ones():
    assert clean_pair("Pages per _sheet:", "Pages par _feuille\xa0:", FR) == ("Pages per sheet:", "Pages par feuille :")
    assert clean_pair("Copy _Link Address", "Copier l'_adresse du lien", FR) == ("Copy Link Address", "Copier l'adresse du lien")
    assert clean_pair("ZWS _Zero width space", "ZWS E_space sans chasse", FR) == ("ZWS Zero width space", "ZWS Espace sans chasse")
    assert clean_pair("Select the _Copy item", "Choisir l'élément Cop_y", FR) == ("Select the Copy item", "Choisir l'élément Copy")
    assert clean_pair("Open _File with _Editor", "Ouvrir le _fichier avec l'éditeur", FR) is None  # which '_' is it?
    assert clean_pair("Save the file _as", "_Enregistrer le fichier _sous", FR) is None


def test_french_identifiers_keep_their_underscores():
    assert clean_pair("logical decoding requires wal_level >= logical",
                      "le décodage logique requiert wal_level >= logical", FR) == (
        "logical decoding requires wal_level >= logical", "le décodage logique requiert wal_level >= logical")
    assert clean_pair("where domain_constraint is:", "où contrainte_domaine est :", FR) == (
        "where domain_constraint is:", "où contrainte_domaine est :")  # a translated identifier
    assert clean_pair("Too many N_RBRACs found", "Trop de N_RBRAC trouvés", FR) == (
        "Too many N_RBRACs found", "Trop de N_RBRAC trouvés")
    assert clean_pair("symbol _start is not defined", "le symbole _start n'est pas défini", FR) == (
        "symbol _start is not defined", "le symbole _start n'est pas défini")  # shared with the English


def test_french_cleaning_rules():
    assert clean_pair("Cannot open file %s\n", "Impossible d'ouvrir le fichier %s\xa0!\n", FR) == (
        "Cannot open file %s", "Impossible d'ouvrir le fichier %s !")
    assert clean_pair("Cannot open file %s", "Impossible d'ouvrir le fichier", FR) is None  # placeholder lost
    assert clean_pair("Could not connect", "Could not connect", FR) is None  # untranslated copy
    assert clean_pair("Could not connect", "%s %s", FR) is None  # no letter: not a translation
    assert clean_pair("Open file", "Ouvrir le fichier", FR) is None  # under 3 words
    assert clean_pair("Could not connect", "无法连接") == ("Could not connect", "无法连接")  # zh by default
    assert clean_pair("Could not connect", "Connexion impossible") is None  # ... which wants CJK


def test_french_build_counts_catalogs_and_goes_through_the_registry(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shared = "Invalid regular expression given"
    entries = {f"Cannot read block {i} of %s": f"Impossible de lire le bloc {i} de %s" for i in range(40)}
    (src / "grep.mo").write_bytes(mo_bytes({**entries, shared: "Expression rationnelle incorrecte"}))
    (src / "sed.mo").write_bytes(mo_bytes({shared: "Expression régulière invalide", "Pages per _sheet:": "Pages par _feuille :"}))
    (src / "tar.mo").write_bytes(mo_bytes({shared: "Expression rationnelle incorrecte"}))
    pairs, stats = collect(src, FR)
    by_prompt = {p.prompt: p for p in pairs}
    assert by_prompt[shared].count == 3 and by_prompt[shared].meta["catalogs"] == ["grep", "sed", "tar"]
    assert by_prompt[shared].references == ["Expression rationnelle incorrecte", "Expression régulière invalide"]
    assert by_prompt["Pages per sheet:"].references == ["Pages par feuille :"]
    sizes = BUILDERS["translation_fr"](tmp_path / "out", source_dir=src, cap=2)
    assert sizes["validation"] <= 2 and sizes["test"] <= 2 and sum(sizes.values()) == 42
    rows = [r for s in SPLITS for r in read_snapshot(tmp_path / "out" / f"{s}.jsonl.gz")]
    assert all(r["id"].startswith("translation_fr-") for r in rows)
    assert sorted(r["count"] for r in rows)[-1] == 3
    sheet = (tmp_path / "out" / "DATASHEET.md").read_text(encoding="utf-8")
    assert "# Task `translation_fr` (en -> fr)" in sheet and "/usr/share/locale/fr/LC_MESSAGES" in sheet
    assert "| grep | 42 | 41 |" in sheet and "reference words" in sheet and "CJK" not in sheet
