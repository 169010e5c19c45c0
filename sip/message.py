"""SIP messages: parse and serialise (RFC 3261 7, 18.3, 20, 25).

How it works
------------
A message is split once into its header section and body (the first CRLFCRLF). The header
section is decoded (UTF-8, undecodable bytes kept with ``surrogateescape``), cut into lines,
folded continuation lines are joined with one SP (RFC 3261 7.3.1), and each line is split at
its first colon into a name and a raw value. Names are canonicalised (compact forms
expanded, known names spelled as in RFC 3261) and values are kept as text. Only the headers
every transaction needs (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length) are
parsed when the message is parsed (``sip.parser``), so a malformed one is refused at once
with a status hint; every other header is parsed on demand (``parse_name_addr``...).

The parsed forms of those headers are cached on the message and returned by its properties
(``.vias``, ``.from_``, ``.to``, ``.cseq``...). They are views: to change a header, build a
new value and ``msg.headers.set(...)`` it; the cache notices the new value.

Framing: ``parse_message`` takes one datagram (RFC 3261 18.3: a Content-Length shorter
than the body truncates it, a longer one is an error, none means "the rest").
``StreamParser`` frames TCP/TLS byte streams by Content-Length, with size limits, and skips
CRLF keep-alives (RFC 5626 3.5.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .errors import LocalProtocolError, SipParseError
from .grammar import parse_params, quote_string, split_list
from .header_values import (
    NameAddr,
    Via,
    check_call_id,
    parse_cseq,
    parse_max_forwards,
    parse_name_addr,
    parse_via,
    parse_vias,
)
from .headers import Headers, canonical_name
from .uri import TOKEN_CHARS, AbsoluteUri, SipUri, Uri, parse_uri

__all__ = [
    "Headers",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "Via",
    "canonical_name",
    "make_response",
    "method_tokens",
    "option_tags",
    "parse_name_addr",
    "parse_params",
    "parse_via",
    "quote_string",
    "reason_phrase",
    "split_list",
    "AbsoluteUri",
    "SipUri",
    "Uri",
    "parse_uri",
]

SIP_VERSION = "SIP/2.0"

_T = TypeVar("_T")
# A header_cache entry: (headers, headers.version, raw value(s), parsed value).
CacheEntry = tuple[Headers, int, object, Any]


class MessageBase:
    """What requests and responses share: headers, body and the parsed-header cache.

    ``header_cache`` maps a header key to a :data:`CacheEntry`. While the same Headers is
    unchanged the parse is returned without a look-up; after a change it is kept if the
    raw value is still the same string. ``sip.parser`` fills it for the headers it
    validates.
    """

    __slots__ = ("headers", "body", "header_cache")

    headers: Headers
    body: bytes
    header_cache: dict[str, CacheEntry]

    def _cached(self, key: str, parse: Callable[[str], _T]) -> _T:
        headers = self.headers
        hit = self.header_cache.get(key)
        if hit is not None and hit[0] is headers and hit[1] == headers.version:
            cached: _T = hit[3]
            return cached
        raw = headers.first_by_key(key)
        if raw is None:
            raise SipParseError(f"missing {canonical_name(key)} header")
        if hit is not None and hit[2] is raw:
            parsed: _T = hit[3]
        else:
            parsed = parse(raw)
        self.header_cache[key] = (headers, headers.version, raw, parsed)
        return parsed

    @property
    def call_id(self) -> str:
        return self._cached("call-id", check_call_id)

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)`` from CSeq."""
        return self._cached("cseq", parse_cseq)

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", parse_name_addr)

    @property
    def to(self) -> NameAddr:
        return self._cached("to", parse_name_addr)

    @property
    def vias(self) -> list[Via]:
        """Every Via, topmost first (split across lines and commas)."""
        headers = self.headers
        hit = self.header_cache.get("via")
        if hit is not None and hit[0] is headers and hit[1] == headers.version:
            cached: list[Via] = hit[3]
            return cached
        raw = tuple([value for key, _, value in headers.entries if key == "via"])
        if hit is not None and hit[2] == raw:
            parsed: list[Via] = hit[3]
        else:
            parsed = parse_vias(raw)
        self.header_cache["via"] = (headers, headers.version, raw, parsed)
        return parsed

    @property
    def via(self) -> Via:
        """The topmost Via."""
        return self.vias[0]

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact (empty for ``Contact: *``; see ``is_wildcard_contact``)."""
        values = self.headers.get_all("contact")
        if values == ["*"]:
            return []
        return [parse_name_addr(v) for v in values]

    @property
    def is_wildcard_contact(self) -> bool:
        return self.headers.get_all("contact") == ["*"]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("record-route")]

    @property
    def routes(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("route")]

    @property
    def max_forwards(self) -> int | None:
        raw = self.headers.get("max-forwards")
        return None if raw is None else parse_max_forwards(raw)

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased, without parameters (``application/sdp``)."""
        raw = self.headers.get("content-type")
        if raw is None:
            return None
        return raw.split(";", 1)[0].strip().lower()

    @property
    def expires(self) -> int | None:
        raw = self.headers.get("expires")
        if raw is None or not raw.isdigit() or not raw.isascii():
            return None
        # RFC 3261 20.19: an over-large value means 2**32-1 (RFC 4475 3.1.2.4 scalar02).
        return int(raw) if len(raw) < 11 else 2**32 - 1

    def _head_lines(self) -> list[str]:
        lines = []
        has_length = False
        length = str(len(self.body))
        for key, name, value in self.headers.entries:
            if key == "content-length":
                if has_length:
                    continue
                has_length = True
                value = length
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {length}")
        return lines

    def _serialise(self, start_line: str) -> bytes:
        lines = self._head_lines()
        lines.insert(0, start_line)
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


