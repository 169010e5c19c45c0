"""The parsers' fast paths (a regex for the common shape of a value) agree with the
general parsers on every input: same result, or both refuse it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import SipParseError
from sip.uri import _parse_uri_general, parse_uri

# Pieces the URI grammar cares about, so generated text often lands near the fast path's
# edges (ports over 65535, empty parameters, stray '@', '%', '?', IPv6, upper case).
URI_PIECES = [
    "sip:", "sips:", "SIP:", "tel:", "alice", "+15550100", "@", ":", "5060", "65535", "65536",
    "123456", ";", "transport=udp", "lr", "=", "user=phone", "%40", "%4", "?", "h=v", "&",
    "[2001:db8::1]", "example.com", "203.0.113.10", "-", ".", " ", "/", "a", "Z", "9", "é",
]


def _outcome(parse, text: str):
    try:
        return ("ok", parse(text))
    except SipParseError:
        return ("error", None)


@settings(deadline=None, max_examples=400)
@given(st.lists(st.sampled_from(URI_PIECES), max_size=10).map("".join))
def test_uri_fast_path_agrees_with_general_parser(text):
    assert _outcome(parse_uri, text) == _outcome(_parse_uri_general, text)


def test_uri_fast_path_on_wire_shapes():
    for text in (
        "sip:+15550100@198.51.100.20:5060;transport=udp",
        "sip:203.0.113.10;lr;ftag=as5c7e3f1a",
        "sips:alice@example.com;maddr=[2001:db8::1];x=",
        "sip:host:65536",
        "sip:a;b=c=d",
        "sip:u@h?x=y",
    ):
        assert _outcome(parse_uri, text) == _outcome(_parse_uri_general, text)
