"""The HTTP API (DESIGN.md "HTTP API"): an ASGI app served by hypercorn's trio worker.

``/healthz`` and ``/metrics`` are open.  ``/v1/...`` needs a bearer token when tokens
are configured; with none configured it answers loopback clients only, because faxes are
patient data and an API open to the network by default would leak them.

Every ``/v1`` request that reads a fax (the list, one record, a document), allowed or
not, is written to the audit log (``AuditLog``): HIPAA 164.312(b) asks for "mechanisms
that record and examine activity in information systems that contain or use electronic
protected health information".
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import time
from pathlib import Path
from typing import Any
from collections.abc import Awaitable, Callable

import structlog

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from t38gw import archive
from t38gw.audit import AuditTrail as AuditLog
from t38gw.audit import verify_audit_log  # noqa: F401 (re-exported: the audit trail's check)
from t38gw.config import HttpConfig
from t38gw.index import ArchiveIndex, ArchiveIndexError, IndexQueryError
from t38gw.metrics import CONTENT_TYPE, GatewayMetrics
from t38gw.sendjob import SendOptions, SendRequestError

log = structlog.get_logger("t38gw.api")

_FAX_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DOCUMENTS = {"pdf": ("fax.pdf", "application/pdf"), "tif": ("fax.tif", "image/tiff")}


# GET /v1/faxes filters (DESIGN.md "HTTP API"; t38gw.index.ArchiveIndex.search).
SEARCH_PARAMS = ("since", "until", "status", "direction", "caller", "did", "remote_ident", "route", "q", "limit",
                 "cursor")


# POST /v1/faxes: (options, [(filename, bytes)]) -> the new job's fax id, or
# t38gw.sendjob.SendRequestError (4xx, nothing queued).
SendHandler = Callable[[SendOptions, list[tuple[str, bytes]]], Awaitable[str]]
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # one job's files together
MAX_UPLOAD_FILES = 50
_SEND_FIELDS = {"file", "to", "cover", "cover_note", "header", "webhook"}


def _rfc3339(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def token_id(token: str) -> str:
    """How the audit log names a token: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def api_base_url(http: HttpConfig) -> str:
    """The URL the API is reached at (``HttpConfig.base_url``)."""
    return http.base_url


def hypercorn_tls(http: HttpConfig) -> dict[str, str]:
    """The hypercorn ``Config`` attributes that serve HTTPS (empty: plain HTTP)."""
    if not http.certificate:
        return {}
    return {"certfile": http.certificate, "keyfile": http.private_key}


