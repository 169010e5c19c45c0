"""Retention and legal hold: the daily sweep that deletes expired faxes, and the holds that stop it.

``[retention] keep_days`` (0 = forever) says how long a fax is kept after it ended (or
started, if it never ended).  ``sweep`` deletes the expired ones - the folder, then via the
caller's callbacks the spool rows and the index row - except a fax that is held or still
in progress, which is never deleted.  Plain blocking functions: the gateway runs them in a
worker thread, the CLI directly.

**Who wins a race.**  The sweep's candidates come from the index, which may be stale, so the
sweep re-reads each ``meta.json`` and decides on that.  ``place_hold`` and the sweep both
take an exclusive ``flock`` on the fax folder (``meta_lock``) around their read-decide-write,
so a hold and a deletion of the same fax are serialised, in either process (gateway or CLI):

* the hold got the lock first: the sweep's re-read sees the hold and skips the fax;
* the sweep got it first: it renames the folder away while holding the lock, and
  ``place_hold`` then finds the folder gone and raises ``FileNotFoundError`` (the API
  answers 404) - it never recreates a folder holding only a ``meta.json``.

Any other read-modify-write of ``meta.json`` (``faxrecord.record_outcome``) must take the
same lock, or it can write back a copy read before the hold and so drop the hold.

**A deletion survives a crash at any point.**  Under the lock the folder is renamed to a
sibling ``.deleting-<fax_id>`` and the parent fsynced: from then on no reader finds the fax
under its name and the deletion is decided.  Then: the spool rows go
(``delete_spool``), every file but ``meta.json`` is removed, ``on_deleted`` drops the index
row (and writes the audit line), and last ``meta.json`` and the folder go.  ``meta.json``
stays to the end so a sweep that resumes after a crash still knows what it is deleting and
the index row still points at it: a candidate whose folder is missing but whose
``.deleting-`` sibling exists is finished, whichever step the crash interrupted.  (A crash
after ``on_deleted`` and before the last unlink leaves a ``.deleting-`` folder the index no
longer names: ``candidates_from_folders`` and ``pending_deletions`` find those.)

meta.json (DESIGN.md, "add, never rename"): ``hold`` ``{"reason", "placed_at", "by"}`` while
held, absent otherwise; ``hold_history`` a list of ``{"action": "placed"|"released", "at",
"by", "reason"}``, oldest first, never shortened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import shutil
import sqlite3
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t38gw import archive

SECONDS_PER_DAY = 86400
MAX_REASON_CHARS = 500
MAX_BY_CHARS = 200
DELETING_PREFIX = ".deleting-"
_DIGITS = re.compile(r"\d+")


class FaxInProgressError(Exception):
    """A hold on a fax still in progress: the call (or job) writes meta.json from its own
    copy and would drop the hold; hold it once it has ended (the API answers 409).  Such a
    fax is never deleted meanwhile."""


@dataclass(frozen=True)
class SweepItem:
    """One candidate's fate.

    ``deleted``: gone now.  ``skipped``: why it was kept (``"held"``, ``"in progress"``,
    ``"not expired"``, ``"missing"``, ``"unreadable meta.json: ..."``, ``"cannot delete:
    ..."``), or None for a fax deleted (or, in a dry run, one that would be).
    ``resumed``: it finishes a deletion a crash interrupted.
    """

    fax_id: str
    folder: Path
    ended_at: str | None
    deleted: bool
    skipped: str | None = None
    resumed: bool = False


# -- holds -------------------------------------------------------------------------------------

@contextlib.contextmanager
def meta_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the fax folder for a read-modify-write of its meta.json.

    Raises ``FileNotFoundError`` if the folder is missing or was renamed away (deleted by a
    sweep) while waiting for the lock.  Advisory: every writer must use it (see the module
    docstring).  Local file systems only (flock on NFS is not shared between hosts).
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            now_there = os.stat(folder)
        except FileNotFoundError:
            now_there = None
        locked = os.fstat(fd)
        if now_there is None or (now_there.st_dev, now_there.st_ino) != (locked.st_dev, locked.st_ino):
            raise FileNotFoundError(f"fax folder {folder} was deleted")
        yield
    finally:
        os.close(fd)  # releases the lock


def place_hold(folder: Path, *, reason: str, by: str, now: float) -> dict[str, Any]:
    """Put a legal hold on the fax in ``folder``: meta.json gets ``hold`` and a
    ``hold_history`` entry, written atomically; returns the new meta (the caller upserts the
    index and writes the audit line).

    A fax already held gets the new hold (reason, time, who) in place of the old one; both
    stay in ``hold_history``.  Raises ``ValueError`` for an empty (or blank) reason, one over
    500 characters or holding control characters, or an empty ``by``;
    ``FaxInProgressError`` for a fax in progress; ``FileNotFoundError`` if the fax is gone;
    ``OSError``/``ValueError`` if meta.json cannot be read or written.
    """
    reason = _checked_text("reason", reason, MAX_REASON_CHARS)
    by = _checked_text("by", by, MAX_BY_CHARS)
    with meta_lock(folder):
        meta = archive.read_meta(folder)
        if meta.get("in_progress"):
            raise FaxInProgressError(f"fax {meta.get('id', folder.name)} is in progress; hold it once it has ended")
        at = archive.rfc3339(now)
        meta["hold"] = {"reason": reason, "placed_at": at, "by": by}
        meta.setdefault("hold_history", []).append({"action": "placed", "at": at, "by": by, "reason": reason})
        archive.write_meta(folder, meta)
    return meta


def release_hold(folder: Path, *, by: str, now: float) -> dict[str, Any]:
    """Release the hold on the fax in ``folder`` (``hold`` removed, a ``released`` entry in
    ``hold_history`` naming the reason of the hold released); returns the new meta.

    A fax not held is returned unchanged and meta.json is not written (idempotent: a
    repeated DELETE changes nothing).  Raises ``ValueError`` for an empty ``by``,
    ``FileNotFoundError`` if the fax is gone, ``OSError``/``ValueError`` if meta.json cannot
    be read or written.
    """
    by = _checked_text("by", by, MAX_BY_CHARS)
    with meta_lock(folder):
        meta = archive.read_meta(folder)
        hold = meta.pop("hold", None)
        if hold is None:
            return meta
        released = hold.get("reason", "") if isinstance(hold, dict) else ""
        meta.setdefault("hold_history", []).append(
            {"action": "released", "at": archive.rfc3339(now), "by": by, "reason": released})
        archive.write_meta(folder, meta)
    return meta


def _checked_text(name: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{name}` is required")
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"`{name}` is longer than {limit} characters")
    # Tab and newline are text; other control characters would garble a log line or a report.
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n" for ch in value):
        raise ValueError(f"`{name}` holds control characters")
    return value


# -- expiry -----------------------------------------------------------------------------------

def cutoff_for(keep_days: int, now: float) -> float | None:
    """The UNIX time before which a fax has expired, or None when ``keep_days`` is 0
    (keep forever).  ``ValueError`` for a negative ``keep_days``."""
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 0:
        raise ValueError(f"keep_days must be a whole number >= 0, not {keep_days!r}")
    return None if keep_days == 0 else now - keep_days * SECONDS_PER_DAY


def expired(meta: dict[str, Any], *, keep_days: int, now: float) -> bool:
    """True if the fax ended (or, never having ended, started) more than ``keep_days`` days
    before ``now``.  Never for a fax in progress or held, never with ``keep_days`` 0, and
    never for a fax whose times cannot be read (what cannot be dated is not deleted)."""
    cutoff = cutoff_for(keep_days, now)
    if cutoff is None or meta.get("in_progress") or meta.get("hold"):
        return False
    moment = _fax_time(meta)
    return moment is not None and moment < cutoff


def _fax_time(meta: dict[str, Any]) -> float | None:
    for key in ("ended_at", "started_at"):
        text = meta.get(key)
        if isinstance(text, str) and text:
            try:
                moment = dt.datetime.fromisoformat(text)
            except ValueError:
                return None  # a corrupt time: not a reason to fall back to another one
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            return moment.timestamp()
    return None


# -- the sweep --------------------------------------------------------------------------------

def sweep(candidates: Iterable[Path], *, keep_days: int, now: float, dry_run: bool = False,
          delete_spool: Callable[[str], int] | None = None,
          on_deleted: Callable[[str, dict[str, Any]], None] | None = None) -> list[SweepItem]:
    """Delete the expired faxes among ``candidates`` (fax folders, or ``.deleting-`` folders
    a crash left), each decided on its meta.json as read now; returns one item per candidate.

    Held, in-progress and unexpired faxes are skipped.  ``dry_run`` deletes nothing and
    calls nothing, and lists as deletable (``skipped`` None) exactly what a real run would
    delete.  For each fax deleted, ``delete_spool(fax_id)`` drops its webhook spool rows and
    ``on_deleted(fax_id, meta)`` drops its index row and writes the audit line (see the
    module docstring for the order).  A filesystem error on one fax is reported in its item
    and the sweep goes on; an exception from a callback propagates (the fax stays in its
    ``.deleting-`` state and the next sweep finishes it).
    """
    items: list[SweepItem] = []
    seen: set[Path] = set()
    for folder in candidates:
        folder = Path(folder)
        if folder in seen:
            continue
        seen.add(folder)
        items.append(_sweep_one(folder, keep_days, now, dry_run, delete_spool, on_deleted))
    return items


def _sweep_one(folder: Path, keep_days: int, now: float, dry_run: bool,
               delete_spool: Callable[[str], int] | None,
               on_deleted: Callable[[str, dict[str, Any]], None] | None) -> SweepItem:
    if folder.name.startswith(DELETING_PREFIX):
        fax_id = folder.name[len(DELETING_PREFIX):]
        return _resume(fax_id, folder, dry_run, delete_spool, on_deleted)
    fax_id = folder.name
    doomed = folder.with_name(DELETING_PREFIX + fax_id)
    if not folder.exists():
        if doomed.is_dir():
            return _resume(fax_id, doomed, dry_run, delete_spool, on_deleted)
        # Not deleted here: the archive may be unmounted, or the fax moved.  A stale index
        # row is the reindex's business, and an audit line saying "deleted" would be false.
        return SweepItem(fax_id, folder, None, False, "missing")
    try:
        with meta_lock(folder):
            meta = archive.read_meta(folder)
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            ended_at = _text_or_none(meta.get("ended_at"))
            skipped = _why_kept(meta, keep_days, now)
            if skipped is not None or dry_run:
                return SweepItem(fax_id, folder, ended_at, False, skipped)
            # The point of no return, under the lock: a hold waiting for it now finds no folder.
            os.rename(folder, doomed)
            archive._fsync_dir(folder.parent)
    except FileNotFoundError:
        return SweepItem(fax_id, folder, None, False, "missing")
    except ValueError as exc:
        return SweepItem(fax_id, folder, None, False, f"unreadable meta.json: {exc}")
    except OSError as exc:
        return SweepItem(fax_id, folder, None, False, f"cannot delete: {exc}")
    return _finish(fax_id, folder, doomed, meta, delete_spool, on_deleted, resumed=False)


def _why_kept(meta: dict[str, Any], keep_days: int, now: float) -> str | None:
    if meta.get("hold"):
        return "held"
    if meta.get("in_progress"):
        return "in progress"
    if not expired(meta, keep_days=keep_days, now=now):
        return "not expired"
    return None


def _resume(fax_id: str, doomed: Path, dry_run: bool, delete_spool: Callable[[str], int] | None,
            on_deleted: Callable[[str, dict[str, Any]], None] | None) -> SweepItem:
    """Finish a deletion decided before a crash (the rename is the decision; no hold can
    have been placed since: ``place_hold`` finds no folder)."""
    original = doomed.with_name(fax_id)
    try:
        meta = archive.read_meta(doomed)
    except (OSError, ValueError):
        meta = {}  # a crash during the last unlink; the id is in the folder's name
    if not isinstance(meta, dict):
        meta = {}
    meta.setdefault("id", fax_id)
    if dry_run:
        return SweepItem(fax_id, original, _text_or_none(meta.get("ended_at")), False, None, resumed=True)
    return _finish(fax_id, original, doomed, meta, delete_spool, on_deleted, resumed=True)


def _finish(fax_id: str, original: Path, doomed: Path, meta: dict[str, Any],
            delete_spool: Callable[[str], int] | None,
            on_deleted: Callable[[str, dict[str, Any]], None] | None, *, resumed: bool) -> SweepItem:
    ended_at = _text_or_none(meta.get("ended_at"))
    if delete_spool is not None:
        delete_spool(fax_id)
    try:
        if doomed.is_dir():
            with os.scandir(doomed) as entries:
                for entry in entries:
                    if entry.name == archive.META_NAME:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
    except OSError as exc:
        return SweepItem(fax_id, original, ended_at, False, f"cannot delete: {exc}", resumed)
    if on_deleted is not None:
        on_deleted(fax_id, meta)
    try:
        if doomed.is_dir():
            (doomed / archive.META_NAME).unlink(missing_ok=True)
            # Anything that appeared meanwhile (it should not) goes too: the fax is deleted.
            shutil.rmtree(doomed)
            archive._fsync_dir(doomed.parent)
    except OSError as exc:
        return SweepItem(fax_id, original, ended_at, False, f"cannot delete: {exc}", resumed)
    return SweepItem(fax_id, original, ended_at, True, None, resumed)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- candidates without an index -------------------------------------------------------------

def candidates_from_folders(root: str | os.PathLike[str], cutoff: float) -> list[Path]:
    """The fax folders under the archive ``root`` that may have expired at ``cutoff`` (UNIX
    seconds), oldest day first, for a sweep without an index; ``.deleting-`` folders a crash
    left are included.

    A fax lives under the UTC day it started and ends after it starts, so only day folders
    (``[subdir/]YYYY/MM/DD``) up to the cutoff's day are listed; later years and months are
    not even opened.  The sweep re-reads each meta.json and decides.
    """
    last_day = dt.datetime.fromtimestamp(cutoff, tz=dt.UTC).date()
    found: list[tuple[dt.date, str, Path]] = []
    for day, day_folder in _day_folders(Path(root), last_day):
        try:
            with os.scandir(day_folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        found.append((day, entry.name.removeprefix(DELETING_PREFIX), Path(entry.path)))
        except OSError:
            continue
    return [path for _, _, path in sorted(found)]


def pending_deletions(root: str | os.PathLike[str]) -> list[Path]:
    """Every ``.deleting-`` folder under the archive (deletions a crash interrupted after
    their index row was dropped); a sweep given them finishes them."""
    found: list[Path] = []
    for _, day_folder in _day_folders(Path(root), dt.date.max):
        with contextlib.suppress(OSError):
            found.extend(day_folder.glob(DELETING_PREFIX + "*"))
    return sorted(found)


def _day_folders(root: Path, last_day: dt.date) -> Iterator[tuple[dt.date, Path]]:
    """(day, folder) of each ``[subdir/]YYYY/MM/DD`` folder up to ``last_day``."""
    if not root.is_dir():
        return
    for child in sorted(_subfolders(root)):
        if _DIGITS.fullmatch(child.name) and len(child.name) == 4:
            year = int(child.name)
            if year > last_day.year:
                continue
            for month_folder in sorted(_subfolders(child)):
                if not (_DIGITS.fullmatch(month_folder.name) and len(month_folder.name) == 2):
                    continue
                month = int(month_folder.name)
                if (year, month) > (last_day.year, last_day.month):
                    continue
                for day_folder in sorted(_subfolders(month_folder)):
                    try:
                        day = dt.date(year, month, int(day_folder.name))
                    except ValueError:
                        continue
                    if day <= last_day:
                        yield day, day_folder
        elif not child.name.startswith("."):
            yield from _day_folders(child, last_day)  # a route's archive_subdir


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


# -- the webhook spool ------------------------------------------------------------------------

def delete_spool_rows(spool: str | os.PathLike[str] | sqlite3.Connection, fax_id: str) -> int:
    """Delete every ``deliveries`` row of ``fax_id`` from the webhook spool (a path to its
    database or an open connection); returns the number of rows deleted.

    Works beside a running gateway (its own connection; SQLite's locking serialises the
    writes, waiting up to 5 s for the lock).  ``secure_delete`` is a per-connection setting,
    so it is set here too: the freed pages are zeroed.  The WAL is then checkpointed and
    truncated, so a deleted body does not survive in the ``-wal`` file either.  Raises
    ``sqlite3.Error`` if the spool cannot be written (the sweep then stops and the next one
    finishes this fax).
    """
    own = not isinstance(spool, sqlite3.Connection)
    if isinstance(spool, sqlite3.Connection):
        db = spool
    else:
        # mode=rw: a wrong path is an error, not a new empty database.
        uri = Path(os.fspath(spool)).resolve().as_uri() + "?mode=rw"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
    try:
        db.execute("PRAGMA secure_delete=ON")
        with db:
            deleted = db.execute("DELETE FROM deliveries WHERE fax_id = ?", (fax_id,)).rowcount
        if deleted and db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(deleted)
    finally:
        if own:
            db.close()
