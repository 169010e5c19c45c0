"""The durable webhook spool: SQLite, at-least-once, exponential back-off, dead letters.

A delivery is committed to the spool (WAL, ``synchronous=FULL``) *before* anyone tries
to send it, so a ``kill -9`` at any moment loses nothing: after a restart the same row,
with the same ``webhook-id``, is sent again.  Consumers de-duplicate on that id.

The spool is a plain object that takes ``now`` (UNIX seconds) in every call; the trio
delivery worker (``t38gw.delivery``) is the thin loop that reads the clock and the
network around it.

Patient data: a body holds the whole fax.  The database, its WAL and shared-memory
files are private to the gateway's user (0600, set explicitly); once a delivery is
delivered or dead its body is dropped (the row stays as the record of the delivery and
so that a restart does not spool it again) with ``secure_delete`` on, and the WAL is
checkpointed and truncated, so the bytes are gone from the files rather than merely
unreferenced.  The file is vacuumed when most of it has become free pages.

SQLite errors (disk full, a lock held by someone else, I/O errors) never escape: the
failing call returns a safe answer, ``healthy`` turns false and ``last_error`` says
why, so the gateway can answer new calls 503.  Nothing confirmed is lost: every spooled
delivery is also planned in its fax's ``meta.json``, from which ``enqueue_planned``
spools it again once the spool can be written (``probe``).
"""

from __future__ import annotations

import enum
import os
import random
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from collections.abc import Callable, Collection

import structlog

from t38gw.archive import create_private_file

FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 3600.0
GIVE_UP_AFTER_SECONDS = 24 * 3600.0  # DESIGN.md: retried for 24 h by default, then dead.
# Several worker processes share one spool file; each delivers the webhooks it spooled
# (``owner``), so the POSTs and their bookkeeping use every core instead of worker 0's
# alone.  A delivery its owner has left this long past due (the worker died and is not
# back, or the configuration has fewer workers now) is delivered by worker 0 as well: an
# owner that is alive picks a due delivery up within a second, and one it has in flight is
# recorded within ATTEMPT_TIMEOUT_SECONDS (t38gw.delivery) of being due.
ADOPT_AFTER_SECONDS = 60.0
BUSY_TIMEOUT_SECONDS = 1.0  # the spool runs on the event loop: never block it long on a lock
FILE_MODE = 0o600
PROBE_BYTES = 256 * 1024  # room for a few fax pages before the spool is called healthy again
log = structlog.get_logger("t38gw.spool")
_T = TypeVar("_T")


class SpoolError(Exception):
    """The spool cannot be opened (raised by the constructor only)."""


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