def create_app(index: ArchiveIndex, metrics: GatewayMetrics, tokens: tuple[str, ...] = (),
               send_handler: SendHandler | None = None, *, audit_log: AuditLog | None = None) -> Starlette:
    """The ASGI app.  ``audit_log``: where reads of patient data are recorded (None: only
    the structlog ``audit`` event is emitted, e.g. in tests)."""
    # An empty token would let a bare "Authorization: Bearer" in; config refuses short
    # tokens, and the app never accepts an empty one whatever it is given.
    tokens = tuple(t for t in tokens if t)
    allow_tokens = bool(tokens)

    def authorised(request: Request) -> Response | None:
        if allow_tokens:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or not any(
                    hmac.compare_digest(token.encode(), t.encode()) for t in tokens):
                return JSONResponse({"error": "unauthorized", "detail": "a valid bearer token is required"},
                                    status_code=401, headers={"www-authenticate": "Bearer"})
            return None
        client = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(client).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return JSONResponse({"error": "forbidden",
                                 "detail": "no API tokens are configured, so /v1 answers loopback clients only"},
                                status_code=403)
        return None

    def who(request: Request) -> str:
        if not allow_tokens:
            return "loopback"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        return token_id(token) if scheme.lower() == "bearer" and token else "none"

    def audited(response: Response, request: Request, fax_id: str | None, **extra: Any) -> Response:
        """Record one read of patient data (or an attempt at one) before answering."""
        entry = {"client": request.client.host if request.client else "", "token_id": who(request),
                 "method": request.method, "path": request.url.path, "query": request.url.query,
                 "fax_id": fax_id, "status": response.status_code} | extra
        log.info("audit", **{("audit_event" if k == "event" else k): v for k, v in entry.items()})
        if audit_log is not None:
            try:
                audit_log.write(entry)
            except OSError as exc:
                # HIPAA 164.312(b): no read of patient data without its audit record.
                log.error("audit_log_write_failed", path=str(audit_log.path), error=str(exc))
                return JSONResponse({"error": "unavailable", "detail": "the audit log cannot be written"},
                                    status_code=503)
        return response

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def list_faxes(request: Request) -> Response:
        if (denied := authorised(request)) is not None:
            return audited(denied, request, None)
        query = request.query_params
        unknown = sorted(set(query.keys()) - set(SEARCH_PARAMS))
        if unknown:
            return audited(JSONResponse({"error": "bad_request", "param": unknown[0],
                                         "detail": f"unknown parameter {unknown[0]!r}; the filters are "
                                                   f"{', '.join(SEARCH_PARAMS)}"}, status_code=400), request, None)
        filters: dict[str, Any] = {name: query[name] for name in SEARCH_PARAMS if name in query}
        try:
            items, next_cursor = await run_in_threadpool(lambda: index.search(**filters))
        except IndexQueryError as exc:
            return audited(JSONResponse({"error": "bad_request", "param": exc.param, "detail": exc.message},
                                        status_code=400), request, None)
        except ArchiveIndexError as exc:
            log.error("archive_index_read_failed", error=str(exc))
            return audited(JSONResponse({"error": "unavailable", "detail": "the archive index cannot be read"},
                                        status_code=503), request, None)
        return audited(JSONResponse({"faxes": items, "next_cursor": next_cursor}), request, None,
                       fax_ids=[item["id"] for item in items])

    def find(request: Request) -> tuple[Path | None, Response | None]:
        if (denied := authorised(request)) is not None:
            return None, denied
        fax_id = request.path_params["fax_id"]
        folder = index.get_folder(fax_id) if _FAX_ID.match(fax_id) else None
        if folder is None:
            return None, JSONResponse({"error": "not_found", "detail": f"no fax {fax_id!r}"}, status_code=404)
        return folder, None

    def requested_id(request: Request) -> str | None:
        fax_id = request.path_params.get("fax_id", "")
        return fax_id if _FAX_ID.match(fax_id) else None  # never echo arbitrary text into the log

    async def get_fax(request: Request) -> Response:
        folder, problem = find(request)
        if problem:
            return audited(problem, request, requested_id(request))
        try:
            meta = archive.read_meta(folder)
        except FileNotFoundError:
            # Indexed the moment the call was accepted; meta.json comes with its first write.
            # Until then the record is what the index knows: a fax in progress, no pages.
            row = await run_in_threadpool(lambda: index.get_row(folder.name))
            if row is None:
                return audited(JSONResponse({"error": "not_found", "detail": f"no fax {folder.name!r}"},
                                            status_code=404), request, folder.name)
            meta = {"id": row["id"], "direction": row["direction"], "status": row["status"],
                    "reason": row["reason"], "in_progress": bool(row["in_progress"]),
                    "started_at": row["started_at_text"], "ended_at": row["ended_at_text"], "media": row["media"],
                    "sip": {"caller": row["caller"], "did": row["did"], "trunk": row["trunk"]},
                    "t30": {"remote_ident": row["remote_ident"]}, "pages": [], "files": {}, "route": row["route"]}
        return audited(JSONResponse(meta), request, folder.name)

    async def get_document(request: Request) -> Response:
        folder, problem = find(request)
        if problem:
            return audited(problem, request, requested_id(request))
        if request.path_params["fmt"] not in _DOCUMENTS:
            return audited(JSONResponse({"error": "not_found", "detail": "documents are document.pdf or document.tif"},
                                        status_code=404), request, folder.name)
        name, content_type = _DOCUMENTS[request.path_params["fmt"]]
        path = folder / name
        if not path.is_file():
            return audited(JSONResponse({"error": "not_found", "detail": f"this fax has no {name}"}, status_code=404),
                           request, folder.name)
        return audited(FileResponse(path, media_type=content_type,
                                    filename=f"{folder.name}.{request.path_params['fmt']}"), request, folder.name)

    async def post_fax(request: Request) -> Response:
        if (denied := authorised(request)) is not None:
            return denied
        if send_handler is None:
            return JSONResponse({"error": "not_implemented", "detail": "this gateway does not send faxes"},
                                status_code=501)
        try:
            options, files = await read_send_form(request)
            fax_id = await send_handler(options, files)
        except SendRequestError as exc:
            log.info("send_refused", code=exc.code, detail=exc.detail, status=exc.status)
            return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status)
        return JSONResponse({"id": fax_id}, status_code=202, headers={"location": f"/v1/faxes/{fax_id}"})

    async def hold(request: Request) -> Response:
        """POST (with a ``reason``) places a legal hold, DELETE releases it: a held fax is
        never deleted by retention.  meta.json shows the hold and its history; the change
        is in the audit trail before the answer leaves."""
        from t38gw import retention

        folder, problem = find(request)
        if problem:
            return audited(problem, request, requested_id(request))
        by = who(request)
        now = time.time()
        try:
            if request.method == "POST":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                reason = body.get("reason") if isinstance(body, dict) else None
                if not isinstance(reason, str):
                    return audited(JSONResponse({"error": "bad_request", "param": "reason",
                                                 "detail": 'send JSON {"reason": "why the fax must be kept"}'},
                                                status_code=400), request, folder.name)
                meta = await run_in_threadpool(
                    lambda: retention.place_hold(folder, reason=reason, by=by, now=now))
            else:
                meta = await run_in_threadpool(lambda: retention.release_hold(folder, by=by, now=now))
        except ValueError as exc:
            return audited(JSONResponse({"error": "bad_request", "param": "reason", "detail": str(exc)},
                                        status_code=422), request, folder.name)
        except retention.FaxInProgressError as exc:
            return audited(JSONResponse({"error": "in_progress", "detail": str(exc)}, status_code=409),
                           request, folder.name)
        except FileNotFoundError:
            return audited(JSONResponse({"error": "not_found", "detail": f"fax {folder.name} is gone"},
                                        status_code=404), request, folder.name)
        try:
            await run_in_threadpool(lambda: index.upsert(meta, folder))
        except ArchiveIndexError as exc:
            log.error("archive_index_write_failed", fax_id=folder.name, error=str(exc), fix="t38gw archive reindex")
        event = "hold_placed" if request.method == "POST" else "hold_released"
        log.info(event, fax_id=folder.name, by=by)
        return audited(JSONResponse({"id": folder.name, "hold": meta.get("hold"),
                                     "hold_history": meta.get("hold_history", [])}),
                       request, folder.name, event=event)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/v1/faxes", list_faxes, methods=["GET"]),
        Route("/v1/faxes", post_fax, methods=["POST"]),
        Route("/v1/faxes/{fax_id}", get_fax),
        Route("/v1/faxes/{fax_id}/document.{fmt:str}", get_document),
        Route("/v1/faxes/{fax_id}/hold", hold, methods=["POST", "DELETE"]),
    ])


