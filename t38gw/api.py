"""The HTTP API (DESIGN.md "HTTP API"): an ASGI app served by hypercorn's trio worker.

``/healthz`` and ``/metrics`` are open.  ``/v1/...`` needs a bearer token when tokens
are configured; with none configured it answers loopback clients only, because faxes are
patient data and an API open to the network by default would leak them.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from pathlib import Path
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from t38gw import archive
from t38gw.metrics import CONTENT_TYPE, GatewayMetrics

_FAX_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DOCUMENTS = {"pdf": ("fax.pdf", "application/pdf"), "tif": ("fax.tif", "image/tiff")}


class FaxIndex:
    """fax id -> archive folder, built by scanning once and updated as faxes are written."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._folders: dict[str, Path] = {}
        self.refresh()

    def refresh(self) -> None:
        self._folders = {folder.name: folder for folder in archive.iter_faxes(self.root)}

    def add(self, fax_id: str, folder: Path) -> None:
        self._folders[fax_id] = folder

    def folder(self, fax_id: str) -> Path | None:
        return self._folders.get(fax_id)

    def ids_newest_first(self) -> list[str]:
        return sorted(self._folders, reverse=True)  # UUIDv7 sorts by time


SendHandler = Callable[[Request], Awaitable[Response]]


def create_app(index: FaxIndex, metrics: GatewayMetrics, tokens: tuple[str, ...] = (),
               send_handler: SendHandler | None = None) -> Starlette:
    def authorised(request: Request) -> Response | None:
        if tokens:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.strip(), t) for t in tokens):
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

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def list_faxes(request: Request) -> Response:
        if (denied := authorised(request)) is not None:
            return denied
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return JSONResponse({"error": "bad_request", "detail": "limit must be an integer"}, status_code=400)
        items = []
        for fax_id in index.ids_newest_first()[:limit]:
            folder = index.folder(fax_id)
            try:
                meta = archive.read_meta(folder)
            except (OSError, ValueError):
                continue
            items.append({k: meta.get(k) for k in ("id", "direction", "status", "reason", "started_at", "ended_at")}
                         | {"pages": len(meta.get("pages", []))})
        return JSONResponse({"faxes": items})

    def find(request: Request) -> tuple[Path | None, Response | None]:
        if (denied := authorised(request)) is not None:
            return None, denied
        fax_id = request.path_params["fax_id"]
        folder = index.folder(fax_id) if _FAX_ID.match(fax_id) else None
        if folder is None:
            return None, JSONResponse({"error": "not_found", "detail": f"no fax {fax_id!r}"}, status_code=404)
        return folder, None

    async def get_fax(request: Request) -> Response:
        folder, problem = find(request)
        if problem:
            return problem
        return JSONResponse(archive.read_meta(folder))

    async def get_document(request: Request) -> Response:
        folder, problem = find(request)
        if problem:
            return problem
        if request.path_params["fmt"] not in _DOCUMENTS:
            return JSONResponse({"error": "not_found", "detail": "documents are document.pdf or document.tif"},
                                status_code=404)
        name, content_type = _DOCUMENTS[request.path_params["fmt"]]
        path = folder / name
        if not path.is_file():
            return JSONResponse({"error": "not_found", "detail": f"this fax has no {name}"}, status_code=404)
        return FileResponse(path, media_type=content_type, filename=f"{folder.name}.{request.path_params['fmt']}")

    async def post_fax(request: Request) -> Response:
        if (denied := authorised(request)) is not None:
            return denied
        if send_handler is None:
            return JSONResponse({"error": "not_implemented", "detail": "sending faxes is not built yet"},
                                status_code=501)
        return await send_handler(request)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/v1/faxes", list_faxes, methods=["GET"]),
        Route("/v1/faxes", post_fax, methods=["POST"]),
        Route("/v1/faxes/{fax_id}", get_fax),
        Route("/v1/faxes/{fax_id}/document.{fmt:str}", get_document),
    ])
