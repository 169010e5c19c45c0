"""``t38gw send FILE… --to NUMBER``: post a fax to the running gateway's API and follow it.

The command is a thin HTTP client of ``POST /v1/faxes`` and ``GET /v1/faxes/{id}``: it reads
and checks every file before anything goes on the wire, posts them as multipart/form-data,
then polls the job's record once a second and prints a line whenever what the record says
changes (``queued``, ``dialing``, ``sending: page 1/3``, a retry, the outcome).

Exit codes follow cli.py: 0 the fax was sent (or, with ``--no-wait``, accepted); 1 the job
failed or was only partly sent, the gateway could not be reached, or following gave up; 2 a
usage error: a file missing or unreadable, or the API refused the request (4xx, its detail
printed). No traceback reaches the user: transport errors become one-line messages.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2

DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 3600.0
POLL_INTERVAL_S = 1.0
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Upload of many pages on a slow link: allow more time to write the body than to read a record.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, connect=5.0, write=300.0)
# A gateway restart should not end the follow at once; a few seconds of silence does.
MAX_CONSECUTIVE_POLL_FAILURES = 5

CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}
FINAL_STATUSES = frozenset({"sent", "partial", "failed"})


class SendUsageError(Exception):
    """The command line or a file is wrong; the message is the sentence to print (exit 2)."""


@dataclass(frozen=True)
class Document:
    filename: str
    content: bytes
    content_type: str


def read_documents(paths: list[str]) -> list[Document]:
    """Read every file; raise SendUsageError naming the first one that is missing, unreadable,
    empty or of a type the gateway does not take."""
    documents = []
    for name in paths:
        path = Path(name)
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None:
            kinds = ", ".join(sorted({suffix.lstrip(".") for suffix in CONTENT_TYPES}))
            raise SendUsageError(f"{name}: not a document the gateway can send (one of: {kinds})")
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise SendUsageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise SendUsageError(f"{name}: is a folder, not a file") from None
        except OSError as exc:
            raise SendUsageError(f"{name}: cannot read it: {exc.strerror or exc}") from None
        if not content:
            raise SendUsageError(f"{name}: the file is empty")
        documents.append(Document(path.name, content, content_type))
    return documents


def form_fields(to: str, cover: bool | None = None, note: str | None = None, header: bool = True,
                webhook: str | None = None) -> dict[str, str]:
    """The non-file form fields of ``POST /v1/faxes``. A field the user did not choose is left
    out so that the gateway's configured default applies."""
    if not to.strip():
        raise SendUsageError("--to needs a number or SIP URI")
    fields = {"to": to}
    if note is not None:
        if cover is False:
            raise SendUsageError("--note puts text on the cover page; it cannot go with --no-cover")
        fields["cover"] = "true"
        fields["cover_note"] = note
    elif cover is not None:
        fields["cover"] = "true" if cover else "false"
    if not header:
        fields["header"] = "false"
    if webhook is not None:
        fields["webhook"] = webhook
    return fields


