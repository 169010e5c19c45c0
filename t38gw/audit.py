"""The audit trail (issue 15): a hash-chained, fsynced record of every event that touches
patient data.

HIPAA 164.312(b) asks for "mechanisms that record and examine activity in information
systems that contain or use electronic protected health information"; 164.312(c)(1) for
protection against improper alteration.  The trail is JSON lines, one event a line::

    {"time":"2026-12-06T05:54:35.123Z","event":"fax_stored","fax_id":"...","prev":"<64 hex>"}

How it works
------------
*Chain.*  ``prev`` is the SHA-256 (hex) of the previous line's bytes without its newline;
the first line of a new trail has ``prev`` = 64 zeros (``GENESIS``).  Editing, removing or
reordering lines breaks the chain at the first line whose ``prev`` no longer matches
(``verify_trail``).  A keyless chain cannot show the removal of its *newest* lines, nor a
trail rewritten from scratch: for that, keep ``AuditTrail.head`` somewhere else (the log
stream, a backup).

*Durability.*  ``AuditTrail.record`` writes the whole line with one ``os.write`` on an
``O_APPEND`` descriptor and ``fsync``s it before it returns; if either fails it raises
``OSError`` and the caller must refuse the action (no read of patient data without its
record).  A lock serialises writers: the gateway records from worker threads and from the
event loop.  Files are 0600, a folder we create is 0700.

*Rotation.*  Before a line would take the current file past ``max_bytes`` (and the file is
not empty) the file becomes ``<path>.<N>``: N is one more than the highest N present, so
``.1`` is the oldest and a rotated file is never renamed again or overwritten (a hard link
then an unlink, so an existing name is never replaced).  The folder is fsynced, a new file
is started, and its first line's ``prev`` is the hash of the old file's last line: one
chain runs through ``.1, .2, ... , <path>``.  A crash between the link and the unlink
leaves both names on one file; the next open removes ``<path>`` and carries on.

*Torn lines.*  A crash (or a failed write) can leave the last line cut short, without its
newline.  The writer never chains onto such a line: on open (and on the first record after
a failed write) it appends, in one write, a newline that closes the torn line and then::

    {"time":...,"event":"trail_recovered","torn_line":N,"torn_sha256":"<hash of line N>","prev":"<hash of line N-1>"}

``verify_trail`` accepts a line followed by such a record (same file, ``torn_line`` its
number, ``torn_sha256`` its hash, ``prev`` the hash before it) and lists it in
``problems``; a cut-short last line with no record after it breaks the chain.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

GENESIS = "0" * 64
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_RESERVED_FIELDS = frozenset({"time", "event", "prev"})
_READ_CHUNK = 1 << 20
_TAIL_CHUNK = 8192  # a trail line is a few hundred bytes

StrPath = str | os.PathLike[str]


class AuditEvent(enum.StrEnum):
    """The events issue 15 names; ``record`` takes any string, these are the usual ones."""

    API_READ = "api_read"  # a /v1 read of a fax, a list or a document, allowed or not
    FAX_STORED = "fax_stored"
    WEBHOOK_DELIVERED = "webhook_delivered"
    HOLD_PLACED = "hold_placed"
    HOLD_RELEASED = "hold_released"
    FAX_DELETED = "fax_deleted"  # by retention
    TRAIL_RECOVERED = "trail_recovered"  # written by the trail itself after a torn line


class AuditTrail:
    """The writer.  ``AuditTrail(path)`` opens (or creates) the trail and recovers its chain.

    ``max_bytes``: the size a file may reach before rotation.  ``clock``: UNIX seconds for
    the ``time`` field.  Raises ``OSError`` if the trail cannot be opened or recovered.
    """

    def __init__(self, path: StrPath, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._prev = GENESIS
        self._needs_recovery = False
        _make_private_folders(self.path.parent)
        # Another process may write the same trail (``t38gw archive sweep`` beside a running
        # gateway): each record takes this lock file and chains onto the file as it is.
        self._process_lock = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._open_and_recover()

    @property
    def head(self) -> str:
        """The SHA-256 of the last line written: the value the next line's ``prev`` will take."""
        return self._prev

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"time", "event", **fields, "prev"}`` and fsync it; returns the entry written.

        Raises ``OSError`` if the line is not durably on disk (the caller refuses the
        action), ``ValueError`` for a field named ``time`` or ``prev``, ``TypeError`` for a
        value JSON cannot hold (nothing is written then).
        """
        return self.record_many([(event, fields)])[0]

    def record_many(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """``record`` for several events, in order, chained as one by one: one write and
        one fsync for them all (a rotation falling between them writes the lines before
        it first).  Beside a busy event loop each record's six system calls waited to take
        the GIL back (issue 14: a burst of faxes' webhook outcomes).  Nothing is written
        if one event is refused (ValueError, TypeError as ``record``)."""
        for _, fields in events:
            reserved = _RESERVED_FIELDS.intersection(fields)
            if reserved:
                raise ValueError(f"the trail sets {sorted(reserved)} itself")
        if not events:
            return []
        with self._lock:
            fcntl.flock(self._process_lock, fcntl.LOCK_EX)
            try:
                if self._needs_recovery or self._written_elsewhere():
                    self._close_quietly()
                    self._open_and_recover()
                now = _rfc3339(self._clock())
                entries: list[dict[str, Any]] = []
                lines: list[bytes] = []
                prev, size = self._prev, self._size
                for event, fields in events:
                    entry = {"time": now, "event": str(event)} | dict(fields) | {"prev": prev}
                    lines.append(_serialise(entry))  # TypeError/ValueError: nothing written yet
                    entries.append(entry)
                    prev = _sha256(lines[-1])
                written = 0
                for index, line in enumerate(lines):
                    if size > 0 and size + len(line) + 1 > self.max_bytes:
                        if index > written:
                            self._guarded(functools.partial(self._append, lines[written:index]))
                            written = index
                        self._guarded(self._rotate)
                        size = 0
                    size += len(line) + 1
                self._guarded(functools.partial(self._append, lines[written:]))
                return entries
            finally:
                fcntl.flock(self._process_lock, fcntl.LOCK_UN)

    def _written_elsewhere(self) -> bool:
        """The current file grew, or was rotated away, since our last line."""
        try:
            on_disk = os.stat(self.path)
            ours = os.fstat(self._fd)
        except OSError:
            return True
        return on_disk.st_ino != ours.st_ino or ours.st_size != self._size

    def write(self, entry: dict[str, Any]) -> dict[str, Any]:
        """``t38gw.api.AuditLog.write``: one API read (client, token_id, method, path, query,
        fax_id, status[, fax_ids]) recorded as ``event`` (default ``api_read``)."""
        fields = dict(entry)
        event = fields.pop("event", AuditEvent.API_READ)
        return self.record(str(event), **fields)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                os.close(fd)
            if self._process_lock >= 0:
                lock, self._process_lock = self._process_lock, -1
                os.close(lock)

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- under the lock ------------------------------------------------------------------

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a step that changes the files; after a failure, the file's tail is unknown
        (a short write, an unsynced line), so the next record re-reads it from disk."""
        try:
            action()
        except BaseException:
            self._needs_recovery = True
            raise

    def _append(self, lines: list[bytes], *, lead: bytes = b"") -> None:
        data = lead + b"".join(line + b"\n" for line in lines)
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write to the audit trail ({written} of {len(data)} bytes)",
                          str(self.path))
        self._size += written
        self._prev = _sha256(lines[-1])
        os.fsync(self._fd)

    def _open_and_recover(self) -> None:
        self._needs_recovery = False
        rotated = rotated_files(self.path)
        if rotated and self.path.exists() and os.path.samefile(self.path, rotated[-1]):
            os.unlink(self.path)  # a rotation interrupted between link and unlink
            _fsync_folder(self.path.parent)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            _fsync_folder(self.path.parent)  # the new file's name is durable too
        except FileExistsError:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.fchmod(self._fd, 0o600)
            self._size = os.fstat(self._fd).st_size
            # Read from the end: another process's line (workers share the trail) makes this
            # run before our next line, and a scan of the whole file each time grew with the
            # trail - 33 MB after an hour at ~1,500 faxes a minute (issue 14's soak).
            last_whole, torn = _ending(self.path)
            if last_whole is not None:
                before = _sha256(last_whole)
            else:
                before = _last_line_hash(rotated)
            self._prev = before
            if torn is not None:
                whole_lines = _scan(self.path).whole_lines  # a torn line is rare: count for its record
                recovery = _serialise({"time": _rfc3339(self._clock()), "event": str(AuditEvent.TRAIL_RECOVERED),
                                       "torn_line": whole_lines + 1, "torn_sha256": _sha256(torn),
                                       "prev": before})
                self._append([recovery], lead=b"\n")
        except BaseException:
            self._close_quietly()
            self._needs_recovery = True
            raise

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        numbers = [_rotation_number(self.path, p) for p in rotated_files(self.path)]
        target = self.path.with_name(f"{self.path.name}.{max(numbers, default=0) + 1}")
        try:
            os.link(self.path, target)  # fails rather than replace an existing file
            os.unlink(self.path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) or target.exists():
                raise
            os.rename(self.path, target)  # a filesystem without hard links
        _fsync_folder(self.path.parent)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(self._fd, 0o600)
        _fsync_folder(self.path.parent)
        self._size = 0

    def _close_quietly(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


@dataclass(frozen=True)
class VerifyResult:
    """``lines``: all lines read; ``files``: the files walked, oldest first;
    ``first_broken``: (file, 1-based line in it) of the first line that does not chain, or
    None when the chain holds; ``problems``: every finding in order, breaks and recovered
    torn lines alike (a torn line that was recovered is a problem but not a break)."""

    lines: int
    files: list[str]
    first_broken: tuple[str, int] | None
    problems: list[str]

    @property
    def intact(self) -> bool:
        return self.first_broken is None


@dataclass(frozen=True)
class TrailLine:
    """One line of the trail: where it is, its bytes (no newline), its entry (None if not a JSON object)."""

    file: str
    number: int
    raw: bytes
    entry: dict[str, Any] | None
    terminated: bool


def rotated_files(path: StrPath) -> list[Path]:
    """``<path>.<N>`` files that exist, oldest (lowest N) first."""
    path = Path(path)
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)")
    found = [(int(m.group(1)), name) for name in names if (m := pattern.fullmatch(name))]
    return [path.with_name(name) for _, name in sorted(found)]


