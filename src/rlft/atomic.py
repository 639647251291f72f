"""Durable writes: a file or directory is either fully there under its final name, or not at all.

The one place rlft writes atomically: ``atomic_write`` for single files (eval results, the resolved
config, the report's files, ``demo.json``, caches) and ``write_dir_atomically`` for directories
(checkpoints and final models in ``training.checkpoint``, the converted-model cache in
``models.registry``). Both fsync the data and then the directory entry, so a crash or a power cut
leaves the old version or the new one. Standard library only, so any layer may import it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

TMP_PREFIX, OLD_PREFIX = ".tmp-", ".old-"


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # Windows cannot open directories; its rename is already durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then the directories (children before parents)."""
    dirs = []
    for dirpath, _, filenames in os.walk(root):
        dirs.append(Path(dirpath))
        for name in filenames:
            fsync_path(Path(dirpath) / name)
    for d in reversed(dirs):
        fsync_path(d)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` and return it; creates the parent directory.

    The data goes to a temporary sibling (``.tmp-<name>.<random>``, so two writers of one path
    never share it), is fsynced, renamed over ``path`` with ``os.replace`` and the directory is
    fsynced: a reader (a browser refreshing the report, a resumed run) sees the old file or the
    new one, never a half-written one. On an error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "xb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def remove_dir(path: Path, marker: str | None = None) -> None:
    """Delete a directory tree, its completion ``marker`` file first.

    If deletion is interrupted, what is left no longer looks complete.
    """
    if marker is not None:
        (path / marker).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def write_dir_atomically(final: Path, write: Callable[[Path], None], *, marker: str | None = None) -> Path:
    """Run ``write(tmp_dir)``, make it durable, then rename ``tmp_dir`` to ``final`` (replacing it).

    ``tmp_dir`` is ``.tmp-<name>`` beside ``final``; a crash leaves it behind, and the next write
    removes it. ``marker``, when given, is a file written last inside the directory (a reader that
    finds it knows the directory is complete even where it cannot rely on the rename).
    """
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp, old = parent / f"{TMP_PREFIX}{final.name}", parent / f"{OLD_PREFIX}{final.name}"
    for leftover in (tmp, old):
        if leftover.exists():
            remove_dir(leftover, marker)
    tmp.mkdir()
    try:
        write(tmp)
        if marker is not None:
            (tmp / marker).write_text(final.name + "\n", encoding="utf-8")
        fsync_tree(tmp)
        # A non-empty directory cannot be replaced in one rename: move the old one aside first.
        # A crash between the two renames loses only this re-save; the previous copy is in `old`.
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_path(parent)
    except Exception:  # not BaseException: a kill leaves the temp dir, as a real crash would
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.exists():
        remove_dir(old, marker)
    return final
