"""The archive, the system of record (DESIGN.md "Archive layout").

``<dir>/[<route subdir>/]<YYYY>/<MM>/<DD>/<fax_id>/`` holds ``fax.pdf``, ``fax.tif``
and ``meta.json``.  Every file is written to a temporary name in the same folder,
fsynced, renamed over the old one, and the folder fsynced: a reader (or a restart after
``kill -9``) sees the old file or the new one, never half of one.

The call session saves after every confirmed page (MCF sent), so a call that dies
mid-document still leaves the pages it confirmed, with ``status: "partial"``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

META_NAME = "meta.json"
FILE_NAMES = {"pdf": "fax.pdf", "tiff": "fax.tif"}


def rfc3339(unix_seconds: float) -> str:
    """UTC RFC 3339 with milliseconds, e.g. ``2026-11-25T19:06:51.123Z``."""
    moment = dt.datetime.fromtimestamp(unix_seconds, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def fax_folder(root: str | os.PathLike[str], fax_id: str, started_at: float, subdir: str = "") -> Path:
    """Where a fax lives: the date is the call's start in UTC."""
    day = dt.datetime.fromtimestamp(started_at, tz=dt.timezone.utc)
    base = Path(root) / subdir if subdir else Path(root)
    return base / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / fax_id


def page_sha256(bitmap: bytes) -> str:
    """SHA-256 of a page's packed 1-bit rows (MSB first, 1 = black): meta.json ``pages[].sha256``."""
    return hashlib.sha256(bitmap).hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None] | bytes) -> None:
    """Write ``path`` atomically: ``write`` is the bytes, or a function that writes a given path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if isinstance(write, (bytes, bytearray)):
            with os.fdopen(fd, "wb") as handle:
                handle.write(write)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            os.close(fd)
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    write_atomic(folder / META_NAME, json.dumps(meta, indent=2, sort_keys=False).encode() + b"\n")


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / META_NAME).read_text(encoding="utf-8"))


def save_documents(folder: Path, pages: list, formats: Iterable[str]) -> dict[str, str]:
    """Write the pages as fax.pdf / fax.tif (as configured); returns meta.json's ``files``."""
    from imaging import output  # the archive is the only place here that renders pages

    files: dict[str, str] = {}
    if not pages:
        return files
    for fmt in formats:
        name = FILE_NAMES[fmt]
        writer = output.write_pdf if fmt == "pdf" else output.write_tiff
        write_atomic(folder / name, lambda tmp, writer=writer: writer(pages, tmp))
        files[fmt] = name
    return files


def iter_faxes(root: str | os.PathLike[str]) -> Iterable[Path]:
    """Every fax folder under the archive (any route sub-folder), newest id last."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((meta.parent for meta in root.rglob(META_NAME)), key=lambda p: p.name)
