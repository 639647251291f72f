"""The labeling database: SQLite in WAL mode, one transaction per judgement.

``synchronous=FULL`` makes every commit reach the disk before the server answers, so killing the
server (or the machine) loses no judgement it has acknowledged. A judgement is never updated in
place: undo stamps ``undone`` on the annotator's latest live one, and a partial unique index keeps
at most one live judgement per (item, annotator), so a double submit cannot count twice.

Queues are computed, not stored: an annotator's next item is the first item they have no live
judgement on that is gold (every annotator sees every gold item) or that has fewer than ``k``
live judgements other than skips. Which completion is shown on the left is a keyed hash of
(annotator, item) under a random per-database secret: stable across reloads, unpredictable to
the annotator, and independent between annotators.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rlft.label import auth

CHOICES = ("a", "b", "tie", "both_bad", "skip")   # what a judgement stores, in terms of the item's a and b
LABELS = CHOICES[:-1]                             # the ones that say something about the pair (and gold's)
SESSION_SECONDS = 12 * 3600

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, prompt TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL,
  model_a TEXT, model_b TEXT, gold TEXT CHECK (gold IN {LABELS}));
CREATE TABLE IF NOT EXISTS annotators (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL DEFAULT 0,
  secret_hash TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  key TEXT PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators(id), csrf TEXT NOT NULL,
  expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS judgements (
  id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items(id),
  annotator_id INTEGER NOT NULL REFERENCES annotators(id), choice TEXT NOT NULL CHECK (choice IN {CHOICES}),
  reason TEXT NOT NULL DEFAULT '', left_side TEXT NOT NULL CHECK (left_side IN ('a', 'b')),
  created REAL NOT NULL, undone REAL);
CREATE UNIQUE INDEX IF NOT EXISTS one_live_judgement ON judgements(item_id, annotator_id) WHERE undone IS NULL;
"""


class Conflict(Exception):
    """A judgement the annotator may not make (already judged, or not in their queue)."""


@dataclass(frozen=True)
class Item:
    id: int
    key: str
    prompt: str
    a: str
    b: str
    gold: Optional[str] = None


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    admin: bool


@dataclass(frozen=True)
class Session:
    annotator: Annotator
    csrf: str


@dataclass(frozen=True)
class Judgement:
    """A live judgement with its item, for export and agreement."""

    item_id: int
    item_key: str
    annotator: str
    choice: str
    reason: str
    prompt: str
    a: str
    b: str
    gold: Optional[str]
    created: float


