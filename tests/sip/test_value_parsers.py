"""The h11 test for the header-value parsers: real values from the RFC 4475 messages,
whole, truncated at every point and with trailing garbage, raise nothing but
SipParseError; whole values parse and round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip.auth import parse_challenge, parse_credentials
from sip.errors import SipParseError
from sip.message import parse_name_addr, parse_via
from sip.parser import parse_message
from sip.uri import parse_uri

GARBAGE = ["\x00", ";", ";;", ",", "<", ">", '"', "\\", " junk", "%", "%4", "@@", "[", ":", "?&="]

AUTH_VALUES = [
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
    'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41", stale=true',
]


@pytest.fixture(scope="module")
def header_values(testdata: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {"uri": [], "name_addr": [], "via": []}
    for path in sorted((testdata / "sip-torture" / "rfc4475").glob("*.dat")):
        try:
            message = parse_message(path.read_bytes())
        except SipParseError:
            continue
        if hasattr(message, "uri"):
            values["uri"].append(str(message.uri))
        values["name_addr"] += [message.headers.get("From"), message.headers.get("To")]
        values["name_addr"] += [v for v in message.headers.get_all("Contact") if v != "*"]
        values["via"] += message.headers.get_all("Via")
    return values


def _never_escapes(parse, value: str) -> None:
    for cut in range(len(value) + 1):
        try:
            parse(value[:cut])
        except SipParseError:
            pass
    for garbage in GARBAGE:
        for candidate in (value + garbage, garbage + value):
            try:
                parse(candidate)
            except SipParseError:
                pass


def test_uris(header_values):
    assert len(header_values["uri"]) > 25
    for value in header_values["uri"]:
        assert str(parse_uri(value)) == value or parse_uri(str(parse_uri(value))) == parse_uri(value)
        _never_escapes(parse_uri, value)


def test_name_addrs(header_values):
    for value in header_values["name_addr"]:
        try:
            parsed = parse_name_addr(value)
        except SipParseError:
            assert "?" in value  # regbadct's Contact: refused, as RFC 4475 3.1.2.16 asks
            continue
        assert parse_name_addr(str(parsed)) == parsed
        _never_escapes(parse_name_addr, value)


def test_vias(header_values):
    assert len(header_values["via"]) > 60
    for value in header_values["via"]:
        parsed = parse_via(value)
        assert parse_via(str(parsed)) == parsed
        _never_escapes(parse_via, value)


@pytest.mark.parametrize("value", AUTH_VALUES)
def test_auth_values(value):
    challenge = parse_challenge(value)
    assert challenge.realm and challenge.nonce
    _never_escapes(parse_challenge, value)
    _never_escapes(parse_credentials, value)
