"""One inbound fax's record: its archive folder, ``meta.json`` and webhook messages.

The record is built up while the call runs and written to the archive after every
confirmed page, so a call (or the whole gateway) that dies mid-document leaves the
pages it confirmed.  While the call runs ``meta.json`` carries ``"in_progress": true``;
a restart finds such folders and closes them (``recover_archive``), turning the page
journal into fax.pdf / fax.tif.

Memory stays bounded whatever the page count: a confirmed page (its SHA-256 taken from
the packed rows) is kept only until the writer thread has G4-coded it and appended it to
the archive's page journal; the record then holds its meta.json entry alone.  The coding
runs in the writer thread, not in the call's trio task.

A page can be archived ``complete: false``: a non-ECM page that lost image data beyond
recovery is answered RTN (T.30 5.3.6.2) and, if the sender never sends it again, the
call session stores the best copy received, with the rows it estimates lost.  Such a
page makes the fax ``partial``.

Webhooks are made durable in two steps, in this order, so a ``kill -9`` between any two
writes loses nothing and never invents a second webhook-id for the same event:

1. ``meta.json`` is written final, with ``deliveries`` naming the webhook-ids (state
   ``pending``);
2. each delivery is committed to the spool.

A restart re-enqueues every ``pending`` delivery of ``meta.json`` that the spool lacks
(``INSERT OR IGNORE`` makes that idempotent), rebuilding the same body from the folder.

Which event: ``fax.received`` when at least one page was confirmed (``status``
``received`` or ``partial`` - the pages must reach the record system either way, and
``data.status`` says which), ``fax.failed`` when none was.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping

from imaging import BitOrder, Coding, Page
from imaging.output import coded_page
from imaging.tiff import CodedPage

from t38gw import archive, webhooks
from t38gw.config import Config, Route, Webhook
from t38gw.ids import new_webhook_id
from t38gw.spool import Delivery, Spool, pending_delivery

IN_PROGRESS_REASON = "call in progress"
INTERRUPTED_REASON = "the gateway stopped during the call"
_ATTACH = {"pdf": ("application/pdf", "pdf"), "tiff": ("image/tiff", "tiff")}


def webhooks_for(config: Config, route: Route) -> list[Webhook]:
    """The webhook a fax on ``route`` goes to: the route's, else ``default``, else the first."""
    if route.webhook:
        return [w for w in config.webhooks if w.name == route.webhook]
    for hook in config.webhooks:
        if hook.name == "default":
            return [hook]
    return list(config.webhooks[:1])


def event_type_for(meta: dict[str, Any]) -> str:
    if meta.get("direction") == "outbound":
        # Anything short of every page confirmed needs a person: fax.send_failed, with
        # data.status "partial" or "failed" saying which.
        return "fax.sent" if meta.get("status") == "sent" else "fax.send_failed"
    return "fax.received" if meta.get("pages") else "fax.failed"


@dataclass(frozen=True)
class PendingPage:
    """A page the archive does not have yet, with its place in the fax (1-based): the
    page as received (coded by ``coded_page()``, in the writer thread) or already G4."""

    number: int
    page: Page | None = None
    coded: CodedPage | None = None
    bad_rows: int = 0
    longest_bad_run: int = 0
    g4: bytes | None = None  # the page's G4 coding, when the decoder's proof made it

    def coded_page(self) -> CodedPage:
        if self.coded is not None:
            return self.coded
        page = self.page
        if self.g4 is not None and page is not None:
            return CodedPage(page.width, page.height, page.x_dpi, page.y_dpi, Coding.MMR, BitOrder.MSB_FIRST,
                             self.g4, bad_rows=self.bad_rows, longest_bad_run=self.longest_bad_run)
        return coded_page(self.page, bad_rows=self.bad_rows, longest_bad_run=self.longest_bad_run)


def compress_page(page: Page, *, bad_rows: int = 0, longest_bad_run: int = 0) -> tuple[CodedPage, str]:
    """A page as the archive keeps it: G4 (libtiff) and the SHA-256 of its packed rows."""
    return (coded_page(page, bad_rows=bad_rows, longest_bad_run=longest_bad_run),
            archive.page_sha256(page.bitmap))


