"""SIP URIs (RFC 3261 19.1, 25.1) and the quoting helpers the header grammar shares.

``parse_uri`` turns a URI string into a ``SipUri`` (``sip:``/``sips:``) or an
``AbsoluteUri`` (any other scheme, kept opaque: ``tel:``, ``urn:``, RFC 4475's
``nobodyKnowsThisScheme:``). Components are stored *unescaped* (``%40`` becomes ``@``)
and ``str()`` escapes what the grammar requires, so ``parse_uri(str(u)) == u``.
An IPv6 host keeps its brackets (``[2001:db8::1]``), as an IPv6reference does on the wire;
``SipUri.host_address`` gives the bare address for a socket.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .errors import SipParseError

__all__ = [
    "AbsoluteUri",
    "SipUri",
    "Uri",
    "parse_uri",
]

_ALNUM = frozenset(string.ascii_letters + string.digits)
# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = _ALNUM | frozenset("-.!%*_+`'~")
_MARK = "-_.!~*'()"
_UNRESERVED = _ALNUM | frozenset(_MARK)
# RFC 3261 25.1: user-unreserved, password, param-unreserved, hnv-unreserved.
_USER_SAFE = _MARK + "&=+$,;?/"
_PASSWORD_SAFE = _MARK + "&=+$,"
_PARAM_SAFE = _MARK + "[]/:&+$"
_HEADER_SAFE = _MARK + "[]/?:+$"
_USER_CHARS = _UNRESERVED | frozenset("&=+$,;?/%")
_PASSWORD_CHARS = _UNRESERVED | frozenset("&=+$,%")
_PARAM_CHARS = _UNRESERVED | frozenset("[]/:&+$%")
_PARAM_CHARS_EQ = _PARAM_CHARS | frozenset("=")
_HEADER_CHARS = _UNRESERVED | frozenset("[]/?:+$%")
_HOST_CHARS = _ALNUM | frozenset("-.")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")
_SCHEME_FIRST = frozenset(string.ascii_letters)
_SCHEME_CHARS = _ALNUM | frozenset("+-.")
# RFC 3986 3.3 pchar plus the separators an opaque absoluteURI may use.
_OPAQUE_CHARS = _UNRESERVED | frozenset("%;?:@&=+$,/[]#")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unescape(text: str, what: str) -> str:
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        raise SipParseError(f"bad %-escape in URI {what}: {text!r}")
    return unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogateescape")


@dataclass(slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI. ``params`` and ``headers`` keep their order.

    Parameter names are lower-cased (RFC 3261 19.1.4 compares them case-insensitively);
    a parameter with no value (``;lr``) maps to ``None``.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                parts.append(":")
                parts.append(_escape(self.password, _PASSWORD_SAFE))
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(";")
            parts.append(_escape(name, _PARAM_SAFE))
            if value is not None:
                parts.append("=")
                parts.append(_escape(value, _PARAM_SAFE))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(f"{_escape(k, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}" for k, v in self.headers.items())
            )
        return "".join(parts)

    @property
    def host_address(self) -> str:
        """The host without IPv6 brackets, as a socket wants it."""
        host = self.host
        return host[1:-1] if host.startswith("[") else host

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def lr(self) -> bool:
        return "lr" in self.params


@dataclass(slots=True)
class AbsoluteUri:
    """A URI of a scheme other than sip/sips, kept as ``scheme:opaque`` (RFC 3261 19.1.6)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    @property
    def user(self) -> str | None:
        """For ``tel:`` the number (RFC 3966), else None."""
        if self.scheme.lower() == "tel":
            return self.opaque.split(";", 1)[0]
        return None


Uri = SipUri | AbsoluteUri