def api_base(url: str) -> str:
    """The API's base URL without a trailing slash; SendUsageError unless it is http(s)://host[:port]."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise SendUsageError(f"--api {url}: not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise SendUsageError(f"--api {url}: give the gateway's API as http://HOST:PORT or https://HOST:PORT")
    return url.rstrip("/")


def _current_attempt(record: Mapping[str, Any]) -> tuple[int, str]:
    """(attempt number counting from 1, number dialled) of the attempt under way or next."""
    attempts = record.get("attempts") or []
    if attempts and not attempts[-1].get("ended_at"):
        return len(attempts), str(record.get("to", ""))  # attempts[].number counts attempts
    return len(attempts) + 1, str(record.get("to", ""))


def progress_line(record: Mapping[str, Any]) -> str:
    """One human line saying where the job stands. The caller prints it when it changes."""
    status = record.get("status", "?")
    to = record.get("to", "")
    sent = int(record.get("pages_sent") or 0)
    total = record.get("pages_total")
    if status == "dialing":
        attempt, number = _current_attempt(record)
        return f"dialing {number} (attempt {attempt})"
    if status == "sending":
        if not total:
            return f"sending: {sent} pages confirmed"
        # pages_sent counts pages the far end confirmed (T.30 MCF); the one going out is the next.
        return f"sending: page {min(sent + 1, int(total))}/{total}"
    if status == "queued":
        attempts = record.get("attempts") or []
        if attempts and record.get("next_attempt_at"):
            last = attempts[-1]
            why = last.get("reason") or last.get("outcome") or "did not go through"
            return f"attempt {len(attempts)} to {to}: {why}; next attempt at {record['next_attempt_at']}"
        return "queued"
    if status == "sent":
        return f"sent: {sent} {'page' if sent == 1 else 'pages'} to {to}"
    if status == "partial":
        return f"partial: {sent}/{total if total is not None else '?'} pages sent to {to}: {record.get('reason') or 'no reason given'}"
    if status == "failed":
        return f"failed: {record.get('reason') or 'no reason given'}"
    return f"{status}"


def exit_code_for(status: str) -> int | None:
    """0 for ``sent``, 1 for ``partial`` and ``failed``, None while the job is still going."""
    if status == "sent":
        return EXIT_OK
    if status in FINAL_STATUSES:
        return EXIT_RUNTIME
    return None


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("detail") or body.get("error")):
        return str(body.get("detail") or body.get("error"))
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _fail(message: str, code: int) -> int:
    print(f"t38gw send: {message}", file=sys.stderr)
    return code


def run_send(args: argparse.Namespace) -> int:
    """Carry out ``t38gw send`` with the parsed options; return the exit code."""
    token = args.token if args.token is not None else os.environ.get("T38GW_TOKEN")
    try:
        api = api_base(args.api or os.environ.get("T38GW_API") or DEFAULT_API)
        if args.timeout < 0:
            raise SendUsageError("--timeout must be zero or more seconds")
        documents = read_documents(args.files)
        fields = form_fields(args.to, cover=args.cover, note=args.note, header=args.header, webhook=args.webhook)
    except SendUsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    files = [("file", (doc.filename, doc.content, doc.content_type)) for doc in documents]
    with httpx.Client(base_url=api, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        try:
            response = client.post("/v1/faxes", data=fields, files=files, timeout=UPLOAD_TIMEOUT)
        except httpx.TransportError as exc:
            return _fail(f"cannot reach the gateway at {api}: {exc or type(exc).__name__}", EXIT_RUNTIME)
        if 400 <= response.status_code < 500:
            return _fail(f"the gateway refused the fax ({response.status_code}): {_error_detail(response)}", EXIT_USAGE)
        if response.status_code != 202:
            return _fail(f"the gateway could not take the fax ({response.status_code}): {_error_detail(response)}",
                         EXIT_RUNTIME)
        try:
            fax_id = str(response.json()["id"])
        except (ValueError, KeyError, TypeError):
            return _fail(f"the gateway accepted the fax but its answer names no id: {response.text[:200]!r}",
                         EXIT_RUNTIME)
        if args.no_wait:
            print(fax_id)
            return EXIT_OK
        try:
            return _follow(client, api, fax_id, args.timeout)
        except KeyboardInterrupt:
            return _fail(f"stopped following; fax {fax_id} continues in the gateway", EXIT_RUNTIME)


def _follow(client: httpx.Client, api: str, fax_id: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    printed_queued = False
    last_line = "queued"
    failures = 0
    while True:
        try:
            response = client.get(f"/v1/faxes/{fax_id}")
        except httpx.TransportError as exc:
            failures += 1
            if failures >= MAX_CONSECUTIVE_POLL_FAILURES:
                return _fail(f"lost contact with the gateway at {api} ({exc or type(exc).__name__}); "
                             f"fax {fax_id} continues there", EXIT_RUNTIME)
            response = None
        if response is not None:
            if response.status_code != 200:
                return _fail(f"cannot follow fax {fax_id} ({response.status_code}): {_error_detail(response)}",
                             EXIT_RUNTIME)
            try:
                record = response.json()
                status = str(record["status"])
            except (ValueError, KeyError, TypeError):
                return _fail(f"the gateway's record of fax {fax_id} is not understood: {response.text[:200]!r}",
                             EXIT_RUNTIME)
            failures = 0
            if not printed_queued:
                total = record.get("pages_total")
                print(f"queued: {fax_id}" + (f" ({total} {'page' if total == 1 else 'pages'})" if total else ""),
                      flush=True)
                printed_queued = True
            line = progress_line(record)
            code = exit_code_for(status)
            if code is not None:
                print(line, file=sys.stdout if code == EXIT_OK else sys.stderr, flush=True)
                return code
            if line != last_line:
                print(line, flush=True)
                last_line = line
        if time.monotonic() + POLL_INTERVAL_S > deadline:
            return _fail(f"stopped following after {timeout_s:g} s ({last_line}); "
                         f"fax {fax_id} continues in the gateway", EXIT_RUNTIME)
        time.sleep(POLL_INTERVAL_S)