@dataclass
class InboundFax:
    """The archive record of one inbound fax (see the module docstring).

    ``pages`` are meta.json's page entries (no pixels); ``snapshot`` hands the writer the
    coded pages the archive does not have yet, and ``write`` appends them.
    """

    fax_id: str
    started_at: float  # UNIX seconds
    root: Path
    formats: tuple[str, ...]
    sip: dict[str, Any]
    route_index: int | None
    route: Route
    local_ident: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    _unwritten: list[PendingPage] = field(default_factory=list, init=False, repr=False)
    _journal: archive.PageJournal | None = field(default=None, init=False, repr=False)
    _journaled: int = field(default=0, init=False)  # pages durably in the journal (writer thread)
    #: Held by the thread writing this record (``write`` and the index row after it): page
    #: writes and the final write come from different thread pools and must not interleave.
    write_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _final_written: bool = field(default=False, init=False)
    #: The final documents as written, by format, when they were finished in memory: the
    #: webhook's attachment (``enqueue_planned``) need not read them back.  Cleared once spooled.
    documents: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.meta = {
            "id": self.fax_id,
            "direction": "inbound",
            "status": "failed",
            "reason": IN_PROGRESS_REASON,
            "started_at": archive.rfc3339(self.started_at),
            "ended_at": None,
            "in_progress": True,
            "sip": dict(self.sip),
            "t30": {"remote_ident": "", "local_ident": self.local_ident, "ecm": None, "bit_rate": None,
                    "modem": None, "compression": None, "pages": 0},
            "t38": {"version": None, "max_bitrate": None, "error_correction": None, "rate_management": None,
                    "max_datagram": None, "packets_received": 0, "packets_lost": 0, "packets_recovered": 0},
            "pages": [],
            "incomplete_pages": 0,
            "files": {},
            "route": self.route_name,
            "deliveries": [],
        }

    @property
    def pages(self) -> list[dict[str, Any]]:
        """meta.json's ``pages`` entries, one per archived page."""
        return self.meta["pages"]

    @property
    def route_name(self) -> str:
        return "default" if self.route_index is None else f"routes[{self.route_index}]"

    @property
    def folder(self) -> Path:
        return archive.fax_folder(self.root, self.fax_id, self.started_at, self.route.archive_subdir)

    def reroute(self, index: int | None, route: Route) -> None:
        """The TSI picked another route (after phase B, before any page was written)."""
        self.route_index, self.route = index, route
        self.meta["route"] = self.route_name

    def add_page(self, page: Page, bad_rows: int, *, longest_bad_run: int = 0, complete: bool = True,
                 rows_lost: int = 0, g4: bytes | None = None, sha256: str | None = None) -> None:
        """Add a page; the writer codes it G4 (unless ``g4`` is that coding already, from
        the decoder's proof) and drops the bitmap (see ``write``).  ``sha256``: the
        bitmap's ``archive.page_sha256``, if it was worked out already (on a thread)."""
        number = len(self.pages) + 1
        self._unwritten.append(PendingPage(number, page=page, bad_rows=bad_rows, longest_bad_run=longest_bad_run,
                                           g4=g4))
        self._add_entry(number, page.width, page.height, page.x_dpi, page.y_dpi, bad_rows,
                        sha256 or archive.page_sha256(page.bitmap), complete, rows_lost)

    def add_coded_page(self, coded: CodedPage, sha256: str, *, complete: bool = True, rows_lost: int = 0) -> None:
        """Add a page already coded by ``compress_page``: confirmed (``complete``), or the best
        copy of a page answered RTN that the sender never sent again (``complete=False``,
        ``rows_lost`` estimated)."""
        number = len(self.pages) + 1
        self._unwritten.append(PendingPage(number, coded=coded))
        self._add_entry(number, coded.width, coded.height, coded.x_dpi, coded.y_dpi, coded.bad_rows, sha256,
                        complete, rows_lost)

    def _add_entry(self, number: int, width: int, height: int, x_dpi: float, y_dpi: float, bad_rows: int,
                   sha256: str, complete: bool, rows_lost: int) -> None:
        self.pages.append({
            "number": number, "width_px": width, "height_px": height,
            "x_dpi": _dpi(x_dpi), "y_dpi": _dpi(y_dpi), "bad_rows": bad_rows,
            "sha256": sha256, "complete": complete, "rows_lost": 0 if complete else max(0, rows_lost),
        })
        self.meta["t30"]["pages"] = len(self.pages)
        self.meta["incomplete_pages"] = sum(1 for entry in self.pages if not entry["complete"])
        self.meta["status"] = "partial"

    @property
    def final_written(self) -> bool:
        """The final meta.json is on disk (read holding ``write_lock``)."""
        return self._final_written

    def snapshot(self) -> tuple[tuple[PendingPage, ...], dict[str, Any]]:
        """What to write now: the pages the archive lacks and a copy of meta (trio thread)."""
        self.forget_written()
        return tuple(self._unwritten), _copy(self.meta)

    def forget_written(self) -> None:
        """Drop the pages the journal holds from memory (trio thread, after a write)."""
        written = self._journaled
        self._unwritten = [p for p in self._unwritten if p.number > written]

    def write(self, pages: Iterable[PendingPage], meta: dict[str, Any]) -> bool:
        """Append ``pages`` to the page journal, finish the documents if ``meta`` is final,
        then write meta.json atomically (blocking: run it in a worker thread, holding
        ``write_lock``).  False, writing nothing, for a snapshot taken while the call ran
        that comes after the final one was written: a page write can wait in its queue
        longer than our MCF waits for it (the final snapshot holds its pages too), and
        written then it would put back an in-progress meta.json over the final one.

        Each call costs the same whatever the page count (one append, one meta.json);
        the final call streams fax.pdf / fax.tif once.
        """
        if meta.get("in_progress") and self._final_written:
            return False
        folder = self.folder
        archive.make_folders(folder)
        for pending in pages:
            if pending.number <= self._journaled:
                continue
            if self._journal is None:
                # Its entry in the folder is durable with meta.json's, just below.
                self._journal = archive.PageJournal(folder)
            self._journal.append(pending.coded_page())
            self._journaled = pending.number
        if not meta.get("in_progress"):
            meta["files"] = _finish_documents(folder, self.formats, len(meta.get("pages", [])), self.documents)
        archive.write_meta(folder, meta)
        if not meta.get("in_progress"):
            self._final_written = True
        return True

    def finish(self, status: str, reason: str, ended_at: float) -> None:
        self.meta.update(status=status, reason=reason, ended_at=archive.rfc3339(ended_at), in_progress=False)
        if self.pages:
            self.meta["files"] = {fmt: archive.FILE_NAMES[fmt] for fmt in self.formats}


