"""rlft.atomic: the one file writer, durable and all-or-nothing; no other writer in src/rlft."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import rlft
from rlft import atomic
from rlft.atomic import atomic_write

SRC = Path(rlft.__file__).resolve().parent


def test_atomic_write_replaces_the_whole_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # the parent is created
    assert atomic_write(path, "first version, long\n") == path
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    atomic_write(path, "dritte Fassung: \u00e9\u4e2d")  # text is UTF-8, newlines as they are
    assert path.read_bytes() == "dritte Fassung: \u00e9\u4e2d".encode("utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_atomic_write_fsyncs_the_file_then_its_directory(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    atomic_write(tmp_path / "x.json", "{}")
    assert len(synced) == 2
    if os.path.exists("/proc/self/fd"):
        assert Path(synced[0]).name.startswith(".tmp-x.json.")  # the data, before the rename
        assert Path(synced[1]) == tmp_path.resolve()  # then the directory entry


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _calls(tree: ast.AST) -> list[str]:
    """Dotted names of the calls in ``tree``: 'os.replace', 'tmp.rename', 'tempfile.mkstemp', ..."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            out.append(f"{owner.id if isinstance(owner, ast.Name) else '?'}.{node.func.attr}")
    return out


def test_no_second_atomic_writer_in_src():
    """A file written by rename (os.replace, os.rename, Path.rename) or through a temporary file
    goes through rlft.atomic; no module rolls its own (there were six)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "atomic.py" and path.parent == SRC:
            continue
        for name in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            owner, attr = name.split(".")
            if (owner == "os" and attr in ("replace", "rename", "renames")) or attr == "rename" \
                    or (owner == "tempfile" and attr in ("mkstemp", "NamedTemporaryFile")):
                found.append(f"{path.relative_to(SRC)}: {name}")
    assert found == []


def test_the_scan_sees_a_writer():
    tree = ast.parse("import os\ndef w(p):\n    os.replace(p + '.tmp', p)\n    q.rename(p)\n")
    assert _calls(tree) == ["os.replace", "q.rename"]
