"""An outbound fax job's documents and record, as plain (blocking) functions.

A job is born in ``POST /v1/faxes`` (``t38gw.api`` -> ``t38gw.gateway``):

1. ``check_request`` - ``to`` through the dial plan, the webhook name - before any file
   is read: a bad request costs nothing and queues nothing;
2. ``render_pages`` (in a thread) - the files rasterised for fax (``imaging.sendpages``)
   at 204 x 196 dpi, 1728 pels (T.4 fine, A4 width: every fax machine takes it; the T.30
   engine merges rows for a receiver that takes only standard resolution), the optional
   cover page first and the header line on every page;
3. ``create_job_folder`` - the archive folder as for a received fax: ``fax.tif`` (always:
   the job's pages are read from it for every attempt) and ``fax.pdf`` as
   ``[archive] formats`` ask, and ``meta.json`` with ``status: "queued"`` and
   ``in_progress: true``; then the job row (``t38gw.jobs``), then 202.

The archive keeps the pages as sent, header lines included (they are stamped when the
job is queued, so every attempt sends the same pixels); each page's entry says whether
the receiver confirmed it (``sent``).  ``meta.json`` of an outbound fax (DESIGN.md,
"add, never rename"): ``direction: "outbound"``, ``to``, ``pages_total``,
``pages_sent``, ``attempts`` (one entry per call: started/ended, ``outcome``, ``cause``,
``reason``, ``sip_status``, ``pages_sent``) and ``next_attempt_at`` while a retry waits.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from imaging import Page
from imaging.libtiff import decode_with_libtiff
from imaging.output import coded_page, write_pdf_coded
from imaging.sendpages import DocumentError, pages_for_fax
from imaging.tiff import CodedPage, build_tiff, iter_coded_pages

from t38gw import archive
from t38gw.config import Config, Webhook
from t38gw.cover import CoverFields, CoverTemplateError, add_header_line, cover_page, load_cover_template
from t38gw.outbound import DialPlanError, DialTarget, plan_dial

# T.4 fine resolution on an A4-wide line: what every Group 3 machine receives.
SEND_X_DPI = 204
SEND_Y_DPI = 196
SEND_WIDTH_PX = 1728
OUTBOUND_EVENTS = ("fax.sent", "fax.send_failed")


class SendRequestError(Exception):
    """A send request that cannot be queued: ``status`` (4xx), ``code`` and a sentence."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class SendOptions:
    to: str
    cover: bool
    cover_note: str = ""
    header: bool | None = None  # None: [send] header_line
    webhook: str = ""  # a [[webhooks]] name; "" = the default webhook

    def with_defaults(self, config: Config) -> SendOptions:
        """The options with what the request left out taken from the config."""
        header = config.send.header_line if self.header is None else self.header
        return SendOptions(self.to, self.cover, self.cover_note, header, self.webhook)


def check_request(options: SendOptions, config: Config) -> DialTarget:
    """The dial target of ``options.to``; ``SendRequestError`` naming what is wrong."""
    try:
        target = plan_dial(options.to, config.sip.trunks, allow_direct_uri=config.send.allow_direct_uri)
    except DialPlanError as exc:
        raise SendRequestError(422, "bad_destination", str(exc)) from None
    if options.webhook:
        hook = next((w for w in config.webhooks if w.name == options.webhook), None)
        if hook is None:
            names = ", ".join(w.name for w in config.webhooks) or "none is configured"
            raise SendRequestError(422, "unknown_webhook",
                                   f"`webhook` names no configured webhook: {options.webhook!r} ({names})")
        if not set(OUTBOUND_EVENTS) & set(hook.events):
            raise SendRequestError(422, "webhook_without_send_events",
                                   f"webhook {hook.name!r} takes none of {', '.join(OUTBOUND_EVENTS)}"
                                   " (its `events`)")
    if len(options.cover_note) > 2000:
        raise SendRequestError(422, "cover_note_too_long", "`cover_note` is longer than 2000 characters")
    return target


def send_webhooks(config: Config, name: str) -> list[Webhook]:
    """The webhook a job's outcome goes to: the one it named, else ``default``, else the first."""
    if name:
        return [w for w in config.webhooks if w.name == name]
    for hook in config.webhooks:
        if hook.name == "default":
            return [hook]
    return list(config.webhooks[:1])


