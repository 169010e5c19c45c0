"""The parsed-header cache on a message follows every way its headers can change."""

from __future__ import annotations

import pytest

from sip.errors import SipParseError
from sip.message import Headers
from sip.parser import parse_message

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK-1\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: call-1@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_unrelated_change_keeps_the_parsed_value():
    m = parse_message(INVITE)
    first = m.from_
    m.headers.add("Subject", "fax")
    assert m.from_ is first


@pytest.mark.parametrize(
    "change, read, expected",
    [
        (lambda h: h.set("From", "<sip:carol@example.com>;tag=2"), lambda m: m.from_.tag, "2"),
        (lambda h: h.set("CSeq", "7 INVITE"), lambda m: m.cseq, (7, "INVITE")),
        (lambda h: h.set("Call-ID", "call-2"), lambda m: m.call_id, "call-2"),
        (lambda h: h.prepend("Via", "SIP/2.0/TCP b.example.com;branch=z9hG4bK-2"), lambda m: m.via.branch, "z9hG4bK-2"),
        (lambda h: h.add("Via", "SIP/2.0/TCP b.example.com;branch=z9hG4bK-2"), lambda m: len(m.vias), 2),
        (lambda h: h.remove("Via"), lambda m: m.vias, SipParseError),
        (lambda h: h.remove("To"), lambda m: m.to, SipParseError),
        (lambda h: h.set("Call-ID", ""), lambda m: m.call_id, SipParseError),
    ],
)
def test_changes_are_seen(change, read, expected):
    m = parse_message(INVITE)
    read(m)  # fill the cache first
    change(m.headers)
    if expected is SipParseError:
        with pytest.raises(SipParseError):
            read(m)
    else:
        assert read(m) == expected


def test_replaced_headers_object_is_seen():
    m = parse_message(INVITE)
    assert m.call_id == "call-1@example.com"
    headers = m.headers.copy()
    headers.set("Call-ID", "call-3")
    headers.set("To", "<sip:dave@example.com>;tag=9")
    m.headers = headers
    assert m.call_id == "call-3" and m.to.tag == "9"
    m.headers = Headers([("Call-ID", "x")])
    with pytest.raises(SipParseError):
        m.from_  # noqa: B018 (the property raises)
