"""The archive, the system of record (DESIGN.md "Archive layout").

``<dir>/[<route subdir>/]<YYYY>/<MM>/<DD>/<fax_id>/`` holds ``fax.pdf``, ``fax.tif``
and ``meta.json``.  Every file is written to a temporary name in the same folder,
fsynced, renamed over the old one, and the folder fsynced: a reader (or a restart after
``kill -9``) sees the old file or the new one, never half of one.  Folders are created
0700 and files 0600 (explicitly, whatever the umask), and each folder the archive
creates is fsynced into its parent up to the archive root, so a power loss after an MCF
cannot lose the fax folder.

While a call runs, its confirmed pages go to a page journal, ``.pages.tif``: a TIFF Class
F (G4) that grows by appending each page (``imaging.output.TiffAppender``), so writing
page 200 costs what page 1 did and a crash at any point leaves a valid TIFF of the pages
before.  ``fax.pdf`` and ``fax.tif`` exist only for a finished fax: ``finish_documents``
streams the PDF from the journal and renames the journal to ``fax.tif`` (O(pages) once,
at the end).  **Rule for readers** (webhook bodies, the API): a document under its final
name is complete; a fax in progress has none (``meta.json`` ``files`` is empty until the
end).  After a crash the journal may hold one page more than ``meta.json`` confirms (the
MCF is sent only after meta.json names the page); ``finish_documents`` keeps exactly the
confirmed pages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import random
import struct
from pathlib import Path
from typing import Any, BinaryIO
from collections.abc import Callable, Iterable

from imaging import syscalls

META_NAME = "meta.json"
FILE_NAMES = {"pdf": "fax.pdf", "tiff": "fax.tif"}
JOURNAL_NAME = ".pages.tif"
META_MAX_BYTES = 16 << 20  # a meta.json is a few KB; a hold history grows it by lines
FOLDER_MODE = 0o700
FILE_MODE = 0o600


def rfc3339(unix_seconds: float) -> str:
    """UTC RFC 3339 with milliseconds, e.g. ``2026-11-25T19:06:51.123Z``."""
    moment = dt.datetime.fromtimestamp(unix_seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str | None) -> float | None:
    """UNIX seconds of an RFC 3339 time as meta.json writes it (``rfc3339``; one without a
    zone is UTC), or None when there is none or it cannot be read."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def create_private_file(path: Path, mode: int = 0o600) -> None:
    """Create ``path`` (and its folder, 0700) private to this user before a library such
    as SQLite opens it: it copies the file's mode to the files it makes beside it."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def fax_folder(root: str | os.PathLike[str], fax_id: str, started_at: float, subdir: str = "") -> Path:
    """Where a fax lives: the date is the call's start in UTC."""
    day = dt.datetime.fromtimestamp(started_at, tz=dt.UTC)
    base = Path(root) / subdir if subdir else Path(root)
    return base / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / fax_id


