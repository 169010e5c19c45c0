"""Parsing SIP messages: one datagram (``parse_message``) or a TCP/TLS byte stream
(``StreamParser``) into ``Request``/``Response`` (RFC 3261 7, 18.3).

A message is split once into its header section and body (the first CRLFCRLF). The header
section is decoded (UTF-8, undecodable bytes kept with ``surrogateescape``), cut into lines,
folded continuation lines are joined with one SP (RFC 3261 7.3.1), and each line is split at
its first colon into a name and a raw value. Only the headers every transaction needs (Via,
From, To, Call-ID, CSeq, Max-Forwards, Content-Length) are parsed here, so a malformed one
is refused at once with a status hint; their parses go into the message's cache.

Framing: ``parse_message`` takes one datagram (RFC 3261 18.3: a Content-Length shorter
than the body truncates it, a longer one is an error, none means "the rest").
``StreamParser`` frames TCP/TLS byte streams by Content-Length, with size limits, and skips
CRLF keep-alives (RFC 5626 3.5.1).
"""

from __future__ import annotations

from .errors import SipParseError
from .header_values import parse_cseq, parse_max_forwards, parse_name_addr, parse_vias
from .headers import HEADER_TABLE, SINGLE_HEADERS, Headers, canonical_name
from .message import SIP_VERSION, Request, Response
from .uri import TOKEN_CHARS, SipUri, parse_uri

__all__ = ["StreamParser", "is_keepalive", "parse_message"]

_STATUS_LINE_PREFIX = SIP_VERSION + " "


def _parse_start_line(line: str) -> tuple[str, str, str]:
    # RFC 4475 3.1.2.7/3.1.2.9 (lwsstart, trws): extra SP between or after the elements of
    # the Request-Line is invalid but harmless, so we tolerate it; a URI with LWS inside it
    # (lwsruri) yields four elements and is refused.
    # Only s, S and U+017F upper-case to a leading "S" followed by more than "S"/"T", so
    # a request line (the common case) is not upper-cased just to find that out.
    if line.startswith(_STATUS_LINE_PREFIX) or (line[:1] in "sS\u017f" and line.upper().startswith("SIP/")):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"unsupported SIP version {version!r}", 505)
        if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
            raise SipParseError(f"bad status code {code!r}")
        return "", code, reason.strip()
    parts = line.split()
    if len(parts) != 3:
        raise SipParseError(f"bad request line {line!r}")
    method, uri, version = parts
    if version != SIP_VERSION:
        if version.upper() == SIP_VERSION:
            pass  # RFC 3261 7.1: the version is case-insensitive.
        elif version.upper().startswith("SIP/"):
            raise SipParseError(f"unsupported SIP version {version!r}", 505)
        else:
            raise SipParseError(f"bad request line {line!r}")
    if not TOKEN_CHARS.issuperset(method):
        raise SipParseError(f"bad method {method!r}", 400)
    return method, uri, ""


def _split_header_lines(head: str, singles: dict[str, str], vias: list[str]) -> list[tuple[str, str, str]]:
    """Split the header section into (key, name, value) items.

    Also fills ``singles`` with the headers allowed once (``singles["!dup"]`` names one
    seen twice) and ``vias`` with the raw Via values, so validation needs no second pass.
    """
    if "\r\n " in head or "\r\n\t" in head or head[:1] in (" ", "\t"):
        head = _unfold(head)
    items: list[tuple[str, str, str]] = []
    append = items.append
    table = _SPLIT_TABLE
    for line in head.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without colon: {line[:80]!r}")
        entry = table.get(name)
        if entry is None:
            name = name.rstrip(" \t")
            lower = name.lower()
            entry = table.get(lower)
            if entry is None:
                if not name or not TOKEN_CHARS.issuperset(name):
                    raise SipParseError(f"bad header name {name[:80]!r}")
                # Every spelling of Via and of the single headers is in the table, so
                # an unknown name is neither.
                entry = (lower, name, _ORDINARY)
        key, canonical, kind = entry
        value = value.strip()
        append((key, canonical, value))
        if kind:
            if kind == _VIA:
                vias.append(value)
            else:
                if key in singles:
                    singles["!dup"] = key
                singles[key] = value
    return items


