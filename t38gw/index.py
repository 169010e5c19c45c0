"""A searchable index of the archive (issue 15): one SQLite row per fax folder.

The archive's ``meta.json`` files stay the system of record; this index is derived from
them and can be rebuilt from the folders at any time (``rebuild``), so it trades durability
for speed (WAL, ``synchronous=NORMAL``: a power loss may lose the last upserts, never
corrupt the file).  The writer calls ``upsert`` after every ``meta.json`` it writes.

How a search stays fast on millions of rows:

* Pages are ordered newest first by ``(started_at, id)`` and paged by **keyset** (the
  cursor carries the last row's ``started_at`` and ``id``; the next page is the rows
  strictly after it in that order), never by OFFSET: page n costs what page 1 costs, and a
  fax inserted between two page requests cannot shift rows into a duplicate or a gap.
* ``caller`` / ``did`` match a number by its trailing digits ("0555" finds "+1 555 0555").
  A suffix is not indexable, so each number is stored a second time as its digits reversed
  (``caller_key``): a trailing-digits match is a prefix match on that column, a range
  ``[key, key + ":")`` (``":"`` follows ``"9"`` in ASCII) that a B-tree index answers.
  A caller with no digits (``anonymous``) is keyed ``"~" + casefold(caller)`` and matched whole.
* ``status``, ``direction`` and ``route`` have composite indexes ending in
  ``(started_at, id)``, so an equality filter, a date range and the ordering are one index
  walk.
* ``q`` is FTS5 (SQLite's full-text index) over the numbers, idents, route, reason, trunk
  and a yet unused ``ocr_text`` column.  User text is never passed through as FTS5 query
  syntax: it is split into words (what FTS5's unicode61 tokenizer would keep) and each word
  is quoted, so ``555"`` or ``AND`` are words to look for, not syntax errors.  ``word*`` is
  a prefix search.  The words must all occur (AND).  Numbers are indexed as written, as
  digits, and as their last 10 and 7 digits, so ``q=5550199`` finds ``+1 555 0199``.
* ``remote_ident`` (a case-insensitive substring) of 3 characters or more is looked up in
  a trigram FTS5 table of the casefolded idents; a shorter one is checked row by row.
* A full-text match is read newest first without collecting every match: the FTS5 rowid is
  the fax's ``sort_key`` (start millisecond << 20 | a counter), and FTS5 walks a rowid range
  in order, so a word in a third of all faxes costs what a rare one does
  (``ArchiveIndex._stream_full_text``).

Folders are stored **absolute** (``folder.absolute()``): the index does not need to know
the archive root, and an archive moved elsewhere is re-indexed by ``rebuild``.

Blocking, plain ``sqlite3``; safe to share between threads (one connection per thread,
writers serialised by SQLite's write lock with a busy timeout) and between processes (the
CLI and the gateway).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t38gw import archive

SCHEMA_VERSION = 1
KEY_BITS = 20  # sort_key = started_at in ms << KEY_BITS | n-th fax of that millisecond
MAX_KEY_MS = (1 << (62 - KEY_BITS)) - 1  # keys stay below 2**62: a bound one past the end fits an int64 (until 2109)
FTS_CHUNK = 256  # full-text candidates fetched at first; each further fetch is 4 times larger
FILE_MODE = 0o600
BUSY_TIMEOUT_SECONDS = 10.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
CACHE_KIB = 65536  # per connection, an upper bound: pages are only held once read
REBUILD_BATCH = 1000  # folders read and upserted per write transaction
DIRECTIONS = ("inbound", "outbound")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS faxes (
    id TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    direction TEXT NOT NULL,
    status TEXT NOT NULL,
    in_progress INTEGER NOT NULL,
    started_at REAL NOT NULL,
    started_at_text TEXT,
    ended_at REAL,
    ended_at_text TEXT,
    caller TEXT NOT NULL,
    caller_key TEXT NOT NULL,
    did TEXT NOT NULL,
    did_key TEXT NOT NULL,
    remote_ident TEXT NOT NULL,
    remote_ident_folded TEXT NOT NULL,
    trunk TEXT NOT NULL,
    route TEXT NOT NULL,
    media TEXT,
    pages INTEGER NOT NULL,
    reason TEXT NOT NULL,
    to_ TEXT NOT NULL,
    held INTEGER NOT NULL,
    row_hash TEXT NOT NULL,
    updated_at REAL NOT NULL,
    sort_key INTEGER NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS faxes_newest ON faxes (started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS faxes_status ON faxes (status, started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS faxes_direction ON faxes (direction, started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS faxes_route ON faxes (route, started_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS faxes_caller ON faxes (caller_key);
CREATE INDEX IF NOT EXISTS faxes_did ON faxes (did_key);
CREATE VIRTUAL TABLE IF NOT EXISTS faxes_fts USING fts5 (
    numbers, idents, route, reason, trunk, ocr_text, tokenize = 'unicode61', detail = 'none'
);
CREATE VIRTUAL TABLE IF NOT EXISTS faxes_ident USING fts5 (
    remote_ident_folded, tokenize = 'trigram case_sensitive 1'
);
"""

