"""The parsers' fast paths (a regex for the common shape of a value) agree with the
general parsers on every input: same result, or both refuse it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import SipParseError
from sip.header_values import parse_name_addr, parse_name_addr_general, parse_via, parse_via_general
from sip.sdp import sdp_lines
from sip.uri import parse_uri, parse_uri_general

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
    assert _outcome(parse_uri, text) == _outcome(parse_uri_general, text)


def test_uri_fast_path_on_wire_shapes():
    for text in (
        "sip:+15550100@198.51.100.20:5060;transport=udp",
        "sip:203.0.113.10;lr;ftag=as5c7e3f1a",
        "sips:alice@example.com;maddr=[2001:db8::1];x=",
        "sip:host:65536",
        "sip:a;b=c=d",
        "sip:u@h?x=y",
    ):
        assert _outcome(parse_uri, text) == _outcome(parse_uri_general, text)


NAME_ADDR_PIECES = [
    '"', '"CARDIOLOGY FAX"', "Bob", " ", "\t", "  ", "<", ">", "sip:+15557654321@203.0.113.10",
    "sips:alice@example.com:5061", "tel:+1555", ";", "tag=as5c7e3f1a", "user=phone", "=", ";lr",
    "\\", '""', "expires=3600", "q=0.5", "%41", "é", ",", "?", "[2001:db8::1]", ";x=[::1]",
]


@settings(deadline=None, max_examples=400)
@given(st.lists(st.sampled_from(NAME_ADDR_PIECES), max_size=10).map("".join))
def test_name_addr_fast_path_agrees_with_general_parser(text):
    assert _outcome(parse_name_addr, text) == _outcome(parse_name_addr_general, text)


VIA_PIECES = [
    "SIP/2.0/", "SIP/2.0/UDP ", "sip/2.0/tcp ", "SIP/3.0/UDP ", "UDP", "TLS", " ", "\t",
    "203.0.113.10", "host.example.com", ":", "5060", "65536", "123456", "[2001:db8::1]", ";",
    "branch=z9hG4bK-1", "rport", "=", "received=192.0.2.1", "ttl=16", '"', "é", ",", "/",
]


@settings(deadline=None, max_examples=400)
@given(st.lists(st.sampled_from(VIA_PIECES), max_size=8).map("".join))
def test_via_fast_path_agrees_with_general_parser(text):
    assert _outcome(parse_via, text) == _outcome(parse_via_general, text)


def test_fast_paths_on_wire_shapes():
    for text in (
        '"CARDIOLOGY FAX" <sip:+15557654321@203.0.113.10;user=phone>;tag=as5c7e3f1a',
        "<sip:+15550100@198.51.100.20;user=phone>",
        "Bob Smith <sip:bob@example.com>;tag=1;expires=60",
        '"" <sip:a@b>',
        "Bob\t<sip:bob@example.com>",
    ):
        assert _outcome(parse_name_addr, text) == _outcome(parse_name_addr_general, text)
        assert _outcome(parse_name_addr, text)[0] == "ok"
    for text in (
        "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f60718;rport",
        "SIP/2.0/tls host.example.com;branch=z9hG4bK-1;received=192.0.2.1",
        "SIP/2.0/UDP host:65536",
    ):
        assert _outcome(parse_via, text) == _outcome(parse_via_general, text)


# Structured values: each piece drawn from well-formed and slightly-off variants, so most
# examples reach the fast paths and many sit just outside them.
_DISPLAYS = st.sampled_from(["", '"CARDIOLOGY FAX" ', '"" ', '"a\\"b" ', "Bob ", "Bob  Smith ", "Bob\t", "Bob", '"x"'])
_URIS = st.sampled_from([
    "sip:+15557654321@203.0.113.10", "SIP:a@b", "sips:alice@example.com:5061", "sip:h:65536",
    "sip:a%41@b", "sip:[2001:db8::1]", "tel:+1555", " sip:a@b ", "sip:a@b?x=y", "sip:u:pw@h",
])
_URI_PARAMS = st.lists(st.sampled_from([";user=phone", ";LR", ";transport=UDP", ";x=", ";=", ";a=b=c"]), max_size=3)
_HEADER_PARAMS = st.lists(
    st.sampled_from([";tag=As5c7e3f1a", ";Expires=60", ";q=0.5", ";lr", ";x=", ";x=a b", ';x="q"', "; y=1", ";x=[::1]"]),
    max_size=3,
)


@settings(deadline=None, max_examples=300)
@given(_DISPLAYS, _URIS, _URI_PARAMS, _HEADER_PARAMS, st.booleans())
def test_structured_name_addr_agrees(display, uri, uri_params, header_params, bracketed):
    uri_text = uri + "".join(uri_params)
    text = f"{display}<{uri_text}>" if bracketed else uri_text
    text += "".join(header_params)
    assert _outcome(parse_name_addr, text) == _outcome(parse_name_addr_general, text)


@settings(deadline=None, max_examples=300)
@given(
    st.sampled_from(["SIP/2.0/", "sip/2.0/", "SIP / 2.0 / ", "SIP/2.1/"]),
    st.sampled_from(["UDP", "tcp", "Tls", "SCTP", "u d p", ""]),
    st.sampled_from([" ", "  ", "\t"]),
    st.sampled_from(["203.0.113.10", "host.example.com", "[2001:db8::1]", "h_x", ""]),
    st.sampled_from(["", ":5060", ":65536", ": 5060", ":"]),
    st.lists(st.sampled_from([";branch=z9hG4bK-1", ";RPORT", ";rport=5060", ";received=192.0.2.1", ";x=", ";x=[::1]"]), max_size=3),
)
def test_structured_via_agrees(protocol, transport, space, host, port, params):
    text = f"{protocol}{transport}{space}{host}{port}{''.join(params)}"
    assert _outcome(parse_via, text) == _outcome(parse_via_general, text)


_SDP_PIECES = [
    "v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", "m=image 17032 udptl t38",
    "a=T38FaxVersion:0", "a=sendrecv", "a=", "x", "\r\n", "\n", "\r", "\r\r\n", "\n\n",
]


@settings(deadline=None, max_examples=300)
@given(st.lists(st.sampled_from(_SDP_PIECES), max_size=14).map("".join))
def testsdp_lines_split_like_lf_normalisation(text):
    # RFC 4566 5: lines end in CRLF, or LF alone; parse_sdp splits a CRLF-only body at CRLF
    # directly and must cut every body into the same lines as turning CRLF into LF would.
    assert sdp_lines(text) == text.replace("\r\n", "\n").split("\n")
