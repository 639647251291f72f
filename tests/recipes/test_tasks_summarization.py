"""summarization builder: NAME/DESCRIPTION parsing, families, and rendering of a tiny roff page."""

from __future__ import annotations

import gzip
import shutil

import pytest

from recipes.tasks import summarization as summ
from recipes.tasks.summarization import family, page_name, parse_page, summary_template

RENDERED = """\
MEMCPY(3)                  Library Functions Manual                  MEMCPY(3)

NAME
       memcpy \u2010 copy memory area

SYNOPSIS
       #include <string.h>

DESCRIPTION
       The  memcpy()  function  copies  n bytes from memory area src to memory
       area dest.  The memory areas must not overlap.

       Use memmove(3) if the \u2018memory areas\u2019 do overlap in user-
       level code.

           memcpy(dest, src, n);

       This paragraph comes after an example and is not used.

RETURN VALUE
       The memcpy() function returns a pointer to dest.
"""

ROFF = r""".TH FROB 1 "2024" "demo" "User Commands"
.SH NAME
frob \- twiddle the bits of a file
.SH SYNOPSIS
.B frob
[\fIFILE\fR]
.SH DESCRIPTION
.B frob
reads each
.I FILE
and flips every bit in it, writing the result to standard output.
It is useful for testing the robustness of parsers.
.SH OPTIONS
.TP
.B \-v
Be verbose.
"""


def test_parse_rendered_page():
    description, summary = parse_page(RENDERED)
    assert summary == "copy memory area"
    assert description == ("The memcpy() function copies n bytes from memory area src to memory area dest. "
                           "The memory areas must not overlap. Use memmove(3) if the 'memory areas' do overlap in "
                           "user-level code.")


def test_option_lists_and_subsections_end_the_description():
    head = RENDERED.split("DESCRIPTION")[0] + "DESCRIPTION\n"
    body = ("       List information about the FILEs, the current directory by default.\n\n"
            "       -a, --all\n              do not ignore entries starting with .\n\n"
            "   Exit status:\n       0      if OK,\n")
    description, _ = parse_page(head + body)
    assert description == "List information about the FILEs, the current directory by default."
    sub = "   Overview\n       The tool reads files and writes a report about them.\n"
    assert parse_page(head + sub)[0] == "The tool reads files and writes a report about them."


def test_pages_without_summary_or_description_are_dropped():
    assert parse_page(RENDERED.replace("DESCRIPTION", "DETAILS")) is None
    assert parse_page(RENDERED.replace("memcpy \u2010 copy memory area", "memcpy")) is None
    short = RENDERED.split("DESCRIPTION")[0] + "DESCRIPTION\n       Copies bytes.\n"
    assert parse_page(short) is None  # under 8 words


def test_long_descriptions_are_capped_at_a_sentence():
    sentence = "This sentence has exactly eight words in it. "
    text = RENDERED.split("DESCRIPTION")[0] + "DESCRIPTION\n       " + sentence * 40 + "\n"
    description, _ = parse_page(text)
    assert len(description.split()) <= summ.MAX_WORDS and description.endswith("in it.")


def test_names_families_and_templates():
    assert page_name(summ.Path("man3/Algorithm::Diff.3pm.gz")) == "Algorithm::Diff"
    assert page_name(summ.Path("man1/gcloud_compute_ssh.1.gz")) == "gcloud_compute_ssh"
    assert family("gcloud_compute_ssh") == "gcloud" and family("git-log") == "git"
    assert summary_template("Foo::Bar", "Perl extension for Bar") == "perl extension for *"
    assert summary_template("Baz::Qux", "Perl extension for Qux") == "perl extension for *"


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) is not installed")
def test_collect_renders_roff_and_skips_families_and_aliases(tmp_path, monkeypatch):
    man1 = tmp_path / "man1"
    man1.mkdir()
    with gzip.open(man1 / "frob.1.gz", "wt") as f:
        f.write(ROFF)
    (man1 / "frobnicate.1.gz").symlink_to(man1 / "frob.1.gz")
    (man1 / "twiddle.1").write_text(".so man1/frob.1\n")
    for i in range(3):  # a generated family, left out before rendering
        (man1 / f"gen_cmd{i}.1").write_text(ROFF.replace("frob", f"gen_cmd{i}"))
    monkeypatch.setattr(summ, "FAMILY_LIMIT", 2)
    cache: dict[str, str] = {}
    pairs, dropped = summ.collect(tmp_path, progress=False, cache=cache)
    assert dropped["family gen_*"] == 3 and list(cache) == [str(man1 / "frob.1.gz")]
    assert len(pairs) == 1 and pairs[0].references == ["twiddle the bits of a file"]
    assert pairs[0].prompt.startswith("frob reads each FILE and flips every bit in it")
    assert pairs[0].meta == {"page": "frob", "section": "1"}
