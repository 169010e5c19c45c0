"""The RFC 3261 25.1 grammar the header values share: quoted strings, comma lists and
``;name=value`` parameters.

Every header-value parser (``sip.header_values``, ``sip.auth``) builds on these; they
raise ``SipParseError`` for what the grammar does not allow and nothing else.
"""

from __future__ import annotations

from .errors import LocalProtocolError, SipParseError
from .uri import TOKEN_CHARS

__all__ = [
    "format_params",
    "parse_params",
    "quote_string",
    "read_quoted",
    "small_int",
    "split_list",
    "split_outside_quotes",
]


def read_quoted(text: str, start: int) -> tuple[str, int]:
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


def split_outside_quotes(text: str, sep: str, *, angle: bool) -> list[str]:
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
            _, i = read_quoted(text, i)
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
    return [item for item in (part.strip() for part in split_outside_quotes(value, ",", angle=True)) if item]


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
    for part in split_outside_quotes(text[1:], ";", angle=False) if quoted else text[1:].split(";"):
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
                _, end = read_quoted(value, 0)
                if end != len(value):
                    raise SipParseError(f"junk after quoted parameter {part!r} in {context!r}")
            elif spaced and (" " in value or "\t" in value):
                raise SipParseError(f"whitespace inside parameter {part!r} in {context!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def small_int(value: str | None) -> int | None:
    """A decimal parameter value (ASCII digits, at most 10 of them), else None."""
    if value is None or len(value) > 10 or not value.isdigit() or not value.isascii():
        return None
    return int(value)


def format_params(params: dict[str, str | None]) -> str:
    if not params:
        return ""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