# What _split_header_lines does with a header besides keeping it: Via values and the
# headers allowed once are collected for _validate.
_ORDINARY, _VIA, _SINGLE = 0, 1, 2
# Wire spelling -> (lookup key, canonical name, kind).
_SPLIT_TABLE = {
    spelling: (key, canonical, _VIA if key == "via" else _SINGLE if key in SINGLE_HEADERS else _ORDINARY)
    for spelling, (key, canonical) in HEADER_TABLE.items()
}


def _unfold(head: str) -> str:
    """Join continuation lines to the line they continue, with one SP (RFC 3261 7.3.1)."""
    lines: list[str] = []
    pieces: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            if not pieces:
                raise SipParseError("header section starts with a continuation line")
            more = line.strip()
            if more:
                pieces.append(more)
            continue
        if pieces:
            lines.append(_join_folded(pieces))
        pieces = [line]
    if pieces:
        lines.append(_join_folded(pieces))
    return "\r\n".join(lines)


def _join_folded(pieces: list[str]) -> str:
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0].rstrip(" \t")
    # "Name:" followed by a folded value: no SP is added after the colon's empty value.
    return " ".join([first, *pieces[1:]]) if not first.endswith(":") else first + " ".join(pieces[1:])


def _message_from_head(head_bytes: bytes) -> tuple[Request | Response, int | None]:
    """Parse the start line and headers; return the message (no body yet) and Content-Length."""
    head = head_bytes.decode("utf-8", "surrogateescape")
    start, _, rest = head.partition("\r\n")
    method, second, reason = _parse_start_line(start)
    singles: dict[str, str] = {}
    vias: list[str] = []
    items = _split_header_lines(rest, singles, vias) if rest else []
    headers = Headers.__new__(Headers)
    headers.entries = items
    headers.version = 0
    message: Request | Response
    if method:
        try:
            uri = parse_uri(second)
        except SipParseError as exc:
            raise SipParseError(f"bad Request-URI {second!r}: {exc}") from None
        if isinstance(uri, SipUri) and uri.headers:
            # RFC 3261 19.1.5 and RFC 4475 3.1.2.12 (escruri): headers are not allowed in
            # a Request-URI.
            raise SipParseError(f"Request-URI with headers {second!r}")
        message = Request.__new__(Request)
        message.method = method
        message.uri = uri
    else:
        message = Response.__new__(Response)
        message.status = int(second)
        message.reason = reason
    message.headers = headers
    message.body = b""
    message.header_cache = {}
    content_length = _validate(message, singles, vias)
    return message, content_length


_NEEDED_HEADERS = frozenset(("to", "from", "call-id", "cseq"))


def _validate(message: Request | Response, singles: dict[str, str], vias: list[str]) -> int | None:
    """Check the headers every transaction relies on; return Content-Length (or None)."""
    duplicate = singles.get("!dup")
    if duplicate is not None:
        raise SipParseError(f"more than one {canonical_name(duplicate)} header", partial=message)
    cache = message.header_cache
    try:
        if not _NEEDED_HEADERS <= singles.keys():
            for needed in ("to", "from", "call-id", "cseq"):
                if needed not in singles:
                    raise SipParseError(f"missing {canonical_name(needed)} header")
        raw = singles["call-id"]
        if not raw:
            raise SipParseError("empty Call-ID")
        headers = message.headers
        version = headers.version
        cache["call-id"] = (headers, version, raw, raw)
        raw = singles["to"]
        cache["to"] = (headers, version, raw, parse_name_addr(raw))
        raw = singles["from"]
        cache["from"] = (headers, version, raw, parse_name_addr(raw))
        raw = singles["cseq"]
        cseq = parse_cseq(raw)
        cache["cseq"] = (headers, version, raw, cseq)
        if isinstance(message, Request):
            # RFC 4475 3.1.2.19/20 (mismatch01/02): CSeq method must match the request's.
            if cseq[1] != message.method:
                raise SipParseError(f"CSeq method {cseq[1]!r} does not match {message.method!r}")
            mf = singles.get("max-forwards")
            if mf is not None:
                parse_max_forwards(mf)
        raw_vias = tuple(vias)
        cache["via"] = (headers, version, raw_vias, parse_vias(raw_vias))
    except SipParseError as exc:
        exc.partial = message
        raise
    length_text = singles.get("content-length")
    if length_text is None:
        return None
    if not length_text.isdigit() or not length_text.isascii() or len(length_text) > 10:
        # RFC 4475 3.1.2.3 (ncl): a negative or non-numeric Content-Length.
        raise SipParseError(f"bad Content-Length {length_text!r}", partial=message)
    return int(length_text)