def _same_headers(a: MessageBase, b: MessageBase) -> bool:
    # Content-Length is derived from the body when serialising, so it is not compared.
    return [(k, v) for k, _, v in a.headers.entries if k != "content-length"] == [
        (k, v) for k, _, v in b.headers.entries if k != "content-length"
    ]


class Request(MessageBase):
    """A SIP request. ``uri`` may be given as text; it is parsed.

    Two messages are equal when start line, headers (in order, Content-Length aside:
    it follows the body) and body are.
    """

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: Uri | str, headers: Headers | Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        if not method or not TOKEN_CHARS.issuperset(method):
            raise LocalProtocolError(f"bad method {method!r}")
        self.method = method
        self.uri: Uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = bytes(body)
        self.header_cache = {}

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is set from the body."""
        return self._serialise(f"{self.method} {self.uri} {SIP_VERSION}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.uri, self.body) == (other.method, other.uri, other.body) and _same_headers(self, other)

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {str(self.uri)!r}, {self.headers!r}, body={len(self.body)} bytes)"


class Response(MessageBase):
    """A SIP response."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str | None = None, headers: Headers | Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        if not 100 <= status <= 699:
            raise LocalProtocolError(f"bad status {status}")
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason
        if "\r" in self.reason or "\n" in self.reason:
            raise LocalProtocolError(f"reason phrase with CR/LF: {self.reason!r}")
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = bytes(body)
        self.header_cache = {}

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is set from the body."""
        return self._serialise(f"{SIP_VERSION} {self.status} {self.reason}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, self.reason, self.body) == (other.status, other.reason, other.body) and _same_headers(self, other)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.reason!r}, {self.headers!r}, body={len(self.body)} bytes)"


Message = Request | Response

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    """The RFC 3261 21 reason phrase for ``status`` (a generic one for unknown codes)."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return REASON_PHRASES.get(status // 100 * 100, "Unknown")


def make_response(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None) -> Response:
    """A response to ``request`` with Via, From, To, Call-ID and CSeq copied (RFC 3261 8.2.6.2).

    ``to_tag`` is added to To unless To already has a tag (a request inside a dialog).
    A 100 Trying also copies Timestamp (RFC 3261 8.2.6.1). Works on the ``partial``
    message of a ``SipParseError`` too, to answer it with its ``status_hint``.
    """
    headers: list[tuple[str, str, str]] = []
    for key, name, value in request.headers.entries:
        if key == "via" or key == "from" or key == "call-id" or key == "cseq":
            headers.append((key, name, value))
        elif key == "to":
            if to_tag is not None and _to_has_no_tag(request):
                value = f"{value};tag={to_tag}"
            headers.append((key, name, value))
        elif key == "timestamp" and status == 100:
            headers.append((key, name, value))
    # A request missing some of these (RFC 4475 3.3.1 insuf) still gets its 400: we copy
    # what is there.
    return Response(status, reason, Headers.from_entries(headers))


def _to_has_no_tag(request: Request) -> bool:
    try:
        return request.to.tag is None
    except SipParseError:
        return False


def option_tags(message: Request | Response, name: str) -> set[str]:
    """The option tags of a Require/Supported/Unsupported header, lower-cased (RFC 3261 20.32)."""
    return {tag.strip().lower() for tag in message.headers.get_all(name) if tag.strip()}


def method_tokens(message: Request | Response, name: str) -> set[str]:
    """The methods an Allow header lists, upper-cased (RFC 3261 20.5)."""
    return {tok.strip().upper() for tok in message.headers.get_all(name) if tok.strip()}
