"""SIP messages: parse and serialise (RFC 3261 7, 18.3, 20, 25).

How it works
------------
A message is split once into its header section and body (the first CRLFCRLF). The header
section is decoded (UTF-8, undecodable bytes kept with ``surrogateescape``), cut into lines,
folded continuation lines are joined with one SP (RFC 3261 7.3.1), and each line is split at
its first colon into a name and a raw value. Names are canonicalised (compact forms
expanded, known names spelled as in RFC 3261) and values are kept as text. Only the headers
every transaction needs (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length) are
parsed when the message is parsed, so a malformed one is refused at once with a status
hint; every other header is parsed on demand (``parse_name_addr``, ``parse_via``...).

The parsed forms of those headers are cached on the message and returned by its properties
(``.vias``, ``.from_``, ``.to``, ``.cseq``...). They are views: to change a header, build a
new value and ``msg.headers.set(...)`` it; the cache notices the new value.

Framing: ``parse_message`` takes one datagram (RFC 3261 18.3: a Content-Length shorter
than the body truncates it, a longer one is an error, none means "the rest").
``StreamParser`` frames TCP/TLS byte streams by Content-Length, with size limits, and skips
CRLF keep-alives (RFC 5626 3.5.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator

from .errors import LocalProtocolError, SipParseError
from .uri import (
    COMMON_SIP_URI_RE,
    TOKEN_CHARS,
    AbsoluteUri,
    SipUri,
    Uri,
    _common_sip_uri,
    _parse_host_port,
    parse_uri,
)

__all__ = [
    "Headers",
    "NameAddr",
    "Request",
    "Response",
    "StreamParser",
    "Via",
    "canonical_name",
    "is_keepalive",
    "make_response",
    "parse_message",
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

# RFC 3261 7.3.3 and the compact forms registered since (IANA "Header Fields" registry).
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "f": "From",
    "t": "To",
    "v": "Via",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_KNOWN_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "History-Info",
    "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE",
    "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
    "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Remote-Party-ID",
    "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
    "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
]
_CANONICAL = {name.lower(): name for name in _KNOWN_NAMES}
for _short, _long in COMPACT_FORMS.items():
    _CANONICAL[_short] = _long
# Spelling on the wire -> (lookup key, canonical name); exact spellings hit first.
_HEADER_TABLE = {lower: (canonical.lower(), canonical) for lower, canonical in _CANONICAL.items()}
_HEADER_TABLE.update({canonical: (canonical.lower(), canonical) for canonical in _KNOWN_NAMES})
_HEADER_TABLE.update({short.upper(): entry for short, entry in list(_HEADER_TABLE.items()) if len(short) == 1})

# Headers whose grammar is a comma-separated list (RFC 3261 7.3.1: such headers may be
# combined into one line, or split over several, without changing the meaning).
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Call-Info", "Contact", "Content-Encoding",
        "Content-Language", "Error-Info", "History-Info", "In-Reply-To",
        "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Proxy-Require", "Reason",
        "Record-Route", "Reject-Contact", "Require", "Route", "Security-Client",
        "Security-Server", "Security-Verify", "Service-Route", "Supported", "Unsupported",
        "Via", "Warning",
    )
)

# Headers that may appear at most once (RFC 3261 20, table 2; RFC 4475 3.3.2 multi01, mcl01).
_SINGLE_HEADERS = frozenset(
    ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
)

MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5: the sequence number MUST be less than 2**31.


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, known names cased."""
    return _CANONICAL.get(name.lower(), name)


def _key(name: str) -> str:
    lower = name.lower()
    canonical = _CANONICAL.get(lower)
    return canonical.lower() if canonical is not None else lower