def is_keepalive(data: bytes) -> bool:
    """True for a CRLF keep-alive datagram (RFC 5626 3.5.1): nothing but CR and LF."""
    return not data.strip(b"\r\n")


def parse_message(data: bytes, *, max_size: int = 65535) -> Request | Response:
    """Parse one datagram into a Request or Response.

    RFC 3261 18.3: with Content-Length, bytes past it are discarded (RFC 4475 3.1.1.8
    dblreq) and too few bytes are an error (3.1.2.2 clerr); without it the body is the rest
    of the datagram. Raises ``SipParseError`` (with ``status_hint``) and nothing else.
    """
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}", 513)
    # RFC 3261 7.5: CRLFs before the start line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("no blank line after the header section")
    message, content_length = _message_from_head(data[start:end])
    body_start = end + 4
    if content_length is None:
        message.body = data[body_start:]
    else:
        body = data[body_start : body_start + content_length]
        if len(body) < content_length:
            raise SipParseError(
                f"Content-Length {content_length} but only {len(body)} body bytes", partial=message
            )
        message.body = body
    return message


class StreamParser:
    """Frames messages from a TCP/TLS byte stream by Content-Length (RFC 3261 18.3).

    ``feed(data)`` returns the complete messages so far. CRLF keep-alives between
    messages are skipped (RFC 5626 3.5.1). A framing error raises ``SipParseError``;
    the stream cannot be resynchronised after that, so later calls raise it again.
    """

    def __init__(self, *, max_head_size: int = 65536, max_body_size: int = 1 << 20) -> None:
        self.max_head_size = max_head_size
        self.max_body_size = max_body_size
        self._buffer = bytearray()
        self._pending: tuple[Request | Response, int] | None = None
        self._error: SipParseError | None = None
        self._crlf_run = 0
        self._scanned = 0
        #: Runs of CRLF seen between messages (RFC 5626 3.5.1 keep-alives).
        self.keepalives = 0
        #: How many of those were CRLFCRLF pings; the transport answers each with CRLF.
        self.pings = 0

    def feed(self, data: bytes | bytearray) -> list[Request | Response]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        messages: list[Request | Response] = []
        try:
            while True:
                message = self._next()
                if message is None:
                    return messages
                messages.append(message)
        except SipParseError as exc:
            self._error = exc
            raise

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned message."""
        return len(self._buffer)

    def _next(self) -> Request | Response | None:
        buf = self._buffer
        if self._pending is None:
            skipped = 0
            while buf.startswith(b"\r\n", skipped):
                skipped += 2
            if skipped:
                self._scanned = 0
                # RFC 5626 4.4.1: CRLFCRLF is a ping (answer it with CRLF), a CRLF a pong.
                before = self._crlf_run
                self._crlf_run += skipped // 2
                if before == 0:
                    self.keepalives += 1
                self.pings += self._crlf_run // 2 - before // 2
                del buf[:skipped]
            if buf == b"\r":
                return None
            if buf and buf[0] != 13:
                self._crlf_run = 0
            # Resume the search where the last one stopped: a head fed one byte at a time
            # must not cost a scan of the whole buffer per byte.
            end = buf.find(b"\r\n\r\n", self._scanned)
            if end < 0:
                self._scanned = max(0, len(buf) - 3)
                if len(buf) > self.max_head_size:
                    raise SipParseError(f"header section over {self.max_head_size} bytes", 513)
                return None
            self._scanned = 0
            if end > self.max_head_size:
                raise SipParseError(f"header section over {self.max_head_size} bytes", 513)
            message, content_length = _message_from_head(bytes(buf[:end]))
            del buf[: end + 4]
            if content_length is None:
                # RFC 3261 18.3: Content-Length is mandatory on streams; without it we can
                # only take the message as having no body.
                content_length = 0
            if content_length > self.max_body_size:
                raise SipParseError(f"body of {content_length} bytes is over {self.max_body_size}", 413, partial=message)
            self._pending = (message, content_length)
        message, content_length = self._pending
        if len(buf) < content_length:
            return None
        message.body = bytes(buf[:content_length])
        del buf[:content_length]
        self._pending = None
        return message