# The values a row is built from, in column order (``folder`` .. ``held``).
_ROW_COLUMNS = ("id", "folder", "direction", "status", "in_progress", "started_at", "started_at_text", "ended_at",
                "ended_at_text", "caller", "caller_key", "did", "did_key", "remote_ident", "remote_ident_folded",
                "trunk", "route", "media", "pages", "reason", "to_", "held")
_FTS_COLUMNS = ("numbers", "idents", "route", "reason", "trunk")
_RESULT_COLUMNS = "id, direction, status, reason, started_at_text, ended_at_text, pages, caller, did, remote_ident, " \
                  "route, media, to_, started_at"

_WORD = re.compile(r"([^\W_]+)(\*?)")  # what FTS5's unicode61 tokenizer keeps as a token (letters, digits)


class IndexQueryError(ValueError):
    """A search parameter is not acceptable; ``param`` names it (the API answers 400 with it)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class ArchiveIndexError(Exception):
    """The index file cannot be opened or written (delete it and ``rebuild``)."""


@dataclass(frozen=True)
class IndexedFax:
    """What the index keeps of one ``meta.json``: the row's values and the full-text columns."""

    row: tuple[Any, ...]  # in _ROW_COLUMNS order
    fts: tuple[str, ...]  # in _FTS_COLUMNS order

    @property
    def fax_id(self) -> str:
        return str(self.row[0])

    @property
    def row_hash(self) -> str:
        encoded = json.dumps([self.row, self.fts], separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(encoded.encode()).hexdigest()


def indexed_fax(meta: dict[str, Any], folder: Path) -> IndexedFax:
    """The row for ``meta`` (inbound or outbound, of this version or an older one: absent
    keys are empty).  ``ValueError`` if it has no ``id``."""
    fax_id = meta.get("id")
    if not isinstance(fax_id, str) or not fax_id:
        raise ValueError(f"meta.json in {folder} has no id")
    sip = _mapping(meta.get("sip"))
    t30 = _mapping(meta.get("t30"))
    caller, did = _text(sip.get("caller")), _text(sip.get("did"))
    remote_ident, local_ident = _text(t30.get("remote_ident")), _text(t30.get("local_ident"))
    to = _text(meta.get("to"))
    trunk, route, reason = _text(sip.get("trunk")), _text(meta.get("route")), _text(meta.get("reason"))
    started_text = meta.get("started_at") if isinstance(meta.get("started_at"), str) else None
    ended_text = meta.get("ended_at") if isinstance(meta.get("ended_at"), str) else None
    started_at = archive.parse_rfc3339(started_text)
    if started_at is None:
        started_at = _uuid7_seconds(fax_id)  # an id made by t38gw.ids carries its creation time
    pages = meta.get("pages")
    media = meta.get("media")
    row = (
        fax_id, str(folder.absolute()), _text(meta.get("direction")), _text(meta.get("status")),
        int(bool(meta.get("in_progress"))), started_at, started_text, archive.parse_rfc3339(ended_text), ended_text,
        caller, number_key(caller), did, number_key(did), remote_ident, remote_ident.casefold(),
        trunk, route, media if isinstance(media, str) else None, len(pages) if isinstance(pages, list) else 0,
        reason, to, int(bool(meta.get("hold"))),
    )
    fts = (_number_words(caller, did, to), f"{remote_ident} {local_ident}".strip(), route, reason, trunk)
    return IndexedFax(row, fts)


def number_key(number: str) -> str:
    """The indexed form of a number: its digits reversed (a trailing-digits match becomes a
    prefix match), or ``"~"`` + the casefolded text when it has no digit (``anonymous``)."""
    digits = re.sub(r"\D", "", number)
    return digits[::-1] if digits else "~" + number.strip().casefold()


class ArchiveIndex:
    """The index database at ``path`` (created 0600 with its folder 0700 if missing).

    ``needs_rebuild`` is True when the file was just created or was of another schema
    version (its tables are then dropped): the caller should ``rebuild`` from the archive.
    ``ArchiveIndexError`` if the file cannot be opened (e.g. it is not a database).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._local = threading.local()
        # Each thread's connection, with the thread: trio's worker threads come and go (an
        # idle one exits after a while), and a connection whose thread is gone is closed
        # when the next one is opened (a soak grew 68 of them, 155 MiB, in one minute).
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self.needs_rebuild = False
        try:
            archive.create_private_file(self.path, FILE_MODE)
            db = self._db()
            db.execute("PRAGMA journal_mode=WAL")
            with _write(db):
                version = db.execute("PRAGMA user_version").fetchone()[0]
                exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'faxes'").fetchone() is not None
                if exists and version != SCHEMA_VERSION:
                    db.execute("DROP TABLE IF EXISTS faxes")
                    db.execute("DROP TABLE IF EXISTS faxes_fts")
                    db.execute("DROP TABLE IF EXISTS faxes_ident")
                    exists = False
                if not exists:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    self.needs_rebuild = True
            self._private_files()
        except (sqlite3.Error, OSError, ArchiveIndexError) as exc:
            self.close()
            raise ArchiveIndexError(f"cannot open the archive index {str(self.path)!r}: {exc}") from None

    # -- connections ---------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=BUSY_TIMEOUT_SECONDS)
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: consistent after a crash, rebuildable
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # a bulk load touches every index's pages at random
            self._local.db = db
            with self._connections_lock:
                gone = [c for thread, c in self._connections if not thread.is_alive()]
                self._connections = [(thread, c) for thread, c in self._connections if thread.is_alive()]
                self._connections.append((threading.current_thread(), db))
            for stale in gone:
                try:
                    stale.close()
                except sqlite3.Error:
                    pass
        return db

    def close(self) -> None:
        """Close every thread's connection (the object is unusable after)."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for _thread, db in connections:
            try:
                db.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def _private_files(self) -> None:
        # SQLite gives the -wal and -shm files the database's mode; make sure whatever the umask.
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(f"{self.path}{suffix}", FILE_MODE)
            except FileNotFoundError:
                pass

    # -- writing -------------------------------------------------------------------------

    def upsert(self, meta: dict[str, Any], folder: Path) -> bool:
        """Index (or re-index) one fax from its ``meta.json`` content, in one transaction.

        Idempotent: the same meta again changes nothing (not even ``updated_at``).  Returns
        True if the row was added or changed.  ``ValueError`` if meta has no ``id``.
        """
        entry = indexed_fax(meta, folder)
        db = self._db()
        with _write(db):
            return self._store(db, entry)

    def upsert_many(self, items: Iterable[tuple[dict[str, Any], Path]]) -> int:
        """``upsert`` each (meta, folder) in ONE transaction (bulk loads); returns how many
        rows were added or changed."""
        entries = [indexed_fax(meta, folder) for meta, folder in items]
        db = self._db()
        with _write(db):
            return sum(self._store(db, entry) for entry in entries)

    def _store(self, db: sqlite3.Connection, entry: IndexedFax) -> bool:
        row_hash = entry.row_hash
        found = db.execute("SELECT sort_key, row_hash FROM faxes WHERE id = ?", (entry.fax_id,)).fetchone()
        if found is not None and found[1] == row_hash:
            return False
        now = self._clock()
        started_ms = _key_ms(entry.row[5])
        fts_columns = ", ".join(_FTS_COLUMNS)
        if found is None:
            key = _free_key(db, started_ms)
            placeholders = ", ".join("?" * (len(_ROW_COLUMNS) + 3))
            db.execute(f"INSERT INTO faxes ({', '.join(_ROW_COLUMNS)}, row_hash, updated_at, sort_key)"
                       f" VALUES ({placeholders})", (*entry.row, row_hash, now, key))
            db.execute(f"INSERT INTO faxes_fts (rowid, {fts_columns}, ocr_text) VALUES (?, ?, ?, ?, ?, ?, '')",
                       (key, *entry.fts))
            db.execute("INSERT INTO faxes_ident (rowid, remote_ident_folded) VALUES (?, ?)", (key, entry.row[14]))
            return True
        key = found[0]
        if key >> KEY_BITS != started_ms:  # the start time changed: the fax moves to another millisecond
            ocr_row = db.execute("SELECT ocr_text FROM faxes_fts WHERE rowid = ?", (key,)).fetchone()
            db.execute("DELETE FROM faxes_fts WHERE rowid = ?", (key,))
            db.execute("DELETE FROM faxes_ident WHERE rowid = ?", (key,))
            old_key, key = key, _free_key(db, started_ms)
            db.execute("INSERT INTO faxes_ident (rowid, remote_ident_folded) VALUES (?, ?)", (key, entry.row[14]))
            db.execute(f"INSERT INTO faxes_fts (rowid, {fts_columns}, ocr_text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key, *entry.fts, ocr_row[0] if ocr_row else ""))
            db.execute("UPDATE faxes SET sort_key = ? WHERE sort_key = ?", (key, old_key))
        else:
            # ocr_text is left as it is: it is written by whatever reads the pages, not from meta.json.
            fts_assignments = ", ".join(f"{column} = ?" for column in _FTS_COLUMNS)
            db.execute(f"UPDATE faxes_fts SET {fts_assignments} WHERE rowid = ?", (*entry.fts, key))
            db.execute("UPDATE faxes_ident SET remote_ident_folded = ? WHERE rowid = ?", (entry.row[14], key))
        assignments = ", ".join(f"{column} = ?" for column in (*_ROW_COLUMNS[1:], "row_hash", "updated_at"))
        db.execute(f"UPDATE faxes SET {assignments} WHERE sort_key = ?", (*entry.row[1:], row_hash, now, key))
        return True

    def set_ocr_text(self, fax_id: str, text: str) -> bool:
        """Store the recognised text of a fax's pages for ``q`` (False if the fax is not indexed)."""
        db = self._db()
        with _write(db):
            found = db.execute("SELECT sort_key FROM faxes WHERE id = ?", (fax_id,)).fetchone()
            if found is None:
                return False
            db.execute("UPDATE faxes_fts SET ocr_text = ? WHERE rowid = ?", (text, found[0]))
            return True

    def delete(self, fax_id: str) -> bool:
        """Drop a fax's row; True if there was one."""
        db = self._db()
        with _write(db):
            return self._delete(db, fax_id)

    @staticmethod
    def _delete(db: sqlite3.Connection, fax_id: str) -> bool:
        found = db.execute("SELECT sort_key FROM faxes WHERE id = ?", (fax_id,)).fetchone()
        if found is None:
            return False
        db.execute("DELETE FROM faxes_fts WHERE rowid = ?", (found[0],))
        db.execute("DELETE FROM faxes_ident WHERE rowid = ?", (found[0],))
        db.execute("DELETE FROM faxes WHERE sort_key = ?", (found[0],))
        return True

    def rebuild(self, root: str | os.PathLike[str], progress: Callable[[int], None] | None = None) -> int:
        """Index every fax folder under the archive ``root``, then drop the rows whose
        ``meta.json`` is gone; returns the number of faxes indexed.

        Folders are upserted ``REBUILD_BATCH`` at a time, one write transaction each, and
        each batch's ``meta.json`` files are read *inside* its transaction: a writer that
        writes ``meta.json`` and then upserts cannot have its newer row overwritten by an
        older read here (its upsert waits for this transaction, or this read sees its file),
        so a rebuild may run while the gateway takes calls.  A folder whose meta.json cannot
        be read or has no id is skipped.  ``progress(n)`` is called after each batch.
        """
        seen: set[str] = set()
        indexed = 0
        folders = list(archive.iter_faxes(root))
        db = self._db()
        for start in range(0, len(folders), REBUILD_BATCH):
            with _write(db):
                for folder in folders[start:start + REBUILD_BATCH]:
                    try:
                        meta = archive.read_meta(folder)
                        if not isinstance(meta, dict):
                            continue
                        meta.setdefault("id", folder.name)
                        entry = indexed_fax(meta, folder)
                    except (OSError, ValueError):
                        continue
                    self._store(db, entry)
                    seen.add(entry.fax_id)
                    indexed += 1
            if progress is not None:
                progress(indexed)
        stale = [(fax_id, folder) for fax_id, folder in db.execute("SELECT id, folder FROM faxes")
                 if fax_id not in seen]
        with _write(db):
            for fax_id, folder in stale:
                # Checked again here: a fax written after the walk began is in no batch but is there.
                if not (Path(folder) / archive.META_NAME).is_file():
                    self._delete(db, fax_id)
        db.execute("PRAGMA optimize")  # lets the planner use fresh statistics for the indexes
        return indexed

    # -- reading -------------------------------------------------------------------------

    def get_folder(self, fax_id: str) -> Path | None:
        found = self._db().execute("SELECT folder FROM faxes WHERE id = ?", (fax_id,)).fetchone()
        return None if found is None else Path(found[0])

    def count(self) -> int:
        result: int = self._db().execute("SELECT count(*) FROM faxes").fetchone()[0]
        return result

    def folders_to_recover(self, *, ended_since: float) -> list[Path]:
        """Folders a restart must look at: faxes the index still has in progress (their
        meta.json says how they really stand) and those that ended since ``ended_since``
        (a webhook planned in meta.json may not have reached the spool)."""
        db = self._db()
        rows = db.execute("SELECT folder FROM faxes WHERE in_progress = 1 OR ended_at >= ?", (ended_since,))
        return [Path(row[0]) for row in rows]

    def expired_candidates(self, *, cutoff: float, limit: int = 10000) -> list[Path]:
        """Folders of finished, unheld faxes that ended (or started, if never ended)
        before ``cutoff``, oldest first: the retention sweep re-reads each meta.json."""
        db = self._db()
        rows = db.execute("SELECT folder FROM faxes WHERE in_progress = 0 AND held = 0 AND "
                          "COALESCE(ended_at, started_at) < ? ORDER BY started_at LIMIT ?", (cutoff, limit))
        return [Path(row[0]) for row in rows]

    def get_row(self, fax_id: str) -> dict[str, Any] | None:
        """Every stored column of one fax (tests and diagnostics)."""
        db = self._db()
        cursor = db.execute("SELECT * FROM faxes WHERE id = ?", (fax_id,))
        found = cursor.fetchone()
        if found is None:
            return None
        return dict(zip((d[0] for d in cursor.description), found, strict=True))

    def is_consistent_with(self, meta: dict[str, Any], folder: Path) -> bool:
        """True if the stored row is exactly what ``upsert(meta, folder)`` would store."""
        entry = indexed_fax(meta, folder)
        found = self._db().execute("SELECT row_hash FROM faxes WHERE id = ?", (entry.fax_id,)).fetchone()
        return found is not None and found[0] == entry.row_hash

    def search(self, *, since: str | float | dt.datetime | None = None, until: str | float | dt.datetime | None = None,
               status: str | Sequence[str] | None = None, direction: str | None = None, caller: str | None = None,
               did: str | None = None, remote_ident: str | None = None, route: str | None = None,
               q: str | None = None, held: bool | None = None, limit: int | str = DEFAULT_LIMIT,
               cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of faxes, newest first by (started_at, id), and the cursor of the next
        page (None on the last page).

        ``since`` (inclusive) and ``until`` (exclusive) bound ``started_at``: RFC 3339 text
        (a date alone is midnight UTC; no offset means UTC), a datetime, or UNIX seconds.
        ``status`` one value, a comma-separated list or a sequence; ``caller``/``did`` match
        the number's trailing digits; ``remote_ident`` a case-insensitive substring;
        ``route`` whole; ``q`` words in any indexed text (all must occur; ``word*`` a prefix).
        ``IndexQueryError`` naming the parameter for a bad value.
        """
        source = _streamed_source(q, remote_ident, caller, did)
        sql, args, count = _search_sql(since=since, until=until, status=status, direction=direction, caller=caller,
                                       did=did, remote_ident=remote_ident, route=route, held=held, limit=limit,
                                       cursor=cursor, q=None if source and source[0] == "faxes_fts" else q,
                                       candidates=source is not None)
        try:
            if source is not None:
                found = self._stream_full_text(sql, args, count, source, since, until, cursor)
            else:
                found = self._db().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:  # an FTS5 query we did not make safe (a bug)
            raise IndexQueryError("q" if q is not None else "search", str(exc)) from None
        rows = [_result(row) for row in found[:count]]
        next_cursor = _encode_cursor(found[count - 1][13], found[count - 1][0]) if len(found) > count else None
        return rows, next_cursor

    def _stream_full_text(self, sql: str, args: list[Any], count: int, source: tuple[str, str],
                          since: str | float | dt.datetime | None, until: str | float | dt.datetime | None,
                          cursor: str | None) -> list[tuple[Any, ...]]:
        """The first ``count + 1`` rows of a ``q`` search, newest first, read in chunks.

        A word in a third of the faxes has a third of a million matches at a million rows:
        collecting them all to sort them would take most of a second.  The full-text table's
        rowid is each fax's ``sort_key`` (its start millisecond, then a counter), and FTS5
        returns matches in rowid order from a range, so the newest matches are read first,
        a chunk at a time.  A chunk always ends on a whole millisecond (the rest of its last
        millisecond is fetched too), so every fax not yet read started strictly earlier than
        every fax read: the chunks' rows, each chunk sorted by (started_at, id) with the other
        filters applied by ``sql``, concatenate into the exact order.  ``source`` is the
        full-text table and its MATCH query: ``q``'s words, or ``remote_ident`` as a
        substring in the trigram table (``sql`` checks that condition exactly as well).
        """
        table, match = source
        db = self._db()
        upper = (MAX_KEY_MS + 1) << KEY_BITS  # exclusive
        lower = 0
        if cursor is not None:
            upper = min(upper, (_key_ms(_decode_cursor(cursor)[0]) + 1) << KEY_BITS)
        if (until_at := _time_param("until", until)) is not None:
            upper = min(upper, (_key_ms(until_at) + 1) << KEY_BITS)
        if (since_at := _time_param("since", since)) is not None:
            lower = _key_ms(since_at) << KEY_BITS
        found: list[tuple[Any, ...]] = []
        chunk = FTS_CHUNK
        candidates = f"SELECT rowid FROM {table} WHERE {table} MATCH ? AND rowid >= ? AND rowid < ? ORDER BY rowid DESC"
        while upper > lower and len(found) <= count:
            keys = [k for (k,) in db.execute(candidates + " LIMIT ?", (match, lower, upper, chunk))]
            if not keys:
                break
            if len(keys) < chunk:
                upper = lower  # every match in the range is read
            else:
                bucket = max(lower, (keys[-1] >> KEY_BITS) << KEY_BITS)
                keys.extend(k for (k,) in db.execute(candidates, (match, bucket, keys[-1])))
                upper = bucket
            found.extend(db.execute(sql, [json.dumps(keys), *args[1:-1], count + 1 - len(found)]))
            chunk = min(chunk * 4, 65536)
        return found

    def query_plan(self, **filters: Any) -> list[str]:
        """SQLite's plan for ``search(**filters)`` (to check that an index answers it; a
        ``q`` without ``caller``/``did`` is read by ``_stream_full_text``: this shows its
        per-chunk query)."""
        source = _streamed_source(filters.get("q"), filters.get("remote_ident"), filters.get("caller"),
                                  filters.get("did"))
        if source is not None and source[0] == "faxes_fts":
            filters = dict(filters, q=None)
        sql, args, _ = _search_sql(**filters, candidates=source is not None)
        if source is not None:
            args[0] = "[]"
        return [str(row[-1]) for row in self._db().execute("EXPLAIN QUERY PLAN " + sql, args)]


def _search_sql(*, since: str | float | dt.datetime | None = None, until: str | float | dt.datetime | None = None,
                status: str | Sequence[str] | None = None, direction: str | None = None, caller: str | None = None,
                did: str | None = None, remote_ident: str | None = None, route: str | None = None,
                q: str | None = None, held: bool | None = None, limit: int | str = DEFAULT_LIMIT,
                cursor: str | None = None, candidates: bool = False) -> tuple[str, list[Any], int]:
    """(SQL, its arguments, the page size) of a search; ``IndexQueryError`` for a bad parameter.

    With ``candidates`` the first argument is a JSON list of sort keys the rows must be
    among (a chunk of full-text matches, see ``ArchiveIndex._stream_full_text``).
    """
    count = _limit(limit)
    where: list[str] = []
    args: list[Any] = []
    source = "faxes"
    if candidates:
        # CROSS JOIN makes the chunk the outer loop (each key one index look-up), whatever
        # other index the planner might prefer to scan for a status or a route.
        source = "(SELECT value AS candidate FROM json_each(?)) CROSS JOIN faxes ON sort_key = candidate"
        args.append(None)  # filled in per chunk
    since_at = _time_param("since", since)
    until_at = _time_param("until", until)
    if since_at is not None:
        where.append("started_at >= ?")
        args.append(since_at)
    if until_at is not None:
        if since_at is not None and until_at < since_at:
            raise IndexQueryError("until", "is before since")
        where.append("started_at < ?")
        args.append(until_at)
    if status is not None:
        statuses = _statuses(status)
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(statuses)
    if direction is not None:
        if direction not in DIRECTIONS:
            raise IndexQueryError("direction", f"must be one of {', '.join(DIRECTIONS)}")
        where.append("direction = ?")
        args.append(direction)
    for name, column, value in (("caller", "caller_key", caller), ("did", "did_key", did)):
        if value is None:
            continue
        key = _number_param(name, value)
        if key.startswith("~"):
            where.append(f"{column} = ?")
            args.append(key)
        else:  # trailing digits: the reversed digits start with the reversed given ones
            where.append(f"{column} >= ? AND {column} < ?")
            args.extend((key, key + ":"))
    if remote_ident is not None:
        if not remote_ident.strip():
            raise IndexQueryError("remote_ident", "is empty")
        where.append("instr(remote_ident_folded, ?) > 0")
        args.append(remote_ident.strip().casefold())
    if route is not None:
        where.append("route = ?")
        args.append(route)
    if held is not None:
        where.append("held = ?")
        args.append(int(held))
    if q is not None:
        # With a caller or did the number's index finds few rows; each is looked up in FTS5.
        where.append("EXISTS (SELECT 1 FROM faxes_fts WHERE faxes_fts MATCH ? AND faxes_fts.rowid = faxes.sort_key)")
        args.append(fts_query(q))
    if cursor is not None:
        after_at, after_id = _decode_cursor(cursor)
        where.append("(started_at, id) < (?, ?)")
        args.extend((after_at, after_id))
    sql = f"SELECT {_RESULT_COLUMNS} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
    args.append(count + 1)
    return sql, args, count


def _streamed_source(q: str | None, remote_ident: str | None, caller: str | None,
                     did: str | None) -> tuple[str, str] | None:
    """The full-text table and MATCH query a search reads its candidates from, newest first,
    or None for one plain query (no text filter, or a caller/did whose index finds few rows,
    each then looked up in FTS5).  A ``remote_ident`` under 3 characters has no trigram: it
    is checked row by row in date order."""
    if caller is not None or did is not None:
        return None
    if q is not None:
        return "faxes_fts", fts_query(q)
    if isinstance(remote_ident, str) and len(folded := remote_ident.strip().casefold()) >= 3:
        return "faxes_ident", '"' + folded.replace('"', '""') + '"'
    return None


def fts_query(text: str) -> str:
    """User text as a safe FTS5 query: each word quoted (so no word is an operator and no
    character is syntax), ``word*`` kept as a prefix search; ``IndexQueryError`` if it holds
    no word."""
    words = [f'"{word}"' + ("*" if star else "") for word, star in _WORD.findall(text)]
    if not words:
        raise IndexQueryError("q", "holds no word to search for")
    if len(words) > 32:
        raise IndexQueryError("q", "has more than 32 words")
    return " ".join(words)


# -- helpers ---------------------------------------------------------------------------------

class _write:
    """A write transaction: BEGIN IMMEDIATE takes SQLite's write lock at once (so two writers
    wait for each other under the busy timeout instead of failing to upgrade a read).  A
    SQLite error rolls it back and is raised as ``ArchiveIndexError``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:  # e.g. still locked after the busy timeout, or a full disk
            raise ArchiveIndexError(f"cannot write the archive index: {exc}") from exc
        return self.db

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _: object) -> None:
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as exc:
                error = exc
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolled back already (it does on some errors)
        if isinstance(error, sqlite3.Error):
            raise ArchiveIndexError(f"cannot write the archive index: {error}") from error