def _finish_documents(folder: Path, formats: Iterable[str], pages: int,
                      documents: dict[str, bytes] | None = None) -> dict[str, str]:
    try:
        return archive.finish_documents(folder, formats, pages, documents)
    except ValueError as exc:  # our own journal unreadable: a storage fault, as OSError is
        raise OSError(f"page journal in {folder} is damaged: {exc}") from exc


def _dpi(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def plan_deliveries(meta: dict[str, Any], hooks: Iterable[Webhook], now: float,
                    rng: random.Random | None = None) -> None:
    """Name the webhook messages of a finished fax in ``meta['deliveries']`` (step 1)."""
    event = event_type_for(meta)
    for hook in hooks:
        if event not in hook.events:
            continue
        meta["deliveries"].append({"id": new_webhook_id(now, rng), "webhook": hook.name, "event": event,
                                   "state": "pending", "attempts": 0, "last_error": "", "updated_at": None})


def enqueue_planned(spool: Spool, folder: Path, meta: dict[str, Any], config: Config, now: float,
                    documents: Mapping[str, bytes] | None = None, enqueued: list[Delivery] | None = None) -> int:
    """Commit every pending planned delivery to the spool (step 2; idempotent).
    ``documents``: the fax's documents as just written (``InboundFax.documents``), by
    format; one not there is read from the folder.  ``enqueued`` gets the deliveries
    committed, as the spool now holds them (``DeliveryWorker.offer``)."""
    hooks = {h.name: h for h in config.webhooks}
    count = 0
    for planned in meta.get("deliveries", []):
        if planned.get("state") != "pending" or spool.has(planned["id"]):
            continue
        hook = hooks.get(planned["webhook"])
        if hook is None:
            continue
        body = webhooks.event_body(planned["event"], archive.rfc3339(now), _public(meta),
                                   _document(folder, meta, hook, config.http.base_url, documents or {}))
        delivery = pending_delivery(id=planned["id"], webhook=hook.name, url=hook.url, event_type=planned["event"],
                                    fax_id=meta["id"], body=body, now=now)
        # False: the spool cannot be written now; meta.json still plans it, so the next
        # start (or the spool's recovery) spools it again.
        if spool.enqueue_delivery(delivery) is not False:
            count += 1
            if enqueued is not None:
                enqueued.append(delivery)
    return count


def _public(meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json as the webhook's ``data`` (its own deliveries are not news to the receiver)."""
    return {k: v for k, v in meta.items() if k != "deliveries"}


def _document(folder: Path, meta: dict[str, Any], hook: Webhook, api_base: str,
              documents: Mapping[str, bytes]) -> dict[str, str] | None:
    """The webhook's ``document``: inline up to the hook's ``max_attachment_bytes``, else the
    API URL that serves it (a spool row never holds a document larger than that)."""
    attach = hook.attach
    if attach == "none" or attach not in _ATTACH:
        return None
    name = meta.get("files", {}).get(attach)
    data = documents.get(attach)
    if not name or (data is None and not (folder / name).is_file()):
        return None
    content_type, _ = _ATTACH[attach]
    suffix = Path(name).suffix
    return webhooks.document_member(content_type, f"{meta['id']}{suffix}", folder / name, hook.max_attachment_bytes,
                                    webhooks.document_url(api_base, meta["id"], suffix.lstrip(".")), data)


def record_outcome(folder: Path, delivery_id: str, state: str, attempts: int, error: str, now: float) -> None:
    """Note a delivery's outcome in meta.json ``deliveries`` (blocking).  Under the fax's
    lock: a hold placed at the same moment must not be lost to this read-modify-write."""
    from t38gw.retention import meta_lock

    try:
        with meta_lock(folder):
            meta = archive.read_meta(folder)
            for planned in meta.get("deliveries", []):
                if planned.get("id") == delivery_id:
                    planned.update(state=state, attempts=attempts, last_error=error, updated_at=archive.rfc3339(now))
                    archive.write_meta(folder, meta)
                    return
    except (OSError, ValueError):
        return  # deleted by retention meanwhile, or unreadable: the spool keeps the outcome


def recover_archive(root: Path, spool: Spool, config: Config, now: float | None = None,
                    rng: random.Random | None = None, jobs: set[str] | frozenset[str] = frozenset(),
                    folders: Iterable[Path] | None = None, index: Any = None) -> dict[str, int]:
    """After a restart: close faxes a dead gateway left in progress, re-spool lost webhooks.

    ``jobs``: the outbound jobs still queued (``t38gw.jobs``): their folders stay open
    (the job runner sends them); an outbound folder in progress without a job was being
    accepted when the gateway stopped (the client never heard 202) and is closed failed.
    ``folders``: the folders to look at (the index's in-progress and recently ended
    faxes; default: every folder of the archive).  ``index``: kept in step (each meta.json
    written is upserted; a row whose folder never got a meta.json - the call ended before
    its first write - is dropped).
    Blocking; run before serving.  Returns counts for the log.
    """
    now = time.time() if now is None else now
    closed = requeued = 0
    written: list[tuple[dict[str, Any], Path]] = []
    for folder in (archive.iter_faxes(root) if folders is None else folders):
        try:
            meta = archive.read_meta(folder)
        except FileNotFoundError:
            if index is not None:
                index.delete(folder.name)
            continue
        except (OSError, ValueError):
            continue
        if index is not None:
            written.append((meta, folder))
        if meta.get("direction") == "outbound":
            if meta.get("in_progress") and meta.get("id") in jobs:
                if meta.get("status") in ("dialing", "sending"):
                    # Killed mid-attempt: the job runner sends it again from the start.
                    if meta.get("attempts"):
                        meta["attempts"][-1].update(ended_at=archive.rfc3339(now), outcome="failed",
                                                    cause="interrupted", reason=INTERRUPTED_REASON)
                    meta.update(status="queued", reason=INTERRUPTED_REASON, next_attempt_at=archive.rfc3339(now))
                    archive.write_meta(folder, meta)
                continue
            if meta.get("in_progress"):
                meta.update(status="failed", in_progress=False, ended_at=archive.rfc3339(now),
                            reason="the gateway stopped while queueing the job (it was never queued)",
                            next_attempt_at=None)
                archive.write_meta(folder, meta)
                closed += 1
            requeued += enqueue_planned(spool, folder, meta, config, now)
            continue
        if meta.get("in_progress"):
            pages = meta.get("pages", [])
            meta.update(status="partial" if pages else "failed", reason=INTERRUPTED_REASON,
                        ended_at=archive.rfc3339(now), in_progress=False)
            try:
                # The journal may hold one page more than meta.json confirms: keep these.
                meta["files"] = _finish_documents(folder, config.archive.formats, len(pages))
            except OSError as exc:
                meta["files"] = {}
                meta["reason"] = f"{INTERRUPTED_REASON}; the documents could not be rebuilt: {exc}"
            if not meta.get("deliveries"):
                route = _route_of(config, meta.get("route", "default"))
                plan_deliveries(meta, webhooks_for(config, route), now, rng)
            archive.write_meta(folder, meta)
            closed += 1
        requeued += enqueue_planned(spool, folder, meta, config, now)
    if index is not None and written:
        index.upsert_many(written)  # the metas as they are now (the dicts were updated in place)
    return {"closed": closed, "requeued": requeued}


def _route_of(config: Config, name: str) -> Route:
    if name.startswith("routes[") and name.endswith("]"):
        try:
            return config.routes[int(name[7:-1])]
        except (ValueError, IndexError):
            pass
    return Route()


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
