"""Header values: Via (RFC 3261 20.42), name-addr (From, To, Contact, Route: 20.10),
CSeq (20.16), Call-ID (20.8) and Max-Forwards (20.22).

Fast paths: nearly every Via and name-addr on the wire has one common shape (single
spaces, a host name or IPv4 address, token parameters). A regular expression reads that
shape in one match; what it matches, the general parser (``parse_via_general``,
``parse_name_addr_general``) would parse to the same value, which a property test checks
(``tests/sip/test_fast_paths.py``). Everything else goes to the general parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .grammar import format_params, parse_params, quote_string, read_quoted, small_int, split_list
from .uri import COMMON_SIP_URI_RE, TOKEN_CHARS, Uri, common_sip_uri, parse_host_port, parse_uri

__all__ = [
    "MAX_CSEQ",
    "NameAddr",
    "Via",
    "check_call_id",
    "parse_cseq",
    "parse_max_forwards",
    "parse_name_addr",
    "parse_name_addr_general",
    "parse_via",
    "parse_via_general",
    "parse_vias",
]

MAX_CSEQ = 2**31 - 1  # RFC 3261 8.1.1.5: the sequence number MUST be less than 2**31.


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
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"

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
        return small_int(self.params.get("rport"))

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        return small_int(self.params.get("ttl"))

    @property
    def host_address(self) -> str:
        """The sent-by host without IPv6 brackets."""
        return self.host[1:-1] if self.host.startswith("[") else self.host


def parse_vias(raw: tuple[str, ...]) -> list[Via]:
    if not raw:
        raise SipParseError("missing Via header")
    vias: list[Via] = []
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
# ``parse_via_general`` would parse to the same Via; everything else goes there.
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
    return parse_via_general(value)


def parse_via_general(value: str) -> Via:
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
        host, port = parse_host_port(sent_by, value)
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
        return f"{display}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        return small_int(self.params.get("expires"))

    @property
    def q(self) -> float | None:
        value = self.params.get("q")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


# The shape of nearly every From/To/Contact: an optional display name (quoted without
# escapes, or tokens separated by single spaces), ``<URI>`` without spaces, token
# parameters. The URI itself goes to parse_uri. What it matches, parse_name_addr_general
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
        uri = common_sip_uri(scheme, user, host, port_text, uri_params)
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
    return parse_name_addr_general(value)


def parse_name_addr_general(value: str) -> NameAddr:
    text = value.strip()
    if not text:
        raise SipParseError("empty name-addr")
    display: str | None = None
    if text[0] == '"':
        close = text.find('"', 1)
        if close > 0 and "\\" not in text[1:close]:
            display, end = text[1:close], close + 1
        else:
            display, end = read_quoted(text, 0)
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


def check_call_id(value: str) -> str:
    if not value:
        raise SipParseError("missing Call-ID header")
    return value


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError(f"bad CSeq {value!r}")
    number, method = parts
    if not number.isdigit() or not number.isascii() or len(number) > 12 or int(number) > MAX_CSEQ:
        raise SipParseError(f"bad CSeq number {value!r}")
    if not TOKEN_CHARS.issuperset(method):
        raise SipParseError(f"bad CSeq method {value!r}")
    return int(number), method


def parse_max_forwards(raw: str) -> int:
    # RFC 3261 20.22 and RFC 4475 3.1.2.4 (scalar02): a value above 255 is invalid.
    if not raw.isdigit() or not raw.isascii() or len(raw) > 5 or int(raw) > 255:
        raise SipParseError(f"bad Max-Forwards {raw!r}")
    return int(raw)