def trail_files(path: StrPath) -> list[Path]:
    """Every file of the trail, oldest first: the rotated ones, then ``path`` if it exists.
    Raises ``FileNotFoundError`` if there is none."""
    path = Path(path)
    files = rotated_files(path) + ([path] if path.exists() else [])
    if not files:
        raise FileNotFoundError(errno.ENOENT, "no audit trail", str(path))
    return files


def iter_trail(path: StrPath) -> Iterator[TrailLine]:
    """Every line of every file, oldest first.  Raises ``OSError`` if a file cannot be read."""
    for file in trail_files(path):
        yield from _lines(file)


def history(path: StrPath, fax_id: str) -> list[dict[str, Any]]:
    """Every entry, oldest first across files, about ``fax_id``: its ``fax_id`` is it, or its
    ``fax_ids`` (an API list read) holds it.  Lines that are not JSON objects are skipped."""
    found = []
    for line in iter_trail(path):
        entry = line.entry
        if entry is None:
            continue
        listed = entry.get("fax_ids")
        if entry.get("fax_id") == fax_id or (isinstance(listed, list) and fax_id in listed):
            found.append(entry)
    return found


def verify_trail(path: StrPath) -> VerifyResult:
    """Walk the rotated files oldest first, then ``path``, and check every ``prev``.

    After a break the walk goes on, chaining from the line actually there, so ``problems``
    lists every break (one deleted line: one problem; two swapped lines: three).  Raises
    ``OSError`` if a file cannot be read, ``FileNotFoundError`` if the trail has no file.
    """
    files = trail_files(path)
    problems: list[str] = []
    first_broken: tuple[str, int] | None = None
    count = 0
    expected = GENESIS
    previous_file: str | None = None
    numbers = [_rotation_number(Path(path), f) for f in files if f != Path(path)]
    missing = sorted(set(range(1, max(numbers, default=0) + 1)) - set(numbers))
    if missing:
        problems.append(f"rotated files missing: {', '.join(f'{Path(path).name}.{n}' for n in missing)}")

    def broken(file: str, number: int, reason: str) -> None:
        nonlocal first_broken
        if first_broken is None:
            first_broken = (file, number)
        problems.append(f"{file} line {number}: {reason}")

    for file in map(str, files):
        last: tuple[TrailLine, str] | None = None  # the line before, with the prev it should have had
        pending: tuple[int, str] | None = None  # a failed line that a recovery record may still excuse
        for line in _lines(Path(file)):
            count += 1
            before = expected
            if last is not None and _recovers(line.entry, last[0], last[1]):
                problems.append(f"{file} line {last[0].number}: cut short by an interrupted write; "
                                f"the writer recorded that at line {line.number}")
                pending = None
            else:
                if pending is not None:
                    broken(file, *pending)
                    pending = None
                if line.entry is None:
                    pending = (line.number, "not a JSON object" + _cut_short(line))
                elif line.entry.get("prev") != before:
                    pending = (line.number, _mismatch(line.number, previous_file) + _cut_short(line))
                elif not line.terminated:
                    problems.append(f"{file} line {line.number}: no newline at the end of the file")
            expected = _sha256(line.raw)
            last = (line, before)
        if pending is not None:
            broken(file, *pending)
        previous_file = file
    return VerifyResult(lines=count, files=[str(f) for f in files], first_broken=first_broken, problems=problems)


