"""The RTP header codec (RFC 3550 5.1, 5.3.1), RTCP demultiplexing (RFC 5761 4) and RFC
4733 telephone-event payloads: hand-made bytes from the RFC figures, the h11 parser test
(whole, truncated, with trailing octets) and Hypothesis round trips."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtp import (
    LocalProtocolError,
    RtpPacket,
    RtpParseError,
    RtpSender,
    TelephoneEvent,
    build_rtp,
    build_telephone_event,
    is_rtcp,
    parse_rtp,
    parse_telephone_event,
)

PROPERTY = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])

# RFC 3550 5.1, written field by field from the figure:
#   V=2 P=0 X=0 CC=0 -> 10 0 0 0000 = 0x80;  M=1 PT=0 (PCMU) -> 1 0000000 = 0x80
#   sequence 0x1234; timestamp 0xDEADBEEF; SSRC 0x01020304; payload four mu-law zeros.
PLAIN = bytes([0x80, 0x80, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 0x01, 0x02, 0x03, 0x04, 0xFF, 0xFF, 0xFF, 0xFF])

# V=2 P=1 X=1 CC=2 -> 10 1 1 0010 = 0xB2;  M=0 PT=8 (PCMA) -> 0 0001000 = 0x08
# sequence 65535, timestamp 0, SSRC 0xCAFEBABE, CSRCs 0x11111111 and 0x22222222,
# extension (RFC 3550 5.3.1) profile 0xBEDE, length 1 word, data 0xAABBCCDD,
# payload D5 D5, padding 3 octets: 00 00 03 (the last counts itself).
FULL = bytes(
    [0xB2, 0x08, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xCA, 0xFE, 0xBA, 0xBE]
    + [0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]
    + [0xBE, 0xDE, 0x00, 0x01, 0xAA, 0xBB, 0xCC, 0xDD]
    + [0xD5, 0xD5]
    + [0x00, 0x00, 0x03]
)


def test_the_plain_header_by_hand():
    packet = parse_rtp(PLAIN)
    assert packet == RtpPacket(payload_type=0, sequence=0x1234, timestamp=0xDEADBEEF, ssrc=0x01020304,
                               payload=b"\xff\xff\xff\xff", marker=True)
    assert build_rtp(0, 0x1234, 0xDEADBEEF, 0x01020304, b"\xff" * 4, marker=True) == PLAIN


def test_csrcs_extension_and_padding_by_hand():
    packet = parse_rtp(FULL)
    assert packet == RtpPacket(payload_type=8, sequence=65535, timestamp=0, ssrc=0xCAFEBABE, payload=b"\xd5\xd5",
                               csrcs=(0x11111111, 0x22222222), padding=True, extension=True)
    built = build_rtp(8, 65535, 0, 0xCAFEBABE, b"\xd5\xd5", csrcs=(0x11111111, 0x22222222),
                      extension=(0xBEDE, bytes.fromhex("aabbccdd")), padding=3)
    assert built == FULL


def test_an_empty_extension_and_a_payload_that_is_all_padding():
    # X=1 with length 0: only the 4-octet extension header.
    data = bytes([0x90, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0x10, 0x00, 0x00, 0x00, 0x7F])
    assert parse_rtp(data).payload == b"\x7f"
    # P=1 and the whole payload is padding: RFC 3550 5.1 allows it (e.g. for encryption blocks).
    data = bytes([0xA0, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0x00, 0x00, 0x00, 0x04])
    assert parse_rtp(data).payload == b""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter"),
        (PLAIN[:11], "shorter"),
        (bytes([0x40]) + PLAIN[1:], "version 1"),
        (bytes([0x00]) + PLAIN[1:], "version 0"),
        (bytes([0xC0]) + PLAIN[1:], "version 3"),
        (bytes([0x83]) + PLAIN[1:], "CSRC count 3"),  # 12 CSRC octets, only 4 there
        (bytes([0x90]) + PLAIN[1:12] + b"\x00\x00", "extension header"),
        (bytes([0x90]) + PLAIN[1:12] + b"\x00\x00\x00\x02\x00\x00\x00\x00", "extension runs past"),
        (bytes([0xA0]) + PLAIN[1:12] + b"\xff\x00", "padding count 0"),
        (bytes([0xA0]) + PLAIN[1:12] + b"\xff\x03", "padding count 3"),  # only 2 octets after the header
        (bytes([0xA0]) + PLAIN[1:12], "padding count"),  # P set, nothing after the header
    ],
)
def test_malformed_packets_are_refused_with_a_reason(data: bytes, reason: str):
    with pytest.raises(RtpParseError, match=reason) as caught:
        parse_rtp(data)
    assert isinstance(caught.value, ValueError)
    assert reason in caught.value.reason


def test_every_truncation_of_the_full_packet_is_an_error_or_a_shorter_payload():
    # h11's test: fed short, a parser never raises anything else and never invents octets.
    for end in range(len(FULL)):
        try:
            packet = parse_rtp(FULL[:end])
        except RtpParseError:
            continue
        assert len(packet.payload) < 2


def test_trailing_octets_are_payload():
    # RTP has no length field: everything after the header is payload (UDP gives the size).
    assert parse_rtp(PLAIN + b"\x00\x01").payload == b"\xff" * 4 + b"\x00\x01"


def test_rtcp_on_the_rtp_port_is_recognised():
    sender_report = bytes([0x80, 200, 0x00, 0x06]) + bytes(24)  # RFC 3550 6.4.1 SR, no report blocks
    receiver_report = bytes([0x81, 201, 0x00, 0x07]) + bytes(28)
    bye = bytes([0x81, 203, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78])
    feedback = bytes([0x81, 205, 0x00, 0x02]) + bytes(8)  # RFC 4585 RTPFB
    for packet in (sender_report, receiver_report, bye, feedback):
        assert is_rtcp(packet)
    assert not is_rtcp(PLAIN)  # marker + PCMU: 0x80
    assert not is_rtcp(FULL)
    assert not is_rtcp(build_rtp(101, 1, 2, 3, bytes(4), marker=True))  # 0xE5 = 229: RFC 5761's 64-95 gap kept
    assert not is_rtcp(bytes([0x80, 224]) + bytes(10))
    assert not is_rtcp(bytes([0x40, 200]) + bytes(10))  # version 1
    assert not is_rtcp(b"\x80")


def test_building_refuses_fields_out_of_range():
    for kwargs in ({"payload_type": 128}, {"sequence": 65536}, {"timestamp": -1}, {"ssrc": 1 << 32}):
        fields = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0, "payload": b""} | kwargs
        with pytest.raises(LocalProtocolError):
            build_rtp(**fields)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        build_rtp(0, 0, 0, 0, b"", csrcs=tuple(range(16)))
    with pytest.raises(LocalProtocolError):
        build_rtp(0, 0, 0, 0, b"", extension=(0xBEDE, b"\x01"))
    with pytest.raises(LocalProtocolError):
        build_rtp(0, 0, 0, 0, b"", padding=256)


@st.composite
def packets(draw: st.DrawFn) -> tuple[RtpPacket, tuple[int, bytes] | None, int]:
    extension = draw(st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4])))
    padding = draw(st.integers(0, 255))
    packet = RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(st.integers(0, 0xFFFFFFFF)),
        ssrc=draw(st.integers(0, 0xFFFFFFFF)),
        payload=draw(st.binary(max_size=200)),
        marker=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))),
        padding=padding > 0,
        extension=extension is not None,
    )
    return packet, extension, padding


@PROPERTY
@given(packets())
def test_build_then_parse_gives_the_fields_back(case: tuple[RtpPacket, tuple[int, bytes] | None, int]):
    packet, extension, padding = case
    data = build_rtp(packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc, packet.payload,
                     marker=packet.marker, csrcs=packet.csrcs, extension=extension, padding=padding)
    assert parse_rtp(data) == packet
    if not extension and not padding and not packet.csrcs:
        assert len(data) == 12 + len(packet.payload)


@PROPERTY
@given(st.binary(max_size=80))
def test_parse_raises_only_its_declared_error(data: bytes):
    try:
        packet = parse_rtp(data)
    except RtpParseError:
        return
    assert packet.version == 2 and len(packet.payload) <= len(data) - 12


@PROPERTY
@given(st.binary(min_size=12, max_size=80))
def test_any_version_2_packet_without_p_x_cc_parses(tail: bytes):
    data = bytes([0x80]) + tail
    assert parse_rtp(data).payload == tail[11:]


def test_telephone_event_by_hand():
    # RFC 4733 2.3: event 36 (CNG, RFC 4734 3.2), E=1, volume 10, duration 800 (100 ms).
    data = bytes([36, 0x80 | 10, 0x03, 0x20])
    assert parse_telephone_event(data) == TelephoneEvent(event=36, end=True, volume=10, duration=800)
    assert build_telephone_event(TelephoneEvent(36, True, 10, 800)) == data
    assert parse_telephone_event(bytes([5, 0x40 | 63, 0, 0])) == TelephoneEvent(5, False, 63, 0)  # R bit ignored
    with pytest.raises(RtpParseError):
        parse_telephone_event(data[:3])
    with pytest.raises(LocalProtocolError):
        build_telephone_event(TelephoneEvent(1, False, 64, 0))


@PROPERTY
@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_telephone_event_round_trip(event: int, end: bool, volume: int, duration: int):
    value = TelephoneEvent(event, end, volume, duration)
    assert parse_telephone_event(build_telephone_event(value)) == value


def test_the_sender_numbers_packets_and_counts_samples():
    sender = RtpSender(0, 0x01020304, sequence=65534, timestamp=0xFFFFFF00)
    first = parse_rtp(sender.packet(b"\xff" * 160, marker=True))
    second = parse_rtp(sender.packet(b"\xff" * 160))
    third = parse_rtp(sender.packet(b"\xff" * 80))
    assert [(p.sequence, p.timestamp, p.marker) for p in (first, second, third)] == [
        (65534, 0xFFFFFF00, True), (65535, 0xFFFFFFA0, False), (0, 0x40, False)]  # 0xFFFFFFA0 + 160 wraps to 0x40
    assert (sender.sequence, sender.timestamp) == (1, 0x40 + 80)
    assert (sender.packets_sent, sender.octets_sent) == (3, 400)
    sender.skip(160 * 5)
    assert parse_rtp(sender.packet(b"\xff")).timestamp == 0x40 + 80 + 800
    assert first.ssrc == 0x01020304 and first.payload_type == 0


def test_the_random_sender_replays_from_its_rng():
    one, two = RtpSender.random(8, random.Random(7)), RtpSender.random(8, random.Random(7))
    assert (one.ssrc, one.sequence, one.timestamp) == (two.ssrc, two.sequence, two.timestamp)
    assert one.packet(b"\xd5") == two.packet(b"\xd5")
    other = RtpSender.random(8, random.Random(8))
    assert (other.ssrc, other.sequence, other.timestamp) != (one.ssrc, one.sequence, one.timestamp)
    with pytest.raises(LocalProtocolError):
        RtpSender(0, 1, sequence=65536, timestamp=0)