def parse_host_port(text: str, uri: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in URI {uri!r}")
        host = text[: end + 1]
        if not _IPV6_CHARS.issuperset(host[1:-1]) or ":" not in host:
            raise SipParseError(f"bad IPv6 reference in URI {uri!r}")
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError(f"junk after IPv6 reference in URI {uri!r}")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.partition(":")
        if not host or not _HOST_CHARS.issuperset(host):
            raise SipParseError(f"bad host in URI {uri!r}")
        if not colon:
            return host, None
    if len(port_text) > 5 or not port_text.isdigit() or not port_text.isascii():
        raise SipParseError(f"bad port in URI {uri!r}")
    port = int(port_text)
    if port > 65535:
        raise SipParseError(f"bad port in URI {uri!r}")
    return host, port


def _parse_uri_params(parts: list[str], uri: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    param_chars = _PARAM_CHARS_EQ
    for part in parts:
        name, eq, value = part.partition("=")
        if not name or not param_chars.issuperset(part) or "=" in value:
            raise SipParseError(f"bad parameter {part!r} in URI {uri!r}")
        if "%" in part:
            name = _unescape(name, "parameter")
            value = _unescape(value, "parameter")
        params[name.lower()] = value if eq else None
    return params


def _parse_sip_uri(scheme: str, rest: str, uri: str) -> SipUri:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        if ":" in userinfo:
            user, _, password = userinfo.partition(":")
            if not _PASSWORD_CHARS.issuperset(password):
                raise SipParseError(f"bad password in URI {uri!r}")
            if "%" in password:
                password = _unescape(password, "password")
        else:
            user = userinfo
        if not user or not _USER_CHARS.issuperset(user):
            raise SipParseError(f"bad user part in URI {uri!r}")
        if "%" in user:
            user = _unescape(user, "user")
    headers: dict[str, str] = {}
    if "?" in rest:
        rest, _, header_text = rest.partition("?")
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if (
                not eq
                or not name
                or not _HEADER_CHARS.issuperset(name)
                or not _HEADER_CHARS.issuperset(value)
            ):
                raise SipParseError(f"bad header {item!r} in URI {uri!r}")
            headers[_unescape(name, "header")] = _unescape(value, "header")
    if ";" in rest:
        parts = rest.split(";")
        host, port = parse_host_port(parts[0], uri)
        params = _parse_uri_params(parts[1:], uri)
    else:
        host, port = parse_host_port(rest, uri)
        params = {}
    return SipUri(scheme, user, password, host, port, params, headers)


# The shape of nearly every URI on the wire: lower-case sip/sips, an optional user without
# password or escapes, a host name or IPv4 address, an optional port, then parameters
# without escapes and no headers. Every string it matches is parsed by ``_parse_sip_uri``
# to the same result, so it only skips checks that cannot fail; anything else (IPv6, %,
# passwords, headers, upper case scheme, errors) takes the general path.
# Repeated classes are possessive: what follows each can never be in it.
# Five groups: scheme, user, host, port, parameters (see common_sip_uri). Also used
# inside message.py's name-addr pattern.
COMMON_SIP_URI_RE = (
    r"(sips?):(?:([-A-Za-z0-9_.!~*'()&=+$,;?/]++)@)?([-A-Za-z0-9.]++)(?::([0-9]{1,5}))?"
    r"((?:;[-A-Za-z0-9_.!~*'()\[\]/:&+$]++(?:=[-A-Za-z0-9_.!~*'()\[\]/:&+$]*+)?)*)"
)
_COMMON_SIP_URI = re.compile(COMMON_SIP_URI_RE)


def common_sip_uri(
    scheme: str, user: str | None, host: str, port_text: str | None, param_text: str
) -> SipUri | None:
    """The SipUri for the groups of a COMMON_SIP_URI_RE match; None if the port is too big."""
    port = None if port_text is None else int(port_text)
    if port is not None and port > 65535:
        return None
    params: dict[str, str | None] = {}
    if param_text:
        for part in param_text[1:].split(";"):
            name, eq, value = part.partition("=")
            params[name.lower()] = value if eq else None
    return SipUri(scheme, user, None, host, port, params, {})


def parse_uri(text: str) -> Uri:
    """Parse a URI (no surrounding whitespace or ``<>``). Raises ``SipParseError``."""
    common = _COMMON_SIP_URI.fullmatch(text)
    if common is not None:
        uri = common_sip_uri(*common.groups())
        if uri is not None:
            return uri
    return parse_uri_general(text)


def parse_uri_general(text: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or scheme[0] not in _SCHEME_FIRST or not _SCHEME_CHARS.issuperset(scheme):
        raise SipParseError(f"bad URI {text!r}")
    lower = scheme.lower()
    if lower == "sip" or lower == "sips":
        return _parse_sip_uri(lower, rest, text)
    if not rest or not _OPAQUE_CHARS.issuperset(rest):
        raise SipParseError(f"bad URI {text!r}")
    return AbsoluteUri(scheme, rest)