def verify_audit_log(path: StrPath) -> tuple[int, int | None]:
    """``t38gw.api.verify_audit_log``: (lines, 1-based number of the first line that does not
    chain, counted across all files oldest first, or None if the chain holds)."""
    result = verify_trail(path)
    if result.first_broken is None:
        return result.lines, None
    broken_file, broken_line = result.first_broken
    before = 0
    for file in result.files:
        if file == broken_file:
            break
        before += sum(1 for _ in _lines(Path(file)))
    return result.lines, before + broken_line


# -- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tail:
    whole_lines: int
    last_whole: bytes | None
    torn: bytes | None  # bytes after the last newline, if any


def _scan(path: Path) -> _Tail:
    """One pass over a file: how many whole lines, the last whole one, and a torn tail."""
    whole = 0
    last_whole: bytes | None = None
    carry = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            data = carry + chunk
            end = data.rfind(b"\n")
            if end < 0:
                carry = data
                continue
            whole += data.count(b"\n", 0, end + 1)
            last_whole = data[data.rfind(b"\n", 0, end) + 1:end]
            carry = data[end + 1:]
    return _Tail(whole, last_whole, carry or None)


def _ending(path: Path) -> tuple[bytes | None, bytes | None]:
    """``_scan``'s last whole line and torn tail, read backwards from the file's end: what
    the last line costs to read, not the file."""
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        block = b""
        while position > 0:
            step = min(_TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            block = handle.read(step) + block
            last = block.rfind(b"\n")
            if last < 0:
                continue  # no newline yet: all of it is a torn line so far
            before = block.rfind(b"\n", 0, last)
            if before >= 0 or position == 0:
                return block[before + 1:last], block[last + 1:] or None
    return None, block or None


def _last_line_hash(rotated: list[Path]) -> str:
    """The hash of the last line of the newest non-empty rotated file (GENESIS if none)."""
    for file in reversed(rotated):
        last_whole, torn = _ending(file)
        last = torn if torn is not None else last_whole
        if last is not None:
            return _sha256(last)
    return GENESIS


def _lines(file: Path) -> Iterator[TrailLine]:
    with open(file, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            terminated = raw.endswith(b"\n")
            body = raw[:-1] if terminated else raw
            yield TrailLine(str(file), number, body, _parse(body), terminated)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _recovers(entry: dict[str, Any] | None, torn: TrailLine, prev_before_torn: str) -> bool:
    """Is ``entry`` the writer's record of ``torn`` (the line just before it, same file) being cut short?"""
    return (entry is not None and entry.get("event") == AuditEvent.TRAIL_RECOVERED
            and entry.get("torn_line") == torn.number and entry.get("torn_sha256") == _sha256(torn.raw)
            and entry.get("prev") == prev_before_torn)


def _mismatch(number: int, previous_file: str | None) -> str:
    if number > 1:
        return (f"prev is not the SHA-256 of line {number - 1}: that line was changed, "
                "or lines were removed or reordered here")
    if previous_file is None:
        return "prev is not the genesis value: the trail's oldest lines or files were removed, or this line changed"
    return f"prev is not the SHA-256 of the last line of {previous_file}: a rotated file was removed or changed"


def _cut_short(line: TrailLine) -> str:
    return "" if line.terminated else " (cut short: no newline at the end of the file)"


def _rotation_number(path: Path, rotated: Path) -> int:
    return int(rotated.name[len(path.name) + 1:])


def _serialise(entry: dict[str, Any]) -> bytes:
    # Compact, ASCII-only JSON never holds a raw newline, so one entry is one line.
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rfc3339(now: float) -> str:
    seconds = int(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((now - seconds) * 1000):03d}Z"


def _make_private_folders(folder: Path) -> None:
    """Create ``folder`` and any missing parents 0700 (patient data: issue 9 item 4)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(created, 0o700)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
