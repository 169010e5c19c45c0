"""The durable webhook spool: SQLite, at-least-once, exponential back-off, dead letters.

A delivery is committed to the spool (WAL, ``synchronous=FULL``) *before* anyone tries
to send it, so a ``kill -9`` at any moment loses nothing: after a restart the same row,
with the same ``webhook-id``, is sent again.  Consumers de-duplicate on that id.

The spool is a plain object that takes ``now`` (UNIX seconds) in every call; the trio
delivery worker (``t38gw.delivery``) is the thin loop that reads the clock and the
network around it.
"""

from __future__ import annotations

import enum
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 3600.0
GIVE_UP_AFTER_SECONDS = 24 * 3600.0  # DESIGN.md: retried for 24 h by default, then dead.


class DeliveryState(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Delivery:
    id: str              # the webhook-id, stable across attempts and restarts
    webhook: str         # the configured webhook's name
    url: str
    event_type: str
    fax_id: str
    body: bytes
    created_at: float
    attempts: int
    next_attempt_at: float
    state: DeliveryState
    last_error: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    webhook TEXT NOT NULL,
    url TEXT NOT NULL,
    event_type TEXT NOT NULL,
    fax_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT '',
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_fax ON deliveries (fax_id);
"""
_COLUMNS = "id, webhook, url, event_type, fax_id, body, created_at, attempts, next_attempt_at, state, last_error"


class Spool:
    """SQLite-backed queue of webhook deliveries."""

    def __init__(self, path: str | Path, *, rng: random.Random | None = None,
                 give_up_after: float = GIVE_UP_AFTER_SECONDS) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._rng = rng or random.Random()
        self.give_up_after = give_up_after

    def close(self) -> None:
        self._db.close()

    def enqueue(self, *, id: str, webhook: str, url: str, event_type: str, fax_id: str,
                body: bytes, now: float) -> None:
        """Commit one delivery durably; enqueuing the same id twice keeps the first."""
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO deliveries (id, webhook, url, event_type, fax_id, body, created_at,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (id, webhook, url, event_type, fax_id, body, now, now),
            )

    def due(self, now: float, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is due, oldest first."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at LIMIT ?", (now, limit)).fetchall()
        return [_row(r) for r in rows]

    def next_due_at(self) -> float | None:
        """When the earliest pending delivery is due (the worker's deadline)."""
        row = self._db.execute(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'").fetchone()
        return row[0]

    def get(self, id: str) -> Delivery | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (id,)).fetchone()
        return _row(row) if row else None

    def for_fax(self, fax_id: str) -> list[Delivery]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE fax_id = ? ORDER BY created_at",
                                (fax_id,)).fetchall()
        return [_row(r) for r in rows]

    def mark_delivered(self, id: str, now: float) -> None:
        with self._db:
            self._db.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, last_error = '',"
                " finished_at = ? WHERE id = ? AND state = 'pending'", (now, id))

    def mark_failed(self, id: str, error: str, now: float) -> DeliveryState:
        """Record a failed attempt; schedule the next with exponential back-off or declare it dead."""
        delivery = self.get(id)
        if delivery is None or delivery.state is not DeliveryState.PENDING:
            return delivery.state if delivery else DeliveryState.DEAD
        attempts = delivery.attempts + 1
        delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempts - 1))
        delay *= self._rng.uniform(0.8, 1.2)  # jitter so a receiver coming back is not stampeded
        next_at = now + delay
        if next_at - delivery.created_at > self.give_up_after:
            with self._db:
                self._db.execute(
                    "UPDATE deliveries SET state = 'dead', attempts = ?, last_error = ?, finished_at = ?"
                    " WHERE id = ?", (attempts, error, now, id))
            return DeliveryState.DEAD
        with self._db:
            self._db.execute(
                "UPDATE deliveries SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (attempts, error, next_at, id))
        return DeliveryState.PENDING

    def depth(self) -> int:
        """Pending deliveries (the spool-depth metric)."""
        return self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0]


def _row(row: tuple) -> Delivery:
    return Delivery(*row[:9], state=DeliveryState(row[9]), last_error=row[10])
