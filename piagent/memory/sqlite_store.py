"""MEMORY_BACKEND=sqlite: conversations in one SQLite file, shared by the workers of one machine.

WAL mode lets readers and the one writer of the moment work side by side; every
change is one short `BEGIN IMMEDIATE` transaction, so workers queue for the write lock
(SQLite's busy timeout) instead of failing. sqlite3 does not yield to gevent, and that
wait may last seconds: under gevent the factory runs the calls off the event loop
(off_loop.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MemoryUnavailable
from . import sqlite_sql as sql
from .base import (
    TITLE_MAX_CHARS,
    ConversationSummary,
    MemoryLimits,
    Message,
    NewExchange,
    Recollection,
    StoredMessage,
    clipped,
)

# How long a worker waits for another one's write transaction before giving up.
BUSY_TIMEOUT_S = 5.0


class SqliteStore:
    """Conversations in a SQLite file: survives restarts, shared by every worker using it."""

    def __init__(
        self, path: Path, limits: MemoryLimits, *, clock: Callable[[], float] = time.time
    ) -> None:
        """Open (creating if needed) the file; MemoryUnavailable when it cannot be used."""
        self.path = path
        self._limits = limits
        # Wall-clock time: it is shared by processes and outlives restarts, as the file does.
        self._clock = clock
        # One connection per process, used under a lock: under gevent every greenlet
        # shares the thread, and under a threaded server the lock keeps transactions apart.
        self._lock = threading.Lock()
        with self._errors_named():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL keeps the file consistent through any crash and skips an
            # fsync per commit; only a power cut can lose the last moments of conversation.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(f"BEGIN IMMEDIATE;\n{sql.SCHEMA}\nCOMMIT;")
        self._identity = _identity(path)

    def begin(self, conversation_id: str, holder: str, lease_s: float) -> Recollection | None:
        """Claim the conversation and recall it; None while another holder has it."""
        now = self._clock()
        claim = {"id": conversation_id, "holder": holder, "until": now + lease_s, "now": now}
        touch = {"id": conversation_id, "now": now, "oldest": self._oldest_alive(now)}
        with self._transaction() as db:
            if db.execute(sql.HOLD, claim).rowcount != 1:
                return None
            touched = db.execute(sql.TOUCH, touch).fetchone()
            if touched is None:
                return Recollection([])
            rows = db.execute(
                "SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            )
            return Recollection([Message(role, content) for role, content in rows], touched[0])

    def renew(self, conversation_id: str, holder: str, lease_s: float) -> bool:
        """Extend the claim; False when it lapsed or passed to another holder."""
        now = self._clock()
        claim = {"id": conversation_id, "holder": holder, "until": now + lease_s, "now": now}
        with self._transaction() as db:
            return db.execute(sql.RENEW, claim).rowcount == 1

    def end(self, conversation_id: str, holder: str, exchange: NewExchange | None = None) -> None:
        """Keep the exchange, if any, and let go of the claim."""
        with self._transaction() as db:
            if exchange is not None:
                self._keep(db, conversation_id, exchange)
            db.execute(
                "DELETE FROM holds WHERE conversation_id = ? AND holder = ?",
                (conversation_id, holder),
            )

    def transcript(self, conversation_id: str) -> list[StoredMessage] | None:
        """Every remembered message with its time; looking does not count as use."""
        oldest = self._oldest_alive(self._clock())
        with self._transaction(write=False) as db:
            rows = db.execute(sql.TRANSCRIPT, {"id": conversation_id, "oldest": oldest}).fetchall()
        return [StoredMessage(*row) for row in rows] or None

    def forget(self, conversation_id: str) -> bool:
        """Drop the conversation; False when it was unknown."""
        oldest = self._oldest_alive(self._clock())
        with self._transaction() as db:
            dropped = db.execute(
                "DELETE FROM conversations WHERE id = ? AND last_used >= ?",
                (conversation_id, oldest),
            )
            return dropped.rowcount == 1

    def conversations(self, namespace: str, limit: int) -> list[ConversationSummary]:
        """The namespace's conversations, most recently updated first; looking is not use."""
        listing = {
            "namespace": namespace,
            "oldest": self._oldest_alive(self._clock()),
            "limit": limit,
        }
        with self._transaction(write=False) as db:
            rows = db.execute(sql.LIST, listing).fetchall()
        return [
            # Cut here, not by SQL: SQLite's substr() stops at a NUL, which a message may hold.
            ConversationSummary(
                conversation_id=key, title=title[:TITLE_MAX_CHARS], updated_at=at, messages=count
            )
            for key, count, at, title in rows
        ]

    def __len__(self) -> int:
        """How many conversations are remembered."""
        oldest = self._oldest_alive(self._clock())
        with self._transaction(write=False) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM conversations WHERE last_used >= ?", (oldest,)
            ).fetchone()
            return count

    def check(self) -> None:
        """Read the file, and make sure it is still the one at `path`.

        A file deleted or replaced while open still works for this process, but what it
        keeps from then on is lost at the next restart.
        """
        with self._transaction(write=False) as db:
            db.execute("SELECT 1 FROM conversations LIMIT 1").fetchall()
        if _identity(self.path) != self._identity:
            raise MemoryUnavailable(
                f"the conversation memory file {self.path} was deleted or replaced while "
                "piagent ran; restart piagent, or what it keeps now is lost at the next restart"
            )

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _keep(self, db: sqlite3.Connection, conversation_id: str, exchange: NewExchange) -> None:
        user_text, reply_text = clipped(exchange, self._limits)
        kept = self._limits.kept_messages
        now = self._clock()
        self._expire(db, now)
        if kept == 0:  # MEMORY_MAX_TURNS below 2 keeps nothing
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return
        saved = {"id": conversation_id, "now": now, "ratio": exchange.token_ratio}
        db.execute(sql.SAVE_CONVERSATION, saved)
        held, last = db.execute(
            "SELECT count(*), coalesce(max(seq), 0) FROM messages WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchone()
        db.executemany(
            "INSERT INTO messages (conversation_id, seq, role, content, at) VALUES (?, ?, ?, ?, ?)",
            [
                (conversation_id, last + 1, "user", user_text, exchange.asked_at),
                (conversation_id, last + 2, "assistant", reply_text, now),
            ],
        )
        db.execute(
            "DELETE FROM messages WHERE conversation_id = :id AND seq IN ("
            "SELECT seq FROM messages WHERE conversation_id = :id ORDER BY seq LIMIT :dropped)",
            {"id": conversation_id, "dropped": self._limits.dropped(held + 2, exchange.forgotten)},
        )
        db.execute(sql.DROP_LEAST_RECENT, {"max": self._limits.max_conversations})

    def _oldest_alive(self, now: float) -> float:
        """The earliest last use of a conversation that has not expired."""
        return now - self._limits.ttl_s if self._limits.ttl_s > 0 else float("-inf")

    def _expire(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM conversations WHERE last_used < ?", (self._oldest_alive(now),))
        db.execute("DELETE FROM holds WHERE until <= ?", (now,))

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; a write one takes the lock at once, so it never has to upgrade."""
        with self._lock, self._errors_named():
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # some errors have rolled it back already
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _errors_named(self) -> Iterator[None]:
        """Turn SQLite's and the file system's errors into a 503 that names the file."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise MemoryUnavailable(
                f"the conversation memory file {self.path} cannot be used: {exc}"
            ) from None


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` (device and inode), or None when there is none."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino
