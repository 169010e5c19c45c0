"""The durable queue of outbound fax jobs: a table in the spool's SQLite database.

A job is created by ``POST /v1/faxes`` after its archive folder (the pages to send and
``meta.json`` with ``status: "queued"``) is on disk, and before the client hears 202: a
job the client was told about survives ``kill -9``.  The folder is the record people
read (``GET /v1/faxes/{id}``); this table is only the scheduler's state: when the job
may be dialled next, how many attempts it has had, and whether an attempt is running.

Like the spool, the store is plain and takes ``now`` (UNIX seconds) in every call; the
gateway's job runner (``t38gw.gateway``) is the thin trio loop around it.

Attempts and back-off (issue 12, ``[send] retries`` / ``retry_after``): an attempt that
failed for a reason worth retrying (busy, no answer, 5xx, unreachable, our shutdown, a
T.30 failure before the document was confirmed) is retried ``retry_after * 2**(n-1)``
seconds after the n-th failure, at most ``retries`` times.  A job found ``running`` at
start-up was interrupted by a crash or a kill: it is queued again at once and sent from
the start (the receiving machine may get the first pages twice; a fax silently lost is
worse).
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class _SpoolDatabase(Protocol):
    """``t38gw.spool.Spool``: the one SQLite connection jobs and deliveries share."""

    _db: sqlite3.Connection

_SCHEMA = """
CREATE TABLE IF NOT EXISTS send_jobs (
    id TEXT PRIMARY KEY,
    to_ TEXT NOT NULL,
    trunk TEXT NOT NULL,
    folder TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS send_jobs_due ON send_jobs (state, next_attempt_at);
"""
_COLUMNS = "id, to_, trunk, folder, created_at, state, attempts, next_attempt_at"


class JobStoreError(Exception):
    """The job table cannot be read or written (the disk, a lock...): the message says why."""


class JobState(enum.Enum):
    QUEUED = "queued"  # waiting for its (next) attempt
    RUNNING = "running"  # an attempt is dialling or sending
    DONE = "done"  # finished: sent, or given up (the folder says which)


@dataclass(frozen=True)
class Job:
    id: str  # the fax id: names the archive folder, the API record and the webhooks
    to: str  # as the client gave it
    trunk: str  # the trunk the dial plan chose when queued ("" for a direct URI)
    folder: str  # the archive folder
    created_at: float
    state: JobState
    attempts: int  # attempts started so far
    next_attempt_at: float


class JobStore:
    """The ``send_jobs`` table in the spool's database (one file, one connection)."""

    def __init__(self, spool: _SpoolDatabase, *, retries: int, retry_after: float) -> None:
        self._db = spool._db
        # The spool's lock: its deliveries are recorded from worker threads on this connection.
        self._lock: threading.RLock = getattr(spool, "lock", None) or threading.RLock()
        self.retries = retries
        self.retry_after = float(retry_after)
        self._run(lambda: self._db.executescript(_SCHEMA))

    def _run(self, action: Callable[[], _T]) -> _T:
        with self._lock:
            return self._run_locked(action)

    def _run_locked(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except sqlite3.Error as exc:
            try:
                if self._db.in_transaction:
                    self._db.rollback()
            except sqlite3.Error:
                pass
            raise JobStoreError(f"the job queue cannot be written: {type(exc).__name__}: {exc}") from None

    def add(self, *, id: str, to: str, trunk: str, folder: str, now: float) -> None:
        def insert() -> None:
            with self._db:
                self._db.execute("INSERT INTO send_jobs (id, to_, trunk, folder, created_at, next_attempt_at)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", (id, to, trunk, folder, now, now))
        self._run(insert)

    def get(self, id: str) -> Job | None:
        row = self._run(lambda: self._db.execute(f"SELECT {_COLUMNS} FROM send_jobs WHERE id = ?",
                                                 (id,)).fetchone())
        return _job(row) if row else None

    def due(self, now: float, limit: int = 100) -> list[Job]:
        """Queued jobs whose time has come, the longest waiting first."""
        rows = self._run(lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM send_jobs WHERE state = 'queued' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, created_at LIMIT ?", (now, limit)).fetchall())
        return [_job(row) for row in rows]

    def next_due_at(self) -> float | None:
        row = self._run(lambda: self._db.execute(
            "SELECT min(next_attempt_at) FROM send_jobs WHERE state = 'queued'").fetchone())
        return float(row[0]) if row and row[0] is not None else None

    def queued(self) -> int:
        """Jobs not finished yet (waiting or running)."""
        row = self._run(lambda: self._db.execute(
            "SELECT count(*) FROM send_jobs WHERE state != 'done'").fetchone())
        return int(row[0])

    def start_attempt(self, id: str, now: float) -> int:
        """Mark the job running; returns the attempt's number (1-based)."""
        def update() -> int:
            # One statement (RETURNING: SQLite 3.35) so the count read is the count written.
            row = self._db.execute("UPDATE send_jobs SET state = 'running', attempts = attempts + 1 WHERE id = ?"
                                   " RETURNING attempts", (id,)).fetchone()
            return int(row[0]) if row else 0
        return int(self._run(update))

    def retry_at(self, attempts: int, now: float) -> float | None:
        """When a job whose ``attempts``-th attempt just failed (retryably) may be dialled
        again, or None when its retries are used up."""
        if attempts > self.retries:
            return None
        return now + self.retry_after * (1 << max(0, attempts - 1))

    def requeue(self, id: str, at: float) -> None:
        def update() -> None:
            with self._db:
                self._db.execute("UPDATE send_jobs SET state = 'queued', next_attempt_at = ? WHERE id = ?", (at, id))
        self._run(update)

    def finish(self, id: str, now: float) -> None:
        def update() -> None:
            with self._db:
                self._db.execute("UPDATE send_jobs SET state = 'done', finished_at = ? WHERE id = ?", (now, id))
        self._run(update)

    def interrupted(self) -> list[Job]:
        """Jobs a previous run left ``running`` (it was killed mid-attempt)."""
        rows = self._run(lambda: self._db.execute(
            f"SELECT {_COLUMNS} FROM send_jobs WHERE state = 'running'").fetchall())
        return [_job(row) for row in rows]

    def unfinished_ids(self) -> set[str]:
        rows = self._run(lambda: self._db.execute("SELECT id FROM send_jobs WHERE state != 'done'").fetchall())
        return {row[0] for row in rows}


def _job(row: tuple[Any, ...]) -> Job:
    return Job(id=row[0], to=row[1], trunk=row[2], folder=row[3], created_at=row[4], state=JobState(row[5]),
               attempts=row[6], next_attempt_at=row[7])
