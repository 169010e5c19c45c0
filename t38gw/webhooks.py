"""Webhook messages signed per the Standard Webhooks convention.

DESIGN.md "Webhooks": the HMAC key is the base64-decoded part of the secret after
``whsec_``; the signature is ``v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>``
sent in ``webhook-signature`` beside ``webhook-id`` and ``webhook-timestamp``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
# Standard Webhooks: receivers reject timestamps further than this from their clock.
DEFAULT_TOLERANCE_SECONDS = 5 * 60
# Standard Webhooks: "secrets should be between 24 bytes and 64 bytes" (of random key).
MIN_KEY_BYTES = 24


class WebhookVerificationError(Exception):
    """A received webhook's signature or timestamp does not verify."""


def secret_key(secret: str, min_bytes: int = 1) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ``ValueError`` (never echoing it) if bad."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("must be 'whsec_' followed by base64 (Standard Webhooks)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"is not base64 after 'whsec_' ({exc})") from None
    if len(key) < min_bytes:
        raise ValueError(f"decodes to {len(key)} bytes; a webhook key must be at least {min_bytes} random bytes"
                         " (e.g. 'whsec_' + the output of `openssl rand -base64 32`)")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """All headers of one delivery attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float,
           tolerance: float = DEFAULT_TOLERANCE_SECONDS) -> None:
    """Check a received webhook as a consumer would; raise ``WebhookVerificationError`` if bad.

    ``webhook-signature`` may carry several space-separated signatures (key rotation);
    one matching ``v1`` signature suffices.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise WebhookVerificationError(f"missing or bad webhook header: {exc}") from None
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError("webhook timestamp outside tolerance")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookVerificationError("no matching v1 signature")


def event_body(event_type: str, timestamp: str, data: Mapping[str, Any],
               document: Mapping[str, Any] | None) -> bytes:
    """The JSON body: ``{"type", "timestamp", "data": <meta.json>, "document": {...}}``."""
    payload: dict[str, Any] = {"type": event_type, "timestamp": timestamp, "data": data}
    if document is not None:
        payload["document"] = document
    return json.dumps(payload, separators=(",", ":"), sort_keys=False).encode()


def inline_document(content_type: str, filename: str, content: bytes) -> dict[str, str]:
    """The ``document`` member: the file inline as base64."""
    return {"content_type": content_type, "filename": filename,
            "data_base64": base64.b64encode(content).decode()}


def linked_document(content_type: str, filename: str, url: str) -> dict[str, str]:
    """The ``document`` member when the file is too large to inline: where the API serves it."""
    return {"content_type": content_type, "filename": filename, "url": url}


def document_member(content_type: str, filename: str, path: Path, max_bytes: int, url: str,
                    data: bytes | None = None) -> dict[str, str]:
    """The ``document`` member for ``path``: inline up to ``max_bytes``, else a link to ``url``.

    ``data``: the file's contents when the caller holds them already (just written).
    Otherwise the size is read from the file system first, so a document over the cap
    is never read into memory nor copied into the spool.
    """
    if (len(data) if data is not None else path.stat().st_size) > max_bytes:
        return linked_document(content_type, filename, url)
    return inline_document(content_type, filename, data if data is not None else path.read_bytes())


def document_url(api_base: str, fax_id: str, fmt: str) -> str:
    """The HTTP API URL of a fax's document (``fmt`` "pdf" or "tif")."""
    return f"{api_base.rstrip('/')}/v1/faxes/{fax_id}/document.{fmt}"


_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")


def redact_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what a log line may show."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if parts.username or parts.password else "") + host + (f":{port}" if port else "")
    tail = "?***" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + tail


def redact_urls(text: str) -> str:
    """Every URL inside ``text`` redacted as ``redact_url`` does (exception messages, library logs)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
