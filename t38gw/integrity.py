"""Archive integrity: every stored page re-hashed against its ``meta.json`` entry.

``meta.json`` records, per page, the SHA-256 of the page's packed 1-bit rows as received or
sent (``pages[i].sha256``, ``archive.page_sha256``).  ``verify_fax`` decodes each page of
``fax.tif`` again (libtiff, as the job runner reads a send job's pages) and compares: bit
rot or tampering in the TIFF shows as a page whose pixels no longer hash to the recorded
value (or that no longer decodes at all).  The hash is of the pixels, not of the file's
bytes, so the comparison holds whichever G4 coder wrote the file.

What is checked, and what is not:

* ``meta.json`` missing or unreadable: reported, nothing else can be checked.
* ``fax.tif`` and ``fax.pdf`` must exist when ``meta.json`` ``files`` names them.
* The pages of ``fax.tif`` (whenever it exists): the count against ``pages``, and each
  page's hash.  A fax with no pages and no ``fax.tif`` (a failed call) is fine.
* A fax in progress without ``fax.tif`` - an inbound call still running, its pages in the
  page journal that the call is appending to (or that the next start closes,
  ``recover_archive``) - is not checked: reading a file another thread is appending to and
  about to rename would report races, not rot.  A queued outbound job has its final
  ``fax.tif`` from the start and is checked.
* ``fax.pdf`` is checked for presence only: its pages are the same G4 strips as ``fax.tif``
  (streamed from it when the fax ended), and an archive kept as PDF only (``formats =
  ["pdf"]``) has no TIFF to re-hash.

Blocking; one page in memory at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging.libtiff import decode_with_libtiff
from imaging.tiff import iter_coded_pages

from t38gw import archive

MISSING_META = "missing_meta"
UNREADABLE_META = "unreadable_meta"
MISSING_FILE = "missing_file"
UNREADABLE_TIFF = "unreadable_tiff"
PAGE_COUNT = "page_count"
PAGE_UNDECODABLE = "page_undecodable"
PAGE_MISMATCH = "page_mismatch"
PAGE_WITHOUT_HASH = "page_without_hash"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a fax folder.

    ``kind`` is one of the module's constants (``page_mismatch``, ``missing_file``, ...),
    ``page`` the 1-based page number when it is about a page, ``detail`` a sentence for
    the report.
    """

    kind: str
    detail: str
    page: int | None = None


def verify_fax(folder: Path) -> list[Problem]:
    """The problems of the fax in ``folder`` ([] if it checks out; see the module docstring)."""
    folder = Path(folder)
    try:
        meta = archive.read_meta(folder)
    except FileNotFoundError:
        return [Problem(MISSING_META, f"{archive.META_NAME} is missing")]
    except (OSError, ValueError) as exc:
        return [Problem(UNREADABLE_META, f"{archive.META_NAME} cannot be read: {exc}")]
    if not isinstance(meta, dict):
        return [Problem(UNREADABLE_META, f"{archive.META_NAME} is not a JSON object")]
    problems: list[Problem] = []
    files = _mapping(meta.get("files"))
    for fmt in ("tiff", "pdf"):
        name = files.get(fmt)
        if isinstance(name, str) and name and not (folder / name).is_file():
            problems.append(Problem(MISSING_FILE, f"{name} is missing (meta.json files names it)"))
    listed = meta.get("pages")
    pages: list[Any] = listed if isinstance(listed, list) else []
    tiff_name = files.get("tiff")
    tiff = folder / (tiff_name if isinstance(tiff_name, str) and tiff_name else archive.FILE_NAMES["tiff"])
    if tiff.is_file():
        problems.extend(_verify_pages(tiff, pages))
    elif not meta.get("in_progress") and pages and "tiff" not in files and "pdf" not in files:
        # Pages confirmed, the fax ended, yet no document at all: the record lost its pages.
        problems.append(Problem(MISSING_FILE, f"no document holds the {len(pages)} pages meta.json lists"))
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _verify_pages(tiff: Path, pages: list[Any]) -> list[Problem]:
    problems: list[Problem] = []
    seen = 0
    try:
        with open(tiff, "rb") as handle:
            for seen, coded in enumerate(iter_coded_pages(handle), 1):
                if seen > len(pages):
                    continue  # counted below; there is no hash to compare with
                entry = pages[seen - 1] if isinstance(pages[seen - 1], dict) else {}
                expected = entry.get("sha256")
                if not isinstance(expected, str) or not expected:
                    problems.append(Problem(PAGE_WITHOUT_HASH, f"page {seen} has no sha256 in meta.json", seen))
                    continue
                try:
                    bitmap = decode_with_libtiff(coded.data, coded.width, coded.height, coded.coding,
                                                 bit_order=coded.bit_order)
                except OSError as exc:
                    problems.append(Problem(PAGE_UNDECODABLE, f"page {seen} no longer decodes: {exc}", seen))
                    continue
                actual = archive.page_sha256(bitmap)
                if actual != expected:
                    problems.append(Problem(PAGE_MISMATCH, f"page {seen}'s pixels hash to {actual},"
                                                           f" meta.json says {expected}", seen))
    except (OSError, ValueError) as exc:
        problems.append(Problem(UNREADABLE_TIFF, f"{tiff.name} cannot be read after page {seen}: {exc}"))
        return problems
    if seen != len(pages):
        problems.append(Problem(PAGE_COUNT, f"{tiff.name} holds {seen} pages, meta.json lists {len(pages)}"))
    return problems


def verify_archive(folders: Iterable[Path], *, since: float | str | dt.datetime | None = None,
                   ) -> Iterator[tuple[str, list[Problem]]]:
    """(fax_id, problems) for each fax folder in ``folders`` (e.g. ``archive.iter_faxes(root)``
    or the index's folders), a clean fax with []; with ``since`` (UNIX seconds, RFC 3339 or
    a datetime) only faxes that started then or later.

    ``.deleting-`` folders (a retention sweep's, ``t38gw.retention``) are skipped.  A folder
    whose meta.json cannot be read is reported whatever ``since`` says: its date is unknown.
    """
    threshold = _since_seconds(since)
    for folder in folders:
        folder = Path(folder)
        if folder.name.startswith("."):
            continue
        if threshold is not None:
            started = _started_at(folder)
            if started is not None and started < threshold:
                continue
        yield folder.name, verify_fax(folder)


def _since_seconds(since: float | str | dt.datetime | None) -> float | None:
    if since is None:
        return None
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        return float(since)
    if isinstance(since, dt.datetime):
        return (since if since.tzinfo else since.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(since, str):
        seconds = archive.parse_rfc3339(since.strip())
        if seconds is not None:
            return seconds
    raise ValueError(f"since must be an RFC 3339 time like 2026-12-01T00:00:00Z, not {since!r}")


def _started_at(folder: Path) -> float | None:
    try:
        meta = archive.read_meta(folder)
    except (OSError, ValueError):
        return None
    value = meta.get("started_at") if isinstance(meta, dict) else None
    return archive.parse_rfc3339(value) if isinstance(value, str) else None