def page_sha256(bitmap: bytes) -> str:
    """SHA-256 of a page's packed 1-bit rows (MSB first, 1 = black): meta.json ``pages[].sha256``."""
    return hashlib.sha256(bitmap).hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = syscalls.open_file(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        syscalls.close(fd)


def make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents with mode 0700.

    Each folder created is fsynced, and so is its parent, from the deepest up to the first
    that existed (the archive root or a day folder), so the new entries survive a power
    loss (fsync on a directory makes its entries durable; a file renamed into a folder is
    only as durable as the folder's own entry).
    """
    folder = Path(folder)
    if syscalls.is_directory(folder):
        return  # every write after a fax's first
    # Up to the first folder that exists (the day's, for a fax's first page), not every
    # parent to /: each check was an os.stat letting go of the GIL, and the first page
    # write of each fax (our MCF waits for it) took ~13 hand-backs here under load (issue 14).
    missing = [folder]
    for parent in folder.parents:
        if syscalls.is_directory(parent):
            break
        missing.append(parent)
    created: list[Path] = []
    for path in reversed(missing):
        try:
            syscalls.make_directory(path, FOLDER_MODE)
        except FileExistsError:
            continue
        syscalls.chmod(path, FOLDER_MODE)  # explicit: not whatever the umask left
        created.append(path)
    for path in reversed(created):
        _fsync_dir(path)
        _fsync_dir(path.parent)


def write_atomic(path: Path, write: Callable[[Path], None] | bytes, *, sync_folder: bool = True) -> None:
    """Write ``path`` (mode 0600) atomically: ``write`` is the bytes, or a function that writes a given path.

    The quick system calls keep the GIL (imaging.syscalls; the fsyncs, the file's
    creation and the rename let it go): bytes are meta.json, written once per page while
    a fax runs, beside a busy event loop.  With
    ``sync_folder`` false the caller fsyncs the folder (once, after more renames): the
    file is not durable under its name until it does.
    """
    try:
        fd, tmp = _new_temporary(path)
    except FileNotFoundError:
        make_folders(path.parent)
        fd, tmp = _new_temporary(path)
    data, writer = (bytes(write), None) if isinstance(write, (bytes, bytearray)) else (None, write)
    try:
        try:
            syscalls.fchmod(fd, FILE_MODE)
            if data is not None:
                syscalls.pwrite_all(fd, data, 0)
                os.fsync(fd)
        finally:
            syscalls.close(fd)
        if writer is not None:
            writer(tmp)
            # Opened again: a writer may have put a new file at the path.
            fd = syscalls.open_file(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                syscalls.close(fd)
        syscalls.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        _fsync_dir(path.parent)


_temporary_names = random.Random()


def _new_temporary(path: Path) -> tuple[int, Path]:
    """A new empty file beside ``path`` (its name hidden and random), open for writing."""
    while True:
        # Not secrets/os.urandom: getrandom(2) lets go of the GIL (O_EXCL guards the name).
        tmp = path.parent / f".{path.name}.{_temporary_names.getrandbits(48):012x}.tmp"
        try:
            return syscalls.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), tmp
        except FileExistsError:
            continue


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    write_atomic(folder / META_NAME, json.dumps(meta, indent=2, sort_keys=False).encode() + b"\n")


def read_meta(folder: Path) -> dict[str, Any]:
    # Read holding the GIL (imaging.syscalls): a delivery outcome's read-modify-write of
    # meta.json runs beside a busy event loop (issue 14).
    fd = syscalls.open_file(folder / META_NAME, os.O_RDONLY)
    try:
        if syscalls.size(fd) > META_MAX_BYTES:  # not ours (a folder there reads as huge)
            raise ValueError(f"{folder / META_NAME} is not a meta.json")
        data = syscalls.read_whole(fd)
    finally:
        syscalls.close(fd)
    meta: dict[str, Any] = json.loads(data.decode("utf-8"))
    return meta


def save_documents(folder: Path, pages: list[Any], formats: Iterable[str]) -> dict[str, str]:
    """Write whole pages (``imaging.Page``) as fax.pdf / fax.tif; returns meta.json's ``files``."""
    from imaging import output  # the archive is the only place here that renders pages

    files: dict[str, str] = {}
    if not pages:
        return files
    for fmt in formats:
        name = FILE_NAMES[fmt]
        writer: Callable[[Any, Path], None] = output.write_pdf if fmt == "pdf" else output.write_tiff

        def write(tmp: Path, writer: Callable[[Any, Path], None] = writer) -> None:
            writer(pages, tmp)

        write_atomic(folder / name, write)
        files[fmt] = name
    return files


class PageJournal:
    """The confirmed pages of a fax in progress, appended to ``<folder>/.pages.tif``.

    ``append`` makes the page's data durable when it returns (see
    imaging.output.TiffAppender); the journal's own entry in the folder is made durable by
    the folder's fsync after the meta.json written next (``InboundFax.write``, before any
    page is confirmed): one folder fsync for both, not one each - a page write's every
    fsync waits to take the GIL back beside a busy event loop, with our MCF waiting on it
    (issue 14).  Blocking.
    """

    def __init__(self, folder: Path) -> None:
        from imaging.output import TiffAppender

        self.path = folder / JOURNAL_NAME
        self._appender = TiffAppender(self.path, mode=FILE_MODE)

    @property
    def pages(self) -> int:
        return self._appender.pages

    def append(self, page: Any) -> None:
        self._appender.append(page)


#: A page journal up to this size is finished in memory (most faxes: a 1-page fax's is
#: ~10-60 KB): read once, fax.pdf built and written whole, the journal's page totals
#: patched and the journal renamed fax.tif, one folder fsync for both renames; the PDF
#: is kept for the webhook (``documents``), which read it back from disk.  Each of the
#: ~60 system calls of the streamed way let go of the GIL and waited to take it back
#: beside a busy event loop (issue 14).  A larger journal is streamed, a page in memory.
FINISH_IN_MEMORY_BYTES = 8 << 20


def finish_documents(folder: Path, formats: Iterable[str], pages: int,
                     documents: dict[str, bytes] | None = None) -> dict[str, str]:
    """Turn the page journal (or, after a crash during this step, ``fax.tif``) into the
    final fax.pdf / fax.tif holding exactly the first ``pages`` pages; returns ``files``.

    Idempotent, so a restart may run it again.  When the journal holds exactly ``pages``
    pages it becomes fax.tif by a rename; otherwise (one page more than was confirmed,
    after a crash) the pages are copied.  A journal up to FINISH_IN_MEMORY_BYTES is
    finished in memory, and the documents written are put in ``documents`` (by format);
    a larger one is streamed, the PDF from the TIFF one page in memory.  Blocking; raises
    OSError, or ValueError for a damaged journal.
    """
    from imaging import output
    from imaging.tiff import iter_coded_pages

    formats = tuple(formats)
    journal = folder / JOURNAL_NAME
    final = folder / FILE_NAMES["tiff"]
    if pages <= 0:
        journal.unlink(missing_ok=True)
        return {}
    if _finished_in_memory(folder, formats, pages, documents):
        return {fmt: FILE_NAMES[fmt] for fmt in formats}
    source = journal if journal.is_file() else final
    if not source.is_file():
        # Done already (a PDF-only archive drops the journal once fax.pdf is written).
        return {fmt: FILE_NAMES[fmt] for fmt in formats if (folder / FILE_NAMES[fmt]).is_file()}
    in_source = _page_count(source)
    keep = min(pages, in_source)
    files: dict[str, str] = {}
    if "pdf" in formats:
        def pdf(tmp: Path) -> None:
            with open(source, "rb") as handle:
                output.write_pdf_coded(iter_coded_pages(handle, keep), tmp)
        write_atomic(folder / FILE_NAMES["pdf"], pdf)
        files["pdf"] = FILE_NAMES["pdf"]
    if "tiff" in formats:
        if source == journal and in_source == keep:
            _set_page_totals(journal, keep)
            os.replace(journal, final)
            _fsync_dir(folder)
        elif in_source != keep:
            def tiff(tmp: Path) -> None:
                appender = output.TiffAppender(tmp, mode=FILE_MODE)
                with open(source, "rb") as handle:
                    for page in iter_coded_pages(handle, keep):
                        appender.append(page)
                appender.finish()
            write_atomic(final, tiff)
        files["tiff"] = FILE_NAMES["tiff"]
    if journal.is_file():
        journal.unlink()
        _fsync_dir(folder)
    return files


def _finished_in_memory(folder: Path, formats: tuple[str, ...], pages: int,
                        documents: dict[str, bytes] | None) -> bool:
    """``finish_documents`` for a journal of at most FINISH_IN_MEMORY_BYTES holding exactly
    ``pages`` pages; False (nothing done) for any other case, which streams.  The quick
    system calls keep the GIL (imaging.syscalls)."""
    from imaging import output
    from imaging.tiff import iter_coded_pages

    journal = folder / JOURNAL_NAME
    try:
        fd = syscalls.open_file(journal, os.O_RDWR)
    except FileNotFoundError:
        return False  # finished before a crash, or never begun
    try:
        if syscalls.size(fd) > FINISH_IN_MEMORY_BYTES:
            return False
        data = syscalls.read_whole(fd)
        ifds = _ifds(io.BytesIO(data))
        if len(ifds) != pages:
            return False  # a page more than was confirmed (a crash): copied, streaming
        if "pdf" in formats:
            pdf = output.pdf_coded_bytes(iter_coded_pages(io.BytesIO(data), pages))
            write_atomic(folder / FILE_NAMES["pdf"], pdf, sync_folder=False)
            if documents is not None:
                documents["pdf"] = pdf
        if "tiff" in formats:
            patches = _page_total_patches(ifds, pages)
            for offset, word in patches:
                syscalls.pwrite_all(fd, word, offset)
            os.fsync(fd)
            if documents is not None:
                tiff = bytearray(data)
                for offset, word in patches:
                    tiff[offset:offset + len(word)] = word
                documents["tiff"] = bytes(tiff)
    finally:
        syscalls.close(fd)
    if "tiff" in formats:
        syscalls.rename(journal, folder / FILE_NAMES["tiff"])
    else:
        os.unlink(journal)
    # One fsync makes both renames (or the rename and the unlink) durable.
    _fsync_dir(folder)
    return True


def _ifds(handle: BinaryIO) -> list[tuple[int, bytes]]:
    """(offset, entries + next pointer) of every IFD of one of our little-endian TIFFs."""
    handle.seek(0)
    header = handle.read(8)
    if len(header) < 8 or header[:4] != b"II*\x00":
        raise ValueError("not one of our TIFF files")
    (offset,) = struct.unpack("<I", header[4:8])
    found: list[tuple[int, bytes]] = []
    while offset:
        if any(offset == seen for seen, _ in found):
            raise ValueError("TIFF IFD chain loops")
        handle.seek(offset)
        (n,) = struct.unpack("<H", handle.read(2))
        entries = handle.read(12 * n + 4)
        found.append((offset, entries))
        (offset,) = struct.unpack_from("<I", entries, 12 * n)
    return found


def _page_count(path: Path) -> int:
    with open(path, "rb") as handle:
        return len(_ifds(handle))


def _set_page_totals(path: Path, pages: int) -> None:
    """Fill in the PageNumber totals of a journal in place (one word per page; idempotent)."""
    with open(path, "r+b") as handle:
        for offset, word in _page_total_patches(_ifds(handle), pages):
            handle.seek(offset)
            handle.write(word)
        handle.flush()
        os.fsync(handle.fileno())


def _page_total_patches(ifds: list[tuple[int, bytes]], pages: int) -> list[tuple[int, bytes]]:
    """Where each page's PageNumber value goes in one of our TIFFs (its ``_ifds``), and its
    bytes (number, ``pages``)."""
    from imaging.tiff import TAG_PAGE_NUMBER

    patches = []
    for number, (offset, entries) in enumerate(ifds):
        for index in range((len(entries) - 4) // 12):
            tag, _, count = struct.unpack_from("<HHI", entries, 12 * index)
            if tag == TAG_PAGE_NUMBER and count == 2:
                patches.append((offset + 2 + 12 * index + 8, struct.pack("<HH", number, pages)))
    return patches


def iter_faxes(root: str | os.PathLike[str]) -> Iterable[Path]:
    """Every fax folder under the archive (any route sub-folder), newest id last.  A
    ``.deleting-`` folder (a retention deletion a crash interrupted) is not a fax."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((meta.parent for meta in root.rglob(META_NAME) if not meta.parent.name.startswith(".")),
                  key=lambda p: p.name)