def _key_ms(started_at: float) -> int:
    """The millisecond part of a sort key (clamped: a time before 1970 or after 2248 shares the end bucket)."""
    return min(MAX_KEY_MS, max(0, math.floor(started_at * 1000)))


def _free_key(db: sqlite3.Connection, started_ms: int) -> int:
    """The next unused sort key of a millisecond."""
    first = started_ms << KEY_BITS
    last = db.execute("SELECT max(sort_key) FROM faxes WHERE sort_key >= ? AND sort_key < ?",
                      (first, first + (1 << KEY_BITS))).fetchone()[0]
    if last is None:
        return first
    if last + 1 >= first + (1 << KEY_BITS):
        raise ValueError(f"more than {1 << KEY_BITS} faxes started in one millisecond")
    return int(last) + 1


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number_words(*numbers: str) -> str:
    """The numbers as full-text words: as written, digits only, and the last 10 and 7
    digits (a national and a local number), so ``q=5550199`` finds ``+1 555 0199``."""
    words: list[str] = []
    for number in numbers:
        if not number:
            continue
        words.append(number)
        digits = re.sub(r"\D", "", number)
        words.extend(digits[-n:] for n in (len(digits), 10, 7) if len(digits) >= n > 0)
    return " ".join(dict.fromkeys(words))


