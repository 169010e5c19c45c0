"""Fuzz: RTP (RFC 3550), RFC 4733 events and the jitter buffer fed a stream (issue #14).

``parse_rtp`` and ``parse_telephone_event`` may raise only ``RtpParseError``; the
jitter buffer never raises for what a peer sends and plays 160-octet frames only.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtp.packet import build_rtp
from tests.fuzz import TARGETS, check, frame_stream, fuzz_settings, mutants

RTP = TARGETS["rtp"]


def test_seeds_are_the_captured_stream():
    seeds = RTP.seeds()
    assert len(seeds) >= 50
    for data in seeds:
        check(RTP, data)


@fuzz_settings(1000)
@given(mutants(RTP))
def test_rtp_mutants(data):
    check(RTP, data)


_packets = st.builds(
    lambda pt, seq, ts, payload, marker, csrcs, ext, pad: build_rtp(
        pt, seq, ts, 0x1234, payload, marker=marker, csrcs=tuple(csrcs), extension=ext, padding=pad),
    st.sampled_from([0, 8, 13, 100, 101, 127]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])),
    st.integers(0, 255),
)


@fuzz_settings(200)
@given(st.lists(_packets, max_size=30), st.data())
def test_structured_streams_cut(packets, data):
    raw = frame_stream(packets)
    check(RTP, raw[: data.draw(st.integers(0, len(raw)))])
