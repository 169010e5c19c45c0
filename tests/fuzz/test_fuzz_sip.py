"""Fuzz: the SIP parser and the UA's whole receive path of a datagram (issue #14).

``run_sip`` (parse_message, every header accessor, answering a request, auth headers,
StreamParser fed in pieces) lets only ``SipParseError`` out of the calls that document
it; ``run_sip_ua`` (UserAgent.receive, its answers serialised, its timers run out) lets
nothing out.  See tests/fuzz/__init__.py.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import TARGETS, check, fuzz_settings, mutants
from tests.sip.strategies import requests, responses

SIP = TARGETS["sip"]
SIP_UA = TARGETS["sip_ua"]


def test_seeds_are_the_torture_messages_and_the_captures():
    seeds = SIP.seeds()
    assert len(seeds) >= 60  # 50 RFC 4475 messages and the captures' SIP
    for data in seeds:
        check(SIP, data)
        check(SIP_UA, data)


@fuzz_settings(1500)
@given(mutants(SIP))
def test_parser_mutants(data):
    check(SIP, data)


@fuzz_settings(800)
@given(mutants(SIP_UA))
def test_user_agent_mutants(data):
    check(SIP_UA, data)


@fuzz_settings(200)
@given(st.one_of(requests(), responses()), st.data())
def test_structured_messages_cut_and_spliced(message, data):
    raw = message.to_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    tail = data.draw(st.sampled_from([b"", b"\r\n", b" ", b"\x00", b"Via: SIP/2.0/UDP [::1\r\n\r\n", b"%"]))
    check(SIP, raw[:cut] + tail + raw[cut:])
    check(SIP_UA, raw[:cut] + tail)


@fuzz_settings(200)
@given(st.binary(max_size=600))
def test_parser_bytes(data):
    check(SIP, b"INVITE sip:a@b SIP/2.0\r\n" + data)
    check(SIP_UA, data)