class Store:
    """One connection per Store; the web app opens one per request (sqlite3 objects are per thread)."""

    def __init__(self, path: str | Path, *, create: bool = True):
        """Open the database; ``create`` makes its tables and secret if missing (the app does it once)."""
        self.path = Path(path)
        if not create and not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such labeling database")
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        if not create:
            return
        self.db.executescript(_SCHEMA)
        with self.tx():
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('k', '3')")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock at once, so no upgrade deadlock)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta(self, key: str) -> str:
        return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    @property
    def k(self) -> int:
        """How many annotators judge each (non-gold) item."""
        return int(self._meta("k"))

    def set_k(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self.tx() as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'k'", (str(k),))

    # -- items and accounts ------------------------------------------------------------------
    def add_items(self, items: Iterable[dict]) -> tuple[int, int]:
        """Insert candidates (dicts with key, prompt, a, b, model_a, model_b, gold); an item whose
        key is already there is kept as it is. Returns (added, already there)."""
        added = kept = 0
        with self.tx() as db:
            for it in items:
                cur = db.execute("INSERT OR IGNORE INTO items (key, prompt, a, b, model_a, model_b, gold) "
                                 "VALUES (:key, :prompt, :a, :b, :model_a, :model_b, :gold)", it)
                added, kept = added + cur.rowcount, kept + 1 - cur.rowcount
        return added, kept

    def add_annotator(self, name: str, *, admin: bool = False) -> str:
        """Create an account; returns its invite token (shown once: only its hash is kept)."""
        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise ValueError("an annotator name is 1-64 printable characters")
        token = auth.new_token()
        try:
            with self.tx() as db:
                db.execute("INSERT INTO annotators (name, admin, secret_hash, created) VALUES (?, ?, ?, ?)",
                           (name, int(admin), auth.hash_secret(token), time.time()))
        except sqlite3.IntegrityError:
            raise ValueError(f"an annotator named {name!r} already exists") from None
        return token

    def annotators(self) -> list[Annotator]:
        rows = self.db.execute("SELECT id, name, admin FROM annotators ORDER BY id").fetchall()
        return [Annotator(i, n, bool(a)) for i, n, a in rows]

    def login(self, name: str, token: str) -> Optional[tuple[str, Session]]:
        """(session id for the cookie, session) when the token is right, else None."""
        row = self.db.execute("SELECT id, name, admin, secret_hash FROM annotators WHERE name = ?",
                              (name.strip(),)).fetchone()
        if row is None:
            auth.hash_secret(token)  # the same work as a wrong token, so timing does not reveal names
            return None
        if not auth.verify_secret(token, row[3]):
            return None
        sid, csrf = auth.new_session_id(), auth.new_csrf()
        with self.tx() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (time.time(),))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                       (auth.session_key(sid), row[0], csrf, time.time() + SESSION_SECONDS))
        return sid, Session(Annotator(row[0], row[1], bool(row[2])), csrf)

    def session(self, sid: str | None) -> Optional[Session]:
        if not sid:
            return None
        row = self.db.execute("SELECT a.id, a.name, a.admin, s.csrf FROM sessions s JOIN annotators a "
                              "ON a.id = s.annotator_id WHERE s.key = ? AND s.expires > ?",
                              (auth.session_key(sid), time.time())).fetchone()
        return None if row is None else Session(Annotator(row[0], row[1], bool(row[2])), row[3])

    def logout(self, sid: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM sessions WHERE key = ?", (auth.session_key(sid),))

    # -- the queue -----------------------------------------------------------------------------
    def left_side(self, annotator_id: int, item_id: int) -> str:
        """'a' or 'b': which completion this annotator sees on the left for this item."""
        mac = hmac.new(bytes.fromhex(self._meta("secret")), f"{annotator_id}:{item_id}".encode(), hashlib.sha256)
        return "a" if mac.digest()[0] & 1 == 0 else "b"

    _OPEN = ("NOT EXISTS (SELECT 1 FROM judgements j WHERE j.item_id = i.id AND j.annotator_id = :me "
             "AND j.undone IS NULL) AND (i.gold IS NOT NULL OR (SELECT COUNT(*) FROM judgements j WHERE "
             "j.item_id = i.id AND j.undone IS NULL AND j.choice != 'skip') < :k)")

    def next_item(self, annotator_id: int) -> Optional[Item]:
        row = self.db.execute(f"SELECT id, key, prompt, a, b, gold FROM items i WHERE {self._OPEN} ORDER BY id "
                              "LIMIT 1", {"me": annotator_id, "k": self.k}).fetchone()
        return None if row is None else Item(*row)

    def item_for(self, annotator_id: int, item_id: int) -> Optional[Item]:
        """The item if this annotator may judge it now: open in their queue, or one they undid."""
        row = self.db.execute(
            f"SELECT id, key, prompt, a, b, gold FROM items i WHERE id = :item AND ({self._OPEN} OR ("
            "NOT EXISTS (SELECT 1 FROM judgements j WHERE j.item_id = i.id AND j.annotator_id = :me AND "
            "j.undone IS NULL) AND EXISTS (SELECT 1 FROM judgements j WHERE j.item_id = i.id AND "
            "j.annotator_id = :me)))", {"me": annotator_id, "k": self.k, "item": item_id}).fetchone()
        return None if row is None else Item(*row)

    def progress(self, annotator_id: int) -> tuple[int, int]:
        """(items this annotator has judged, that plus the items still open to them)."""
        done = self.db.execute("SELECT COUNT(*) FROM judgements WHERE annotator_id = ? AND undone IS NULL",
                               (annotator_id,)).fetchone()[0]
        left = self.db.execute(f"SELECT COUNT(*) FROM items i WHERE {self._OPEN}",
                               {"me": annotator_id, "k": self.k}).fetchone()[0]
        return done, done + left

    def judge(self, annotator_id: int, item_id: int, choice: str, reason: str = "") -> None:
        """Record a judgement in one transaction; ``Conflict`` if the item is not this annotator's to judge."""
        if choice not in CHOICES:
            raise ValueError(f"unknown choice {choice!r}; one of {', '.join(CHOICES)}")
        with self.tx() as db:
            if self.item_for(annotator_id, item_id) is None:
                raise Conflict("this item is not in your queue (already judged, or judged by enough annotators)")
            db.execute("INSERT INTO judgements (item_id, annotator_id, choice, reason, left_side, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (item_id, annotator_id, choice, reason, self.left_side(annotator_id, item_id), time.time()))

    def undo(self, annotator_id: int) -> Optional[int]:
        """Withdraw this annotator's latest live judgement; returns its item id (None: nothing to undo)."""
        with self.tx() as db:
            row = db.execute("SELECT id, item_id FROM judgements WHERE annotator_id = ? AND undone IS NULL "
                             "ORDER BY id DESC LIMIT 1", (annotator_id,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE judgements SET undone = ? WHERE id = ?", (time.time(), row[0]))
        return row[1]

    # -- reading it back -----------------------------------------------------------------------
    def judgements(self) -> list[Judgement]:
        """Every live judgement, oldest first."""
        rows = self.db.execute("SELECT i.id, i.key, a.name, j.choice, j.reason, i.prompt, i.a, i.b, i.gold, j.created "
                               "FROM judgements j JOIN items i ON i.id = j.item_id JOIN annotators a "
                               "ON a.id = j.annotator_id WHERE j.undone IS NULL ORDER BY j.id").fetchall()
        return [Judgement(*r) for r in rows]

    def counts(self) -> dict[str, int]:
        one = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        return {"items": one("SELECT COUNT(*) FROM items"),
                "gold": one("SELECT COUNT(*) FROM items WHERE gold IS NOT NULL"),
                "judgements": one("SELECT COUNT(*) FROM judgements WHERE undone IS NULL"),
                "undone": one("SELECT COUNT(*) FROM judgements WHERE undone IS NOT NULL")}