def _flag(value: str | None, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise SendRequestError(400, "bad_request", f"`{name}` must be true or false, not {value[:40]!r}")


async def read_send_form(request: Request) -> tuple[SendOptions, list[tuple[str, bytes]]]:
    """The fields of a ``POST /v1/faxes`` (multipart/form-data); ``SendRequestError``
    (400/413/415) naming what is missing or wrong."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise SendRequestError(415, "unsupported_media_type",
                               "send the fax as multipart/form-data: `file` parts and a `to` field")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
        raise SendRequestError(413, "too_large", f"the request is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    try:
        form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=50)
    except Exception as exc:  # python-multipart's errors have no common public base
        raise SendRequestError(400, "bad_request", f"the multipart body cannot be read: {exc}") from None
    try:
        unknown = sorted(set(form.keys()) - _SEND_FIELDS)
        if unknown:
            raise SendRequestError(400, "bad_request", f"unknown field(s) {', '.join(unknown)}; expected"
                                   f" {', '.join(sorted(_SEND_FIELDS))}")
        files: list[tuple[str, bytes]] = []
        total = 0
        for item in form.getlist("file"):
            if isinstance(item, str):
                raise SendRequestError(400, "bad_request", "`file` must be a file part (with a filename)")
            data = await item.read()
            total += len(data)
            if total > MAX_UPLOAD_BYTES:
                raise SendRequestError(413, "too_large", f"the files are larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
            name = os.path.basename(item.filename or "") or f"file {len(files) + 1}"
            if not data:
                raise SendRequestError(422, "not_a_document", f"{name}: the file is empty")
            files.append((name, data))
        if not files:
            raise SendRequestError(400, "no_file", "no `file` part: attach the document(s) to send")

        def text(name: str) -> str | None:
            value = form.get(name)
            if value is not None and not isinstance(value, str):
                raise SendRequestError(400, "bad_request", f"`{name}` must be a text field, not a file")
            return value

        to = (text("to") or "").strip()
        if not to:
            raise SendRequestError(400, "no_destination", "`to` is missing: a number or a sip: URI")
        note = text("cover_note") or ""
        cover = _flag(text("cover"), "cover", default=bool(note))
        header_text = text("header")
        header = None if header_text in (None, "") else _flag(header_text, "header", default=True)
        return SendOptions(to=to, cover=cover, cover_note=note, header=header,
                           webhook=(text("webhook") or "").strip()), files
    finally:
        await form.close()