# ---------------------------------------------------------------------------------------
# Quoted strings, lists and parameters (RFC 3261 25.1)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string starting at ``text[start] == '"'``; return (content, end)."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            i += 1
            if i >= n:
                break
            ch = text[i]
            if ch in "\r\n":
                raise SipParseError(f"CR/LF escaped in quoted string {text!r}")
        out.append(ch)
        i += 1
    raise SipParseError(f"unterminated quoted string in {text!r}")


def quote_string(text: str) -> str:
    """Render ``text`` as a quoted-string, escaping what qdtext does not allow."""
    if "\r" in text or "\n" in text:
        raise LocalProtocolError(f"a quoted string cannot carry CR or LF: {text!r}")
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"' or ch == "\\" or (code < 0x20 and ch != "\t") or code == 0x7F:
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def _split_outside_quotes(text: str, sep: str, *, angle: bool) -> list[str]:
    """Split ``text`` at ``sep`` characters that are not inside quotes (or ``<>``)."""
    if '"' not in text and (not angle or "<" not in text):
        return text.split(sep)
    items: list[str] = []
    start = 0
    i = 0
    n = len(text)
    in_angle = False
    while i < n:
        ch = text[i]
        if ch == '"':
            _, i = _read_quoted(text, i)
            continue
        if angle and ch == "<":
            in_angle = True
        elif angle and ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return items


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and ``<>``.

    Empty elements (``a,,b``) are dropped, as RFC 3261 7.3.1's "#rule" allows.
    """
    return [item for item in (part.strip() for part in _split_outside_quotes(value, ",", angle=True)) if item]


def parse_params(text: str, context: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (leading whitespace allowed) into an ordered dict.

    Names are lower-cased; values keep their case and any quotes around them.
    Raises ``SipParseError`` for empty or malformed parameters.
    """
    text = text.strip()
    if not text:
        return {}
    if text[0] != ";":
        raise SipParseError(f"junk before parameters in {context!r}")
    params: dict[str, str | None] = {}
    token = TOKEN_CHARS
    quoted = '"' in text
    spaced = " " in text or "\t" in text
    for part in _split_outside_quotes(text[1:], ";", angle=False) if quoted else text[1:].split(";"):
        name, eq, value = part.partition("=")
        if spaced:
            name = name.strip()
            value = value.strip()
        if not name or not token.issuperset(name):
            raise SipParseError(f"bad parameter {part!r} in {context!r}")
        if eq:
            if not value:
                raise SipParseError(f"empty parameter value {part!r} in {context!r}")
            if quoted and value[0] == '"':
                _, end = _read_quoted(value, 0)
                if end != len(value):
                    raise SipParseError(f"junk after quoted parameter {part!r} in {context!r}")
            elif spaced and (" " in value or "\t" in value):
                raise SipParseError(f"whitespace inside parameter {part!r} in {context!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _small_int(value: str | None) -> int | None:
    """A decimal parameter value (ASCII digits, at most 10 of them), else None."""
    if value is None or len(value) > 10 or not value.isdigit() or not value.isascii():
        return None
    return int(value)


def _format_params(params: dict[str, str | None]) -> str:
    if not params:
        return ""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# ---------------------------------------------------------------------------------------
# Via, name-addr


@dataclass(slots=True)
class Via:
    """One via-parm (RFC 3261 20.42): ``SIP/2.0/<transport> host[:port];params``.

    ``transport`` is upper-cased; ``host`` keeps IPv6 brackets.
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {self.host}{port}{_format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """True when the ``rport`` parameter is present, with or without a value (RFC 3581)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The numeric ``rport`` value a server filled in (RFC 3581 4), else None."""
        return _small_int(self.params.get("rport"))

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        return _small_int(self.params.get("ttl"))

    @property
    def host_address(self) -> str:
        """The sent-by host without IPv6 brackets."""
        return self.host[1:-1] if self.host.startswith("[") else self.host


def _parse_vias(raw: tuple[str, ...]) -> list[Via]:
    if not raw:
        raise SipParseError("missing Via header")
    vias = []
    for value in raw:
        if "," in value:
            vias.extend(parse_via(item) for item in split_list(value))
        else:
            vias.append(parse_via(value))
    if not vias:
        raise SipParseError("empty Via header")
    return vias


# RFC 3261 25.1 token, as a regex character class (TOKEN_CHARS). In these patterns a
# repeated class is possessive (++, *+) where what follows cannot be in the class: the
# same matches, without the regex engine saving states to backtrack to.
_TOKEN_RE = r"[-A-Za-z0-9.!%*_+`'~]"
# ``;name`` / ``;name=value`` header parameters made of tokens only (no quotes, spaces,
# IPv6 or other characters parse_params has to look at).
_TOKEN_PARAMS_RE = rf"((?:;{_TOKEN_RE}++(?:={_TOKEN_RE}++)?)*)"
# The shape of nearly every Via: ``SIP/2.0/<transport> host[:port];params`` with single
# spaces, a host name or IPv4 address and token parameters. What it matches,
# ``_parse_via_general`` would parse to the same Via; everything else goes there.
_COMMON_VIA = re.compile(rf"SIP/2\.0/({_TOKEN_RE}++) ([-A-Za-z0-9.]++)(?::([0-9]{{1,5}}))?{_TOKEN_PARAMS_RE}")


def _token_params(text: str) -> dict[str, str | None]:
    """Parameters already matched by ``_TOKEN_PARAMS_RE`` (so well-formed), as parse_params gives them."""
    params: dict[str, str | None] = {}
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        params[name.lower()] = value if eq else None
    return params


def parse_via(value: str) -> Via:
    """Parse one via-parm (not a comma list: use ``Headers.get_all('Via')``)."""
    common = _COMMON_VIA.fullmatch(value)
    if common is not None:
        transport, host, port_text, param_text = common.groups()
        port = None if port_text is None else int(port_text)
        if port is None or port <= 65535:
            return Via(transport.upper(), host, port, _token_params(param_text) if param_text else {})
    return _parse_via_general(value)


def _parse_via_general(value: str) -> Via:
    parts = value.split("/", 2)
    if len(parts) != 3:
        raise SipParseError(f"bad Via {value!r}")
    protocol, version, rest = parts
    if protocol.strip().upper() != "SIP" or version.strip() != "2.0":
        status = 505 if protocol.strip().upper() == "SIP" else 400
        raise SipParseError(f"unsupported protocol in Via {value!r}", status)
    rest = rest.lstrip()
    fields = rest.split(None, 1)
    if len(fields) != 2:
        raise SipParseError(f"Via without sent-by {value!r}")
    transport, rest = fields
    if not TOKEN_CHARS.issuperset(transport):
        raise SipParseError(f"bad transport in Via {value!r}")
    sent_by, semi, param_text = rest.partition(";")
    pieces = sent_by.split()
    # RFC 3261 25.1: sent-by = host [ COLON port ], where COLON may have LWS around it.
    for left, right in zip(pieces, pieces[1:]):
        if not (left.endswith(":") or right.startswith(":")):
            raise SipParseError(f"whitespace inside sent-by in Via {value!r}")
    sent_by = "".join(pieces)
    if not sent_by:
        raise SipParseError(f"Via without sent-by {value!r}")
    try:
        host, port = _parse_host_port(sent_by, value)
    except SipParseError:
        raise SipParseError(f"bad sent-by in Via {value!r}") from None
    params = parse_params(semi + param_text, value) if semi else {}
    return Via(transport.upper(), host, port, params)


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route value (RFC 3261 20.10): display name, URI, header params.

    ``display`` is unquoted (escapes resolved); ``None`` when absent.
    """

    display: str | None
    uri: Uri
    params: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        display = f"{quote_string(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        return _small_int(self.params.get("expires"))

    @property
    def q(self) -> float | None:
        value = self.params.get("q")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


# The shape of nearly every From/To/Contact: an optional display name (quoted without
# escapes, or tokens separated by single spaces), ``<URI>`` without spaces, token
# parameters. The URI itself goes to parse_uri. What it matches, _parse_name_addr_general
# would parse to the same NameAddr; everything else goes there.
_DISPLAY_NAME_RE = rf'(?:"([^"\\]*+)"[ \t]*|({_TOKEN_RE}++(?: {_TOKEN_RE}++)*)[ \t]*)?'
_COMMON_NAME_ADDR = re.compile(rf"{_DISPLAY_NAME_RE}<([!#-;=?-~]++)>{_TOKEN_PARAMS_RE}")
# The same with the URI's own common shape spelled out, so one match reads both.
_COMMON_SIP_NAME_ADDR = re.compile(rf"{_DISPLAY_NAME_RE}<{COMMON_SIP_URI_RE}>{_TOKEN_PARAMS_RE}")


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``"Display" <uri>;params``, ``Display <uri>;params``, ``<uri>`` or ``uri;params``.

    In the bare addr-spec form, ``;`` ends the URI: what follows are header parameters
    (RFC 3261 20: a URI with ``;``, ``,`` or ``?`` must be enclosed in ``<>``).
    """
    common = _COMMON_SIP_NAME_ADDR.fullmatch(value)
    if common is not None:
        quoted, tokens, scheme, user, host, port_text, uri_params, param_text = common.groups()
        uri = _common_sip_uri(scheme, user, host, port_text, uri_params)
        if uri is not None:
            return NameAddr(
                tokens if quoted is None else quoted, uri, _token_params(param_text) if param_text else {}
            )
    common = _COMMON_NAME_ADDR.fullmatch(value)
    if common is not None:
        quoted, tokens, uri_text, param_text = common.groups()
        return NameAddr(
            tokens if quoted is None else quoted,
            parse_uri(uri_text),
            _token_params(param_text) if param_text else {},
        )
    return _parse_name_addr_general(value)


def _parse_name_addr_general(value: str) -> NameAddr:
    text = value.strip()
    if not text:
        raise SipParseError("empty name-addr")
    display: str | None = None
    if text[0] == '"':
        close = text.find('"', 1)
        if close > 0 and "\\" not in text[1:close]:
            display, end = text[1:close], close + 1
        else:
            display, end = _read_quoted(text, 0)
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError(f"quoted display name without <URI> in {value!r}")
    else:
        lt = text.find("<")
        if lt > 0:
            words = text[:lt].split()
            for word in words:
                if not TOKEN_CHARS.issuperset(word):
                    raise SipParseError(f"display name must be quoted in {value!r}")
            display = " ".join(words) or None
            rest = text[lt:]
        elif lt == 0:
            rest = text
        else:
            uri_text, semi, param_text = text.partition(";")
            uri_text = uri_text.strip()
            if "?" in uri_text or "," in uri_text or " " in uri_text or "\t" in uri_text:
                raise SipParseError(f"a URI with '?' or ',' must be in <> in {value!r}")
            return NameAddr(None, parse_uri(uri_text), parse_params(semi + param_text, value) if semi else {})
    gt = rest.find(">")
    if gt < 0:
        raise SipParseError(f"unterminated <URI> in {value!r}")
    # RFC 4475 3.1.2.15 (badaspec): LWS inside <> is invalid; a liberal parser may accept it.
    uri = parse_uri(rest[1:gt].strip())
    return NameAddr(display, uri, parse_params(rest[gt + 1 :], value))


def _check_call_id(value: str) -> str:
    if not value:
        raise SipParseError("missing Call-ID header")
    return value


def _parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"bad CSeq {value!r}")
    number, method = parts
    if not number.isdigit() or not number.isascii() or len(number) > 12 or int(number) > MAX_CSEQ:
        raise SipParseError(f"bad CSeq number {value!r}")
    if not TOKEN_CHARS.issuperset(method):
        raise SipParseError(f"bad CSeq method {value!r}")
    return int(number), method


# ---------------------------------------------------------------------------------------
# Headers


class Headers:
    """Ordered, case-insensitive SIP headers. Compact names are stored expanded.

    Iterating yields ``(name, value)`` in wire order. ``get_all`` splits comma-joined
    values of list headers (Via, Contact, Route, Supported...).
    """

    __slots__ = ("_items", "_version")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        # Bumped by every change, so a message can tell its cached parses are current
        # without looking the header up again.
        self._version = 0
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _trusted(cls, items: list[tuple[str, str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers._items = items
        headers._version = 0
        return headers

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._items:
            yield name, value

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(k == key for k, _, _ in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (as on the wire, not split), or ``default``."""
        key = _key(name)
        for k, _, value in self._items:
            if k == key:
                return value
        return default

    def _first(self, key: str) -> str | None:
        for k, _, value in self._items:
            if k == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers are also split at commas."""
        key = _key(name)
        values = [value for k, _, value in self._items if k == key]
        if key in LIST_HEADERS:
            return [item for value in values for item in split_list(value)]
        return values

    def add(self, name: str, value: str) -> None:
        """Append a header line (after any others)."""
        self._items.append(self._check(name, value))
        self._version += 1

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line at the top (a new Via goes above the others, RFC 3261 8.1.1.7)."""
        self._items.insert(0, self._check(name, value))
        self._version += 1

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one, where the first was (or at the end)."""
        item = self._check(name, value)
        key = item[0]
        self._version += 1
        for index, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items[index] = item
                self._items[index + 1 :] = [it for it in self._items[index + 1 :] if it[0] != key]
                return
        self._items.append(item)

    def remove(self, name: str) -> None:
        """Remove every ``name`` line (no error if there is none)."""
        key = _key(name)
        self._items = [item for item in self._items if item[0] != key]
        self._version += 1

    @staticmethod
    def _check(name: str, value: str) -> tuple[str, str, str]:
        if not name or not TOKEN_CHARS.issuperset(name):
            raise LocalProtocolError(f"bad header name {name!r}")
        value = str(value)
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"header value with CR/LF: {name}: {value!r}")
        canonical = canonical_name(name)
        return canonical.lower(), canonical, value.strip()


# ---------------------------------------------------------------------------------------
# Messages


class _Message:
    __slots__ = ("headers", "body", "_cache")

    headers: Headers
    body: bytes

    # _cache: key -> (headers, headers._version, raw value(s), parsed value). While the
    # same Headers is unchanged the parse is returned without a look-up; after a change it
    # is kept if the raw value is still the same string.

    def _cached(self, key: str, parse):  # type: ignore[no-untyped-def]
        headers = self.headers
        hit = self._cache.get(key)
        if hit is not None and hit[0] is headers and hit[1] == headers._version:
            return hit[3]
        raw = headers._first(key)
        if raw is None:
            raise SipParseError(f"missing {canonical_name(key)} header")
        if hit is not None and hit[2] is raw:
            parsed = hit[3]
        else:
            parsed = parse(raw)
        self._cache[key] = (headers, headers._version, raw, parsed)
        return parsed

    @property
    def call_id(self) -> str:
        return self._cached("call-id", _check_call_id)

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)`` from CSeq."""
        return self._cached("cseq", _parse_cseq)

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
        hit = self._cache.get("via")
        if hit is not None and hit[0] is headers and hit[1] == headers._version:
            return hit[3]
        raw = tuple([value for key, _, value in headers._items if key == "via"])
        if hit is not None and hit[2] == raw:
            parsed = hit[3]
        else:
            parsed = _parse_vias(raw)
        self._cache["via"] = (headers, headers._version, raw, parsed)
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
        return None if raw is None else _parse_max_forwards(raw)

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
        for key, name, value in self.headers._items:
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


def _same_headers(a: _Message, b: _Message) -> bool:
    # Content-Length is derived from the body when serialising, so it is not compared.
    return [(k, v) for k, _, v in a.headers._items if k != "content-length"] == [
        (k, v) for k, _, v in b.headers._items if k != "content-length"
    ]


class Request(_Message):
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
        self._cache: dict[str, tuple[Headers, int, object, object]] = {}

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is set from the body."""
        return self._serialise(f"{self.method} {self.uri} {SIP_VERSION}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.uri, self.body) == (other.method, other.uri, other.body) and _same_headers(self, other)

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {str(self.uri)!r}, {self.headers!r}, body={len(self.body)} bytes)"


class Response(_Message):
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
        self._cache: dict[str, tuple[Headers, int, object, object]] = {}

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
    for key, name, value in request.headers._items:
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
    return Response(status, reason, Headers._trusted(headers))


def _to_has_no_tag(request: Request) -> bool:
    try:
        return request.to.tag is None
    except SipParseError:
        return False


# ---------------------------------------------------------------------------------------
# Parsing


def _parse_max_forwards(raw: str) -> int:
    # RFC 3261 20.22 and RFC 4475 3.1.2.4 (scalar02): a value above 255 is invalid.
    if not raw.isdigit() or not raw.isascii() or len(raw) > 5 or int(raw) > 255:
        raise SipParseError(f"bad Max-Forwards {raw!r}")
    return int(raw)


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
    spelling: (key, canonical, _VIA if key == "via" else _SINGLE if key in _SINGLE_HEADERS else _ORDINARY)
    for spelling, (key, canonical) in _HEADER_TABLE.items()
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
    headers._items = items
    headers._version = 0
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
    message._cache = {}
    content_length = _validate(message, singles, vias)
    return message, content_length


_NEEDED_HEADERS = frozenset(("to", "from", "call-id", "cseq"))


def _validate(message: Request | Response, singles: dict[str, str], vias: list[str]) -> int | None:
    """Check the headers every transaction relies on; return Content-Length (or None)."""
    duplicate = singles.get("!dup")
    if duplicate is not None:
        raise SipParseError(f"more than one {canonical_name(duplicate)} header", partial=message)
    cache = message._cache
    try:
        if not _NEEDED_HEADERS <= singles.keys():
            for needed in ("to", "from", "call-id", "cseq"):
                if needed not in singles:
                    raise SipParseError(f"missing {canonical_name(needed)} header")
        raw = singles["call-id"]
        if not raw:
            raise SipParseError("empty Call-ID")
        headers = message.headers
        version = headers._version
        cache["call-id"] = (headers, version, raw, raw)
        raw = singles["to"]
        cache["to"] = (headers, version, raw, parse_name_addr(raw))
        raw = singles["from"]
        cache["from"] = (headers, version, raw, parse_name_addr(raw))
        raw = singles["cseq"]
        cseq = _parse_cseq(raw)
        cache["cseq"] = (headers, version, raw, cseq)
        if isinstance(message, Request):
            # RFC 4475 3.1.2.19/20 (mismatch01/02): CSeq method must match the request's.
            if cseq[1] != message.method:
                raise SipParseError(f"CSeq method {cseq[1]!r} does not match {message.method!r}")
            mf = singles.get("max-forwards")
            if mf is not None:
                _parse_max_forwards(mf)
        raw_vias = tuple(vias)
        cache["via"] = (headers, version, raw_vias, _parse_vias(raw_vias))
    except SipParseError as exc:
        exc.partial = message
        raise
    raw = singles.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit() or not raw.isascii() or len(raw) > 10:
        # RFC 4475 3.1.2.3 (ncl): a negative or non-numeric Content-Length.
        raise SipParseError(f"bad Content-Length {raw!r}", partial=message)
    return int(raw)


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

    def feed(self, data: bytes) -> list[Request | Response]:
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