def pending_delivery(*, id: str, webhook: str, url: str, event_type: str, fax_id: str, body: bytes,
                     now: float) -> Delivery:
    """A new delivery as the spool stores it (``Spool.enqueue``): no attempt yet, due at once."""
    return Delivery(id=id, webhook=webhook, url=url, event_type=event_type, fax_id=fax_id, body=body,
                    created_at=now, attempts=0, next_attempt_at=now, state=DeliveryState.PENDING, last_error="")


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
    finished_at REAL,
    owner INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_fax ON deliveries (fax_id);
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL, room BLOB);
"""
_COLUMNS = "id, webhook, url, event_type, fax_id, body, created_at, attempts, next_attempt_at, state, last_error"


class Spool:
    """SQLite-backed queue of webhook deliveries."""

    def __init__(self, path: str | Path, *, rng: random.Random | None = None,
                 give_up_after: float = GIVE_UP_AFTER_SECONDS, owner: int = 0, owners: int = 1) -> None:
        """Open (or create, 0600) the spool at ``path``; ``SpoolError`` if it cannot be opened.

        ``owner`` of ``owners``: the worker process this is (t38gw.workers).  Deliveries
        it enqueues are its own; ``due`` and ``next_due_at`` see its own (a delivery
        enqueued as owner k belongs to worker k modulo ``owners``), and worker 0 also those
        ``ADOPT_AFTER_SECONDS`` overdue.  One process (the default) sees every delivery.
        """
        if not 0 <= owner < owners:
            raise ValueError(f"spool owner {owner} of {owners}")
        self.owner, self.owners = owner, owners
        self.path = str(path)
        self._rng = rng or random.Random()
        self.give_up_after = give_up_after
        self.healthy = True
        self.last_error = ""
        self._files_private = False  # see _private_files
        # One connection, used from the event loop and from worker threads (deliveries'
        # bookkeeping, webhooks being spooled, both off the loop: issue 14): one operation -
        # a transaction with its checkpoint - at a time.  The job queue takes it too.
        self.lock = threading.RLock()
        try:
            if self.path != ":memory:":
                create_private_file(Path(self.path), FILE_MODE)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_SECONDS)
            self._db.execute("PRAGMA secure_delete=ON")  # freed content is overwritten with zeros
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._add_owner_column()
            self._private_files()
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"cannot open the webhook spool {self.path!r}: {exc}") from None
        self._guard("purge", self._purge_finished, None, write=True)

    def _add_owner_column(self) -> None:
        """A spool made before deliveries had owners: its rows become worker 0's."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(deliveries)")}
        if "owner" in columns:
            return
        try:
            self._db.execute("ALTER TABLE deliveries ADD COLUMN owner INTEGER NOT NULL DEFAULT 0")
        except sqlite3.OperationalError:
            # Another worker opening the same file added it first.
            if "owner" not in {row[1] for row in self._db.execute("PRAGMA table_info(deliveries)")}:
                raise

    def _mine(self, now: float) -> tuple[str, tuple[float | int, ...]]:
        """The SQL condition (and its parameters) for the due deliveries this process sends:
        its own (owner k modulo owners: one process sends all), and worker 0 also another's
        left ADOPT_AFTER_SECONDS overdue."""
        return "(owner % ? = ? OR (? AND next_attempt_at <= ?))", (
            self.owners, self.owner, self.owner == 0, now - ADOPT_AFTER_SECONDS)

    def _purge_finished(self) -> None:
        """Drop the bodies of finished deliveries left by an older version (or by a crash
        between finishing a delivery and compacting the file)."""
        if self._db.execute("SELECT 1 FROM deliveries WHERE state != 'pending' AND length(body) > 0"
                            " LIMIT 1").fetchone():
            with self._db:
                self._db.execute("UPDATE deliveries SET body = X'' WHERE state != 'pending'")
        self._compact()  # a WAL left by a crash may still hold dropped bodies

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass

    # -- health -------------------------------------------------------------------
    def _guard(self, operation: str, action: Callable[[], _T], fallback: _T, write: bool) -> _T:
        """Run ``action``; on a SQLite error record it, log it, and return ``fallback``."""
        try:
            with self.lock:
                result = action()
        except sqlite3.Error as exc:
            with self.lock:
                self._failed(operation, exc)
            return fallback
        if write and not self.healthy:
            self.healthy, self.last_error = True, ""
            log.warning("spool_recovered", spool=self.path, operation=operation)
        return result

    def _failed(self, operation: str, exc: sqlite3.Error) -> None:
        try:
            if self._db.in_transaction:
                self._db.rollback()
        except sqlite3.Error:
            pass
        error = f"{type(exc).__name__}: {exc}"
        if self.healthy or error != self.last_error:
            log.error("spool_error", spool=self.path, operation=operation, error=error,
                      consequence="new calls are refused (503) until the spool can be written again;"
                                  " faxes already received keep their planned webhooks in meta.json")
        self.healthy, self.last_error = False, error

    def probe(self, now: float) -> bool:
        """Try a write of ``PROBE_BYTES``; true (and ``healthy``) if the spool can take a fax again.

        A tiny write would succeed on a nearly full disk and let the next fax fail.
        """
        def write() -> bool:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO health (id, checked_at, room) VALUES (1, ?, zeroblob(?))",
                                 (now, PROBE_BYTES))
                self._db.execute("UPDATE health SET room = X'' WHERE id = 1")
            return True
        return self._guard("probe", write, False, write=True)

    # -- queue --------------------------------------------------------------------
    def enqueue(self, *, id: str, webhook: str, url: str, event_type: str, fax_id: str,
                body: bytes, now: float) -> bool:
        """Commit one delivery durably; enqueuing the same id twice keeps the first.

        Returns false (and the spool turns unhealthy) if SQLite could not commit it.
        """
        return self.enqueue_delivery(pending_delivery(id=id, webhook=webhook, url=url, event_type=event_type,
                                                      fax_id=fax_id, body=body, now=now))

    def enqueue_delivery(self, delivery: Delivery) -> bool:
        """``enqueue`` of a delivery made by ``pending_delivery`` (the one a worker is then
        handed, ``DeliveryWorker.offer``)."""
        def insert() -> bool:
            with self._db:
                self._db.execute(
                    "INSERT OR IGNORE INTO deliveries (id, webhook, url, event_type, fax_id, body, created_at,"
                    " next_attempt_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (delivery.id, delivery.webhook, delivery.url, delivery.event_type, delivery.fax_id,
                     delivery.body, delivery.created_at, delivery.next_attempt_at, self.owner),
                )
            self._private_files()
            return True
        return self._guard("enqueue", insert, False, write=True)

    def due(self, now: float, limit: int = 100, exclude: Collection[str] = ()) -> list[Delivery]:
        """This process's pending deliveries whose next attempt is due, oldest first, but
        those in ``exclude`` (ids a worker holds already: their bodies are not read again)."""
        skipped = ""
        if exclude:
            skipped = f" AND id NOT IN ({','.join('?' * len(exclude))})"
        mine, mine_args = self._mine(now)
        return self._guard("due", lambda: [_row(r) for r in self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ? AND {mine}{skipped}"
            " ORDER BY next_attempt_at LIMIT ?", (now, *mine_args, *exclude, limit)).fetchall()], [], write=False)

    def next_due_at(self) -> float | None:
        """When this process's earliest pending delivery is due (the worker's deadline):
        another worker's counts ADOPT_AFTER_SECONDS later, and for worker 0 only."""
        sql = ("SELECT MIN(CASE WHEN owner % ? = ? THEN next_attempt_at ELSE next_attempt_at + ? END)"
               " FROM deliveries WHERE state = 'pending' AND (owner % ? = ? OR ?)")
        args = (self.owners, self.owner, ADOPT_AFTER_SECONDS, self.owners, self.owner, self.owner == 0)
        return self._guard("next_due_at", lambda: self._db.execute(sql, args).fetchone()[0], None, write=False)

    def has(self, id: str) -> bool:
        """Whether delivery ``id`` is in the spool (its body is not read)."""
        return self._guard("has", lambda: self._db.execute(
            "SELECT 1 FROM deliveries WHERE id = ?", (id,)).fetchone() is not None, False, write=False)

    def get(self, id: str) -> Delivery | None:
        def read() -> Delivery | None:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (id,)).fetchone()
            return _row(row) if row else None
        return self._guard("get", read, None, write=False)

    def for_fax(self, fax_id: str) -> list[Delivery]:
        return self._guard("for_fax", lambda: [_row(r) for r in self._db.execute(
            f"SELECT {_COLUMNS} FROM deliveries WHERE fax_id = ? ORDER BY created_at", (fax_id,)).fetchall()],
            [], write=False)

    def mark_delivered(self, ids: str | Collection[str], now: float) -> None:
        """Record success and drop the body, of one delivery or several (one transaction, one
        compaction); a lost update only means one more, de-duplicated, delivery."""
        batch = [ids] if isinstance(ids, str) else list(ids)

        def update() -> None:
            with self._db:
                self._db.executemany(
                    "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, last_error = '',"
                    " finished_at = ?, body = X'' WHERE id = ? AND state = 'pending'", [(now, id) for id in batch])
            self._compact()
        self._guard("mark_delivered", update, None, write=True)

    def mark_failed(self, id: str, error: str, now: float) -> DeliveryState:
        """Record a failed attempt; schedule the next with exponential back-off or declare it dead.

        A dead delivery's body is dropped.  If SQLite fails, the delivery stays pending.
        """
        def update() -> DeliveryState:
            row = self._db.execute("SELECT attempts, created_at, state FROM deliveries WHERE id = ?",
                                   (id,)).fetchone()
            if row is None or row[2] != DeliveryState.PENDING.value:
                return DeliveryState(row[2]) if row else DeliveryState.DEAD
            attempts, created_at = row[0] + 1, row[1]
            delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempts - 1))
            delay *= self._rng.uniform(0.8, 1.2)  # jitter so a receiver coming back is not stampeded
            next_at = now + delay
            if next_at - created_at > self.give_up_after:
                with self._db:
                    self._db.execute(
                        "UPDATE deliveries SET state = 'dead', attempts = ?, last_error = ?, finished_at = ?,"
                        " body = X'' WHERE id = ?", (attempts, error, now, id))
                self._compact()
                return DeliveryState.DEAD
            with self._db:
                self._db.execute(
                    "UPDATE deliveries SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
                    (attempts, error, next_at, id))
            return DeliveryState.PENDING
        return self._guard("mark_failed", update, DeliveryState.PENDING, write=True)

    def depth(self) -> int:
        """Pending deliveries (the spool-depth metric); -1 if the spool cannot be read."""
        return self._guard("depth", lambda: self._db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0], -1, write=False)

    # -- patient data on disk ------------------------------------------------------------
    def _compact(self) -> None:
        """Move the WAL into the file and truncate it; vacuum once most pages are free."""
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:  # another connection (an operator's sqlite3 shell) holds a read lock
            log.warning("spool_checkpoint_busy", spool=self.path,
                        detail="the WAL still holds dropped bodies until the next checkpoint")
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        if pages > VACUUM_MIN_PAGES and free * 2 > pages:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def _private_files(self) -> None:
        """0600 on the database, its WAL and shm, whatever the umask was (SQLite copies the
        database's mode to the files it creates beside it, this makes sure).  Once all
        three are there, no more: SQLite removes the WAL and shm only when the last
        connection closes, and ours stays open (three chmods a spooled fax, each letting
        go of the GIL beside a busy event loop: issue 14)."""
        if self.path == ":memory:" or self._files_private:
            return
        found = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(self.path + suffix, FILE_MODE)
                found += 1
            except FileNotFoundError:
                pass
        self._files_private = found == 3


VACUUM_MIN_PAGES = 16


def _row(row: tuple) -> Delivery:
    return Delivery(*row[:9], state=DeliveryState(row[9]), last_error=row[10])
