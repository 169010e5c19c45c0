"""Fuzz: SDP parsing and the answers the gateway builds from an offer (issue #14).

Only ``SipParseError`` may come out of ``parse_sdp`` and the answers (a 488 is a
``RemoteProtocolError``); see tests/fuzz/__init__.py for what the target does.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from sip.errors import SipParseError
from sip.sdp import parse_sdp
from tests.fuzz import TARGETS, check, fuzz_settings, mutants

SDP = TARGETS["sdp"]

# Found by bench/fuzz.py: a NUL inside the m= line of an offered stream we reject was
# echoed into the answer, whose to_bytes() then raised LocalProtocolError.
NUL_IN_REJECTED_M_LINE = (b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.198\r\ns=-\r\nc=IN IP4 192.0.2.198\r\n"
                          b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP\xff\x001\r\na=rtpmap:31 LPC\r\n")


def test_seeds_are_real_bodies():
    bodies = SDP.seeds()
    assert len(bodies) >= 10
    for body in bodies:
        check(SDP, body)


def test_nul_in_an_offer_is_a_parse_error():
    try:
        parse_sdp(NUL_IN_REJECTED_M_LINE)
    except SipParseError:
        return
    raise AssertionError("an SDP body with a NUL was accepted")


@fuzz_settings(1000)
@given(mutants(SDP))
@example(NUL_IN_REJECTED_M_LINE)
def test_sdp_mutants(data):
    check(SDP, data)


_LINE = st.sampled_from(["v", "o", "s", "c", "t", "m", "a", "b", "i", "k", "z", "x"]).flatmap(
    lambda kind: st.lists(st.sampled_from([t.decode("latin-1") for t in SDP.tokens] + ["0", "8", "IN", "IP4", "t38"]),
                          max_size=6).map(lambda parts: f"{kind}=" + " ".join(parts))
)


@fuzz_settings(300)
@given(st.lists(_LINE, max_size=14), st.sampled_from(["\r\n", "\n"]))
def test_sdp_structured(lines, newline):
    check(SDP, ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n" + newline.join(lines)).encode("utf-8", "surrogateescape"))


@fuzz_settings(200)
@given(st.binary(max_size=512))
def test_sdp_bytes(data):
    check(SDP, data)