def render_pages(files: Sequence[str | os.PathLike[str]], options: SendOptions, config: Config,
                 target: DialTarget, when: datetime.datetime) -> list[Page]:
    """The job's pages, cover first, header lines on; ``SendRequestError`` 422 for a
    file that is not a document, 413 for more pages than ``[send] max_pages_per_job``."""
    limit = config.send.max_pages_per_job - (1 if options.cover else 0)
    if limit < 1:
        raise SendRequestError(413, "too_many_pages", f"[send] max_pages_per_job = {config.send.max_pages_per_job}"
                               " leaves no room beside the cover")
    try:
        pages = pages_for_fax(files, x_dpi=SEND_X_DPI, y_dpi=SEND_Y_DPI, width_px=SEND_WIDTH_PX,
                              max_pages=limit)
    except DocumentError as exc:
        text = str(exc)
        # pages_for_fax's one error not about a file (those start with the file's name,
        # which may itself say "more than").
        code = "too_many_pages" if text.startswith("the documents have more than ") else "not_a_document"
        if code == "too_many_pages":
            text = (f"the documents have more than {limit} pages ([send] max_pages_per_job ="
                    f" {config.send.max_pages_per_job}{', the cover included' if options.cover else ''})")
        raise SendRequestError(413 if code == "too_many_pages" else 422, code, text) from None
    total = len(pages) + (1 if options.cover else 0)
    if options.cover:
        try:
            template = load_cover_template(config.send.cover_template) if config.send.cover_template else None
        except CoverTemplateError as exc:
            raise SendRequestError(500, "cover_template", str(exc)) from None
        fields = CoverFields(when=when, pages=total, sender=config.send.sender_name,
                             sender_number=config.fax.local_ident, recipient_number=target.number or target.to,
                             note=options.cover_note)
        pages.insert(0, cover_page(fields, template, x_dpi=SEND_X_DPI, y_dpi=SEND_Y_DPI, width_px=SEND_WIDTH_PX))
    if options.header:
        pages = [add_header_line(page, ident=config.fax.local_ident, name=config.send.sender_name, when=when,
                                 page_no=number, pages=total)
                 for number, page in enumerate(pages, 1)]
    return pages


def initial_meta(fax_id: str, created: float, options: SendOptions, target: DialTarget, config: Config,
                 pages: Sequence[Page]) -> dict[str, Any]:
    return {
        "id": fax_id,
        "direction": "outbound",
        "status": "queued",
        "reason": "",
        "in_progress": True,
        "started_at": archive.rfc3339(created),
        "ended_at": None,
        "to": options.to,
        "pages_total": len(pages),
        "pages_sent": 0,
        "attempts": [],
        "next_attempt_at": archive.rfc3339(created),
        "media": "t38",
        "sip": {"call_id": "", "from": "", "to": target.uri, "did": target.number, "caller": target.from_user or "",
                "remote_addr": "", "trunk": target.trunk},
        "t30": {"remote_ident": "", "local_ident": config.fax.local_ident, "ecm": None, "bit_rate": None,
                "modem": None, "compression": None, "pages": 0},
        "t38": {"version": None, "max_bitrate": None, "error_correction": None, "rate_management": None,
                "max_datagram": None, "packets_received": 0, "packets_lost": 0, "packets_recovered": 0},
        "pages": [{"number": n, "width_px": p.width, "height_px": p.height, "x_dpi": _dpi(p.x_dpi),
                   "y_dpi": _dpi(p.y_dpi), "bad_rows": 0, "sha256": archive.page_sha256(p.bitmap), "sent": False}
                  for n, p in enumerate(pages, 1)],
        "files": {},
        "route": "",
        "send": {"cover": options.cover, "header": options.header, "webhook": options.webhook},
        "deliveries": [],
    }


def create_job_folder(root: Path, fax_id: str, created: float, pages: Sequence[Page], meta: dict[str, Any],
                      formats: Sequence[str]) -> Path:
    """Write the job's folder: fax.tif (always), fax.pdf if asked, then meta.json.  Blocking."""
    folder = archive.fax_folder(root, fax_id, created)
    archive.make_folders(folder)
    coded = [coded_page(page) for page in pages]  # G4: a page is ~20-60 KB, not 500
    archive.write_atomic(folder / archive.FILE_NAMES["tiff"], build_tiff(coded))
    files = {"tiff": archive.FILE_NAMES["tiff"]}
    if "pdf" in formats:

        def pdf(tmp: Path) -> None:
            write_pdf_coded(coded, tmp)

        archive.write_atomic(folder / archive.FILE_NAMES["pdf"], pdf)
        files["pdf"] = archive.FILE_NAMES["pdf"]
    meta["files"] = files
    archive.write_meta(folder, meta)
    return folder


class JobPages(Sequence[Page]):
    """The pages of a job's ``fax.tif``, decoded one at a time when the T.30 engine asks
    (a 200-page job holds one page in memory, not 200)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as handle:
            self._count = sum(1 for _ in iter_coded_pages(handle))
        self._cached: tuple[int, Page] | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Page: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Page]: ...

    def __getitem__(self, index: int | slice) -> Page | Sequence[Page]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        page = _decode(self._coded(index))
        self._cached = (index, page)
        return page

    def _coded(self, index: int) -> CodedPage:
        with open(self.path, "rb") as handle:
            for number, coded in enumerate(iter_coded_pages(handle, index + 1)):
                if number == index:
                    return coded
        raise IndexError(index)

    def __iter__(self) -> Iterator[Page]:
        for index in range(self._count):
            yield self[index]


def _decode(coded: CodedPage) -> Page:
    bitmap = decode_with_libtiff(coded.data, coded.width, coded.height, coded.coding, bit_order=coded.bit_order)
    return Page(coded.width, coded.height, coded.x_dpi, coded.y_dpi, bitmap)


def _dpi(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