def _uuid7_seconds(fax_id: str) -> float:
    """The creation time a UUIDv7 carries (RFC 9562 5.7: the first 48 bits are UNIX ms), else 0."""
    try:
        parsed = uuid.UUID(fax_id)
    except ValueError:
        return 0.0
    return (parsed.int >> 80) / 1000.0 if parsed.version == 7 else 0.0


def _time_param(name: str, value: str | float | dt.datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise IndexQueryError(name, "must be an RFC 3339 time")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise IndexQueryError(name, "must be a finite time")
        return float(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    parsed = archive.parse_rfc3339(value.strip()) if isinstance(value, str) and len(value) <= 64 else None
    if parsed is None:
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise IndexQueryError(name, f"must be an RFC 3339 time like 2026-12-06T05:30:00Z, not {shown!r}")
    return parsed


def _limit(value: int | str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise IndexQueryError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return value


_STATUS = re.compile(r"[a-z_]{1,32}")


def _statuses(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    statuses = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if not statuses or len(statuses) > 16 or not all(_STATUS.fullmatch(s) for s in statuses):
        raise IndexQueryError("status", "must be one or more statuses like received,partial")
    return statuses


def _number_param(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise IndexQueryError(name, "must be a number (its trailing digits match)")
    return number_key(value)


def _encode_cursor(started_at: float, fax_id: str) -> str:
    return base64.urlsafe_b64encode(f"{started_at!r}|{fax_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        if not isinstance(cursor, str) or len(cursor) > 256:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        started_text, fax_id = raw.split("|", 1)
        started_at = float(started_text)
        if not fax_id or not math.isfinite(started_at):
            raise ValueError("empty")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise IndexQueryError("cursor", "is not a cursor this server handed out") from None
    return started_at, fax_id


def _result(row: tuple[Any, ...]) -> dict[str, Any]:
    (fax_id, direction, status, reason, started_at, ended_at, pages, caller, did, remote_ident, route, media,
     to, _) = row
    return {"id": fax_id, "direction": direction, "status": status, "reason": reason, "started_at": started_at,
            "ended_at": ended_at, "pages": pages, "caller": caller, "did": did, "remote_ident": remote_ident,
            "route": route, "media": media, "to": to}
