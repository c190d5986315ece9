"""A grade cache on disk: SQLite in WAL mode, safe for several processes.

A key is the hash of (grader identity, proposition's prompt template, the
conversation and the response); the value is P(yes) and the answer mass. A
changed model, template or text is a different key, so nothing goes stale.

Where it lives (`default_cache_path`), as pip and transformers keep theirs:
`$RBRLANG_CACHE` (the file) if set, else `$XDG_CACHE_HOME/rbrlang/grades.sqlite`,
else `~/.cache/rbrlang/grades.sqlite`. A cache that cannot be opened or written
is a `PathError` naming its path.

A `GradeCache` pickles as its path, and a process other than the one that
opened it (a pickled copy, a forked worker) opens its own connection on first
use: an SQLite connection neither pickles nor survives a fork.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import PathError

CACHE_ENV = "RBRLANG_CACHE"
CACHE_FILE = "grades.sqlite"
# In the library's words (`cache` of `GraderOptions`); the CLI shows its flags (`errors.RbrError.params`).
CACHE_HELP = "give another file as `cache=PATH` (or $RBRLANG_CACHE), or grade without one (`cache=None`)"
CACHE_PARAMS = ("cache",)

SCHEMA = """
CREATE TABLE IF NOT EXISTS grades (
  key TEXT PRIMARY KEY,
  p_yes REAL NOT NULL,
  answer_mass REAL NOT NULL,
  created REAL NOT NULL
)
"""


def item_key(grader_id: str, template_sha: str, conversation: Sequence[Mapping[str, str]], response: str) -> str:
    text = json.dumps([grader_id, template_sha, list(conversation), response], ensure_ascii=False,
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    """`$RBRLANG_CACHE`, else `$XDG_CACHE_HOME/rbrlang/grades.sqlite`, else `~/.cache/rbrlang/grades.sqlite`."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "rbrlang" / CACHE_FILE
    try:
        home = Path.home()
    except RuntimeError:  # no $HOME and no password entry
        raise PathError("~/.cache", "no home folder to keep the grade cache in", CACHE_HELP,
                        params=CACHE_PARAMS) from None
    return home / ".cache" / "rbrlang" / CACHE_FILE


class GradeCache:
    def __init__(self, path):
        self.path = Path(path)
        self._db, self._pid = None, None
        self._connect()  # a cache that cannot be opened is an error now, not at the first grade

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path, self._db, self._pid = state["path"], None, None

    def _connect(self) -> sqlite3.Connection:
        """This process's connection, opened on first use."""
        if self._db is not None and self._pid == os.getpid():
            return self._db
        db = None
        try:
            if self.path.is_dir():
                raise PathError(self.path, "cannot open the grade cache: it is a folder", CACHE_HELP, params=CACHE_PARAMS)
            above = next(p for p in self.path.parents if p.exists() or p == p.parent)
            if not above.is_dir():
                raise PathError(self.path, f"cannot create the grade cache: {above} is a file", CACHE_HELP,
                                params=CACHE_PARAMS)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._retry(lambda: db.execute(SCHEMA))
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, PathError):
                raise
            raise self._error(exc, "cannot open the grade cache") from None
        self._db, self._pid = db, os.getpid()
        return db

    def _error(self, exc: Exception, doing: str) -> PathError:
        reason = (getattr(exc, "strerror", None) or str(exc)).lower()
        return PathError(self.path, f"{doing}: {reason}", CACHE_HELP, params=CACHE_PARAMS)

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            marks = ",".join("?" * len(chunk))
            try:
                rows = self._retry(lambda: self._connect().execute(
                    f"SELECT key, p_yes, answer_mass FROM grades WHERE key IN ({marks})", chunk).fetchall())
            except sqlite3.Error as exc:
                raise self._error(exc, "cannot read the grade cache") from None
            out.update({k: (p, m) for k, p, m in rows})
        return out

    def put_many(self, rows: Iterable[tuple[str, float, float]]) -> None:
        now = time.time()
        data = [(k, float(p), float(m), now) for k, p, m in rows]
        if not data:
            return

        def write():
            db = self._connect()
            with db:  # one transaction
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?)", data)
        try:
            self._retry(write)
        except sqlite3.Error as exc:  # a full disk, a cache made read-only meanwhile
            raise self._error(exc, "cannot write the grade cache") from None

    def __len__(self) -> int:
        return self._retry(lambda: self._connect().execute("SELECT COUNT(*) FROM grades").fetchone()[0])

    def close(self) -> None:
        """Close this process's connection (a later use opens a new one)."""
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    @staticmethod
    def _retry(fn, attempts: int = 20):
        # `timeout` covers most contention; a burst of writers can still see
        # "database is locked" on BEGIN, so back off and try again.
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))
