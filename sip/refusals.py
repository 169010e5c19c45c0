"""Answering bad input, and reporting what the UA turned away.

A request that fails to parse still gets a 400 (or the parser's status hint) when its
request line and the headers a response must copy were understood (RFC 3261 8.2: never
answer an ACK or a response); otherwise it is dropped. Refusals (``RequestRefused``
events) are throttled so that a flood cannot flood the log: see :class:`RefusalThrottle`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip.address import Address
from sip.errors import LocalProtocolError, RemoteProtocolError, SipParseError
from sip.events import RequestRefused
from sip.message import Headers, Request, Response, make_response, reason_phrase
from sip.ratelimit import RateLimiter


def peek_method(data: bytes) -> str:
    """The method of a request's bytes without parsing them ("" for a response or junk)."""
    token = data[:16].split(b" ", 1)[0]
    if len(token) < 16 and token.isalpha() and token.isupper():
        return token.decode("ascii")
    return ""


def error_status(error: RemoteProtocolError) -> int:
    """The status answering ``error``: its hint when that is a 4xx-6xx, else 400."""
    return error.status_hint if 400 <= error.status_hint < 700 else 400


def short_reason(reason: str | None, error: Exception) -> str:
    """A reason phrase with the parser's complaint appended (printable, at most 80 chars)."""
    if reason is None:
        reason = reason_phrase(getattr(error, "status_hint", 400))
    detail = "".join(ch for ch in str(error) if ch.isprintable())[:80]
    return f"{reason} ({detail})" if detail else reason


def salvage_answerable(data: bytes) -> list[tuple[str, str]] | None:
    """From bytes that failed to parse, the headers a 400 must copy, when they are there.

    Only requests other than ACK are answered (RFC 3261 8.2: never answer ACK or a
    response).  Returns None when the message cannot be answered.
    """
    head = data.split(b"\r\n\r\n", 1)[0][:8192]
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        return None
    start = lines[0].split(" ")
    if len(start) != 3 or start[2] != "SIP/2.0" or start[0] in ("ACK", "") or start[0].startswith("SIP/"):
        return None
    wanted = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
              "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        canonical = wanted.get(name.strip().lower())
        if colon and canonical and value.strip() and "\r" not in value and "\n" not in value:
            found.append((canonical, value.strip()))
    if {name for name, _ in found} != {"Via", "From", "To", "Call-ID", "CSeq"}:
        return None
    return found


def error_response(request: Request, error: RemoteProtocolError) -> Response | None:
    """The answer to a request the UA could frame but not accept; None when the headers
    it must echo are unusable (the request is dropped).

    Raises ``SipParseError``/``LocalProtocolError`` when no response can be built at all.
    """
    response = make_response(request, error_status(error))
    response.reason = short_reason(response.reason, error)
    if any("\r" in value or "\n" in value for _, value in response.headers):
        return None
    return response


def salvaged_response(data: bytes, error: SipParseError) -> Response | None:
    """The answer to bytes that did not parse, built from the headers that can be
    salvaged (``salvage_answerable``); None when they cannot be answered."""
    headers = salvage_answerable(data)
    if headers is None:
        return None
    try:
        response = Response(error_status(error), None, Headers(headers))
        response.reason = short_reason(response.reason, error)
    except LocalProtocolError:
        return None
    return response


@dataclass
class _Held:
    """Refusals of one reason the throttle held back: how many, and the last of them."""

    count: int
    source: Address
    method: str
    status: int | None


class RefusalThrottle:
    """Turns refusals into :class:`RequestRefused` events, at most one per (source host,
    reason) per ``interval`` and ``rate``/``burst`` overall.

    ``refused`` returns the event to report now, or None when the refusal was held back:
    the caller then makes sure ``flush`` runs within ``interval``; it reports one event
    per reason standing for the last held refusal, with the others in ``suppressed``.
    """

    def __init__(self, interval: float, rate: float, burst: float) -> None:
        if interval <= 0:
            raise ValueError("refused_event_interval must be > 0")
        self.interval = interval
        self._limiter = RateLimiter(1.0 / interval, 1.0, 4096, global_rate=rate, global_burst=burst)
        self._held: dict[str, _Held] = {}

    def refused(self, source: Address, method: str, status: int | None, reason: str, now: float) -> RequestRefused | None:
        held = self._held.get(reason)
        if self._limiter.allow((source.host, reason), now):
            self._held.pop(reason, None)
            return RequestRefused(source, method, status, reason, held.count if held else 0)
        if held is None:
            self._held[reason] = _Held(1, source, method, status)
        else:
            held.count += 1
            held.source, held.method, held.status = source, method, status
        return None

    def flush(self) -> list[RequestRefused]:
        held, self._held = self._held, {}
        return [RequestRefused(h.source, h.method, h.status, reason, h.count - 1) for reason, h in held.items()]
