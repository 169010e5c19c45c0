"""Messages: headers API, framing, responses, limits, round trips and fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.errors import LocalProtocolError, RemoteProtocolError, SipParseError
from sip.headers import COMPACT_FORMS
from sip.message import (
    Headers,
    NameAddr,
    Request,
    Response,
    make_response,
    parse_name_addr,
    parse_via,
    quote_string,
)
from sip.parser import StreamParser, is_keepalive, parse_message
from sip.sdp import parse_sdp
from tests.sip.strategies import name_addrs, requests, responses, vias
from tests.support.pcap import sip_datagrams

INVITE = (
    b"INVITE sip:+15550100@[2001:db8::10]:5060;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK-1;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example.net;branch=z9hG4bK-0;received=2001:db8::99;rport=5062\r\n"
    b'From: "Ward 7, Fax" <sip:+15557654321@example.net>;tag=a1\r\n'
    b"To: <sip:+15550100@example.org>\r\n"
    b"Call-ID: abc@example.net\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Timestamp: 54\r\n"
    b'Contact: "A, B" <sip:a@[2001:db8::1]:5070;transport=tcp>;expires=60, <sip:b@example.net>;q=0.5\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_headers_are_case_insensitive_and_compact_forms_expand():
    wire = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"".join(
        f"{short}: value-{short}\r\n".encode() for short in COMPACT_FORMS if short not in "ftivl"
    ) + b"v: SIP/2.0/UDP h;branch=z9hG4bKx\r\nf: <sip:x@y>;tag=1\r\nt: sip:z@y\r\ni: cid\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
    m = parse_message(wire)
    for short, long in COMPACT_FORMS.items():
        assert m.headers.get(short) == m.headers.get(long) == m.headers.get(long.upper())
        assert long in [name for name, _ in m.headers]
    assert m.headers.get("Supported") == "value-k"
    assert m.headers.get("session-expires") == "value-x"
    assert m.call_id == "cid"


def test_get_all_splits_lists_respecting_quotes_and_angles():
    m = parse_message(INVITE)
    contacts = m.headers.get_all("m")
    assert contacts == ['"A, B" <sip:a@[2001:db8::1]:5070;transport=tcp>;expires=60', "<sip:b@example.net>;q=0.5"]
    assert [c.display for c in m.contacts] == ["A, B", None]
    assert m.contacts[0].expires == 60 and m.contacts[1].q == 0.5
    # Not a list header: the comma stays.
    assert m.headers.get_all("From") == ['"Ward 7, Fax" <sip:+15557654321@example.net>;tag=a1']


def test_ipv6_references():
    m = parse_message(INVITE)
    assert m.uri.host == "[2001:db8::10]" and m.uri.host_address == "2001:db8::10" and m.uri.port == 5060
    assert m.uri.transport == "tcp"
    top, second = m.vias
    assert (top.transport, top.host, top.port, top.has_rport, top.rport) == ("TCP", "[2001:db8::1]", 5070, True, None)
    assert second.received == "2001:db8::99" and second.rport == 5062
    assert m.contacts[0].uri.host_address == "2001:db8::1"
    assert str(top) == "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK-1;rport"


def test_headers_mutation():
    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-A", "1"), ("x-a", "2")])
    headers.prepend("v", "SIP/2.0/UDP b;branch=z9hG4bK2")
    assert [v for n, v in headers if n == "Via"] == ["SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP a;branch=z9hG4bK1"]
    headers.set("X-A", "3")
    assert headers.get_all("x-A") == ["3"]
    assert list(headers)[2] == ("X-A", "3")
    headers.remove("VIA")
    assert "Via" not in headers and "x-a" in headers and len(headers) == 1
    with pytest.raises(LocalProtocolError):
        headers.add("Subject", "evil\r\nInjected: 1")
    with pytest.raises(LocalProtocolError):
        headers.add("Bad Name", "x")


def test_message_cache_follows_header_changes():
    m = parse_message(INVITE)
    assert m.to.tag is None
    m.headers.set("To", str(NameAddr(None, m.to.uri, {"tag": "zz"})))
    assert m.to.tag == "zz"
    m.headers.prepend("Via", "SIP/2.0/UDP c.example;branch=z9hG4bK-new")
    assert m.via.branch == "z9hG4bK-new" and len(m.vias) == 3


def test_to_bytes_sets_content_length_from_body():
    m = parse_message(INVITE)
    m.body = b"v=0\r\n"
    wire = m.to_bytes()
    assert b"\r\nContent-Length: 5\r\n" in wire
    assert wire.count(b"Content-Length") == 1
    assert parse_message(wire).body == b"v=0\r\n"
    request = Request("OPTIONS", "sip:a@b", [("Call-ID", "x")])
    assert request.to_bytes().endswith(b"Call-ID: x\r\nContent-Length: 0\r\n\r\n")


def test_make_response_copies_the_rfc3261_8_2_6_2_headers():
    request = parse_message(INVITE)
    response = make_response(request, 180, to_tag="t9")
    assert (response.status, response.reason) == (180, "Ringing")
    assert [str(v) for v in response.vias] == [str(v) for v in request.vias]
    assert response.from_ == request.from_
    assert response.to.tag == "t9" and response.to.uri == request.to.uri
    assert response.call_id == request.call_id and response.cseq == (1, "INVITE")
    assert "Contact" not in response.headers and "Timestamp" not in response.headers
    trying = make_response(request, 100)
    assert trying.headers.get("Timestamp") == "54" and trying.to.tag is None
    # Inside a dialog the To tag is already there and is kept.
    request.headers.set("To", "<sip:x@y>;tag=old")
    assert make_response(request, 200, to_tag="new").to.tag == "old"
    again = parse_message(make_response(request, 488, "Not Here").to_bytes())
    assert isinstance(again, Response) and (again.status, again.reason) == (488, "Not Here")


def test_stream_parser_frames_several_messages_and_keepalives():
    first = parse_message(INVITE)
    second = make_response(first, 200, to_tag="x")
    second.body = b"hello"
    stream = b"\r\n\r\n" + INVITE + b"\r\n\r\n" + second.to_bytes() + b"\r\n"
    parser = StreamParser()
    assert parser.feed(stream) == [first, second]
    assert (parser.keepalives, parser.pings) == (3, 2)
    assert parser.buffered == 0
    assert parser.feed(b"\r\n") == []  # completes a CRLFCRLF ping across two reads
    assert (parser.keepalives, parser.pings) == (3, 3)


def test_stream_parser_limits():
    parser = StreamParser(max_head_size=200)
    with pytest.raises(SipParseError) as info:
        parser.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 300)
    assert info.value.status_hint == 513
    parser = StreamParser(max_body_size=10)
    big = Request("MESSAGE", "sip:a@b", parse_message(INVITE).headers.copy(), b"x" * 11)
    big.headers.set("CSeq", "1 MESSAGE")
    with pytest.raises(SipParseError) as info:
        parser.feed(big.to_bytes())
    assert info.value.status_hint == 413
    with pytest.raises(SipParseError):
        parser.feed(b"")


def test_datagram_framing_rules():
    assert is_keepalive(b"\r\n\r\n") and is_keepalive(b"\r\n") and not is_keepalive(INVITE)
    assert parse_message(b"\r\n" + INVITE) == parse_message(INVITE)
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE + b"x" * 70000)
    assert info.value.status_hint == 513
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert info.value.status_hint == 505
    assert issubclass(SipParseError, RemoteProtocolError)


def test_name_addr_and_via_reject_bad_values():
    for bad in ['"unterminated <sip:a@b>', "<sip:a@b", "Bell, A <sip:a@b>", "<sip:a@b>;;", "<sip:a@b> junk", "sip:a@b?x=y", ""]:
        with pytest.raises(SipParseError):
            parse_name_addr(bad)
    for bad in ["SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP ho st;x", "SIP/2.0/UDP h;branch="]:
        with pytest.raises(SipParseError):
            parse_via(bad)


# ---------------------------------------------------------------------------------------
# Real traffic


def test_capture_sip_messages(testdata: Path):
    datagrams = sip_datagrams(testdata / "captures" / "FAX-Call-t38-CA-TDM-SIP-FB-1.pcap")
    assert len(datagrams) == 92  # tshark counts 92 SIP frames (captures/README.md)
    statuses = []
    parser = StreamParser()
    for datagram in datagrams:
        message = parse_message(datagram.payload)
        assert message.vias and message.call_id and message.cseq
        assert parse_message(message.to_bytes()) == message
        # The same bytes as a stream, one byte at a time.
        got = []
        for i in range(len(datagram.payload)):
            got += parser.feed(datagram.payload[i : i + 1])
        assert got == [message]
        if isinstance(message, Response):
            statuses.append(message.status)
        if message.content_type == "application/sdp":
            parse_sdp(message.body)
    # The far end refuses the re-INVITE to T.38 (README: "488 Not Acceptable Here").
    assert 488 in statuses


# ---------------------------------------------------------------------------------------
# Properties


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_request_round_trip(request):
    wire = request.to_bytes()
    parsed = parse_message(wire)
    assert parsed == request
    assert parse_message(parsed.to_bytes()) == parsed
    streamed = StreamParser().feed(wire[: len(wire) // 2])
    assert streamed == []


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
def test_response_round_trip(response):
    assert parse_message(response.to_bytes()) == response


@settings(deadline=None, max_examples=200)
@given(name_addrs)
def test_name_addr_round_trip(value):
    assert parse_name_addr(str(value)) == value


@settings(deadline=None, max_examples=200)
@given(vias)
def test_via_round_trip(value):
    assert parse_via(str(value)) == value


def _touch_everything(message):
    for attribute in ("vias", "from_", "to", "cseq", "call_id", "contacts", "routes", "record_routes", "max_forwards", "content_type", "expires"):
        try:
            getattr(message, attribute)
        except SipParseError:
            pass
    for _ in message.headers:
        pass
    if message.body:
        try:
            parse_sdp(message.body)
        except SipParseError:
            pass


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=400))
def test_fuzzed_bytes_raise_only_sip_parse_error(data):
    try:
        _touch_everything(parse_message(data))
    except SipParseError:
        pass
    try:
        for message in StreamParser().feed(data):
            _touch_everything(message)
    except SipParseError:
        pass


@settings(deadline=None, max_examples=300)
@given(st.data())
def test_mutated_messages_raise_only_sip_parse_error(data):
    wire = bytearray(INVITE + b"")
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(wire) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.sampled_from(list(b'\r\n :;,<>"\\@[]%=/\x00\xff') + [65]))
        if action == "flip":
            wire[position] = byte
        elif action == "insert":
            wire.insert(position, byte)
        else:
            del wire[position]
    try:
        _touch_everything(parse_message(bytes(wire)))
    except SipParseError:
        pass


def test_folding_many_continuation_lines():
    folded = "X-Long: start\r\n" + "".join(f" \t part{i}\r\n" for i in range(2000)) + "  \r\n"
    wire = INVITE.replace(b"Timestamp: 54\r\n", folded.encode())
    m = parse_message(wire)
    assert m.headers.get("X-Long") == "start " + " ".join(f"part{i}" for i in range(2000))
    # The same head fed to a stream one byte at a time.
    parser = StreamParser()
    got = []
    for i in range(len(wire)):
        got += parser.feed(wire[i : i + 1])
    assert got == [m]


def test_numeric_parameters_take_ascii_digits_only():
    m = parse_message(
        INVITE.replace(b";rport\r\n", ";rport=\u00b2;ttl=\u0663\r\n".encode(), 1).replace(
            b"Timestamp: 54", "Expires: \u0663".encode()
        )
    )
    assert m.via.has_rport and m.via.rport is None and m.via.ttl is None
    assert m.expires is None
    assert parse_message(INVITE.replace(b"Timestamp: 54", b"Expires: 99999999999999")).expires == 2**32 - 1


def test_huge_numbers_are_parse_errors():
    digits = b"9" * 5000
    for old, new in (
        (b"CSeq: 1 INVITE", b"CSeq: " + digits + b" INVITE"),
        (b"Max-Forwards: 70", b"Max-Forwards: " + digits),
        (b"Content-Length: 0", b"Content-Length: " + digits),
        (b"example.org>", b"example.org:" + digits + b">"),
        (b"[2001:db8::1]:5070", b"[2001:db8::1]:" + digits),
    ):
        with pytest.raises(SipParseError):
            parse_message(INVITE.replace(old, new, 1))


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests() | responses(), min_size=1, max_size=4), st.data())
def test_stream_parser_any_chunking(messages, data):
    wire = b"".join(m.to_bytes() + data.draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parser = StreamParser()
    got = []
    start = 0
    for cut in [*cuts, len(wire)]:
        got += parser.feed(wire[start:cut])
        start = cut
    assert got == messages
    assert parser.buffered == 0


def test_local_misuse_raises_local_protocol_error():
    with pytest.raises(LocalProtocolError):
        Request("BAD METHOD", "sip:a@b")
    with pytest.raises(LocalProtocolError):
        Response(99)
    with pytest.raises(LocalProtocolError):
        Response(200, "OK\r\nX: injected")
    with pytest.raises(LocalProtocolError):
        quote_string("a\nb")
    assert Response(299).reason == "OK" and Response(499).reason == "Bad Request"


def test_lenient_corners():
    # RFC 3261 7.1: the SIP-Version is case-insensitive.
    assert parse_message(INVITE.replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1)).method == "INVITE"
    m = parse_message(INVITE.replace(b"To: <sip:+15550100@example.org>", b"To: <tel:+15550100;phone-context=+1>"))
    assert m.to.uri.user == "+15550100"
    assert Headers([("A", "1")]) == Headers([("a", "1")]) and "Headers([" in repr(Headers())
    for bad in (b"sip:a@[::1", b"sip:a@[xyz]", b"sip:a@[::1]x", b"sip:a:p w@b"):
        with pytest.raises(SipParseError):
            parse_message(INVITE.replace(b"sip:+15550100@[2001:db8::10]:5060;transport=tcp", bad, 1))
    star = parse_message(INVITE.replace(b"Contact: ", b"Contact: *\r\nX-Old: ", 1))
    assert star.is_wildcard_contact and star.contacts == []
