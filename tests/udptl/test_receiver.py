"""UdptlReceiver and UdptlSender: ordering, duplicates, recovery, timers, resync, trimming."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udptl.codec import FecInfo, UdptlPacket, decode_udptl, encode_ifp, encode_udptl
from udptl.errors import LocalProtocolError
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator
from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender, far_max_ifp


def make_ifps(count: int, rng: random.Random, version: int = 1, max_data: int = 60) -> list[bytes]:
    """Distinct, valid IFPs of varied length (so FEC parity has ragged ends to undo)."""
    ifps = []
    for index in range(count):
        if index % 7 == 0:
            packet = IfpPacket(T30Indicator(index % 16))
        else:
            body = bytes([index & 0xFF]) + rng.randbytes(rng.randrange(0, max_data))
            last = DataField(FieldType.HDLC_FCS_OK) if index % 5 == 0 else None
            fields = (DataField(FieldType.HDLC_DATA, body),) + ((last,) if last else ())
            packet = IfpPacket(T30Data.V21 if index % 3 else T30Data.V17_14400, fields)
        ifps.append(encode_ifp(packet, version))
    return ifps


def received(events) -> list[tuple[int, bytes]]:
    return [(event.seq, event.raw) for event in events if isinstance(event, IfpReceived)]


def lost(events) -> list[int]:
    return [seq for event in events if isinstance(event, IfpLost) for seq in event.seqs]


def datagrams(ifps, **sender_options) -> tuple[UdptlSender, list[bytes]]:
    options = {"error_correction": "redundancy", "max_datagram": 1400} | sender_options
    sender = UdptlSender(**options)
    return sender, [sender.datagram_for(ifp) for ifp in ifps]


def test_in_order_delivery_across_the_sequence_wrap():
    ifps = make_ifps(40, random.Random(1))
    sender = UdptlSender(error_correction="redundancy", max_datagram=400)
    sender.seq = 65530
    receiver = UdptlReceiver(1)
    events = []
    for now, ifp in enumerate(ifps):
        events += receiver.datagram_received(sender.datagram_for(ifp), now * 0.02)
    assert received(events) == [((65530 + index) & 0xFFFF, ifp) for index, ifp in enumerate(ifps)]
    assert all(isinstance(event.packet, IfpPacket) for event in events)
    assert receiver.stats.delivered == 40 and receiver.stats.lost == 0
    assert receiver.next_deadline() is None


def test_duplicates_and_late_packets_are_dropped_and_counted():
    ifps = make_ifps(6, random.Random(2))
    _, sent = datagrams(ifps, error_correction="none")
    receiver = UdptlReceiver(1, reorder_timeout=0.1)
    events = receiver.datagram_received(sent[0], 0.0)
    events += receiver.datagram_received(sent[0], 0.01)  # duplicate
    events += receiver.datagram_received(sent[2], 0.02)  # 1 missing: held
    assert received(events) == [(0, ifps[0])]
    assert receiver.next_deadline() == pytest.approx(0.12)
    assert receiver.handle_timer(0.11) == []
    events = receiver.handle_timer(receiver.next_deadline())
    assert lost(events) == [1] and received(events) == [(2, ifps[2])]
    events = receiver.datagram_received(sent[1], 0.2)  # arrives after it was given up
    events += receiver.datagram_received(sent[2], 0.2)  # old duplicate
    assert events == []
    assert (receiver.stats.duplicates, receiver.stats.late, receiver.stats.lost) == (2, 1, 1)


def test_reordered_packets_are_delivered_in_order_without_recovery():
    ifps = make_ifps(5, random.Random(3))
    _, sent = datagrams(ifps, error_correction="none")
    receiver = UdptlReceiver(0)
    order = [0, 2, 3, 1, 4]
    events = [event for index in order for event in receiver.datagram_received(sent[index], 0.0)]
    assert received(events) == list(enumerate(ifps))
    assert receiver.stats.recovered_redundancy == 0 and receiver.stats.lost == 0


def test_gap_filled_from_secondaries_newest_first():
    ifps = make_ifps(8, random.Random(4))
    _, sent = datagrams(ifps, redundancy_depth=3)
    receiver = UdptlReceiver(1)
    events = receiver.datagram_received(sent[0], 0.0)
    events += receiver.datagram_received(sent[4], 0.1)  # 1, 2, 3 lost; 4 carries 3, 2, 1
    assert decode_udptl(sent[4]).secondaries == (ifps[3], ifps[2], ifps[1])
    assert received(events) == list(enumerate(ifps[:5]))
    assert receiver.stats.recovered_redundancy == 3
    events = receiver.datagram_received(sent[3], 0.2)  # the real one, too late to matter
    assert events == [] and receiver.stats.late == 1


def test_window_overflow_releases_the_gap_before_the_timeout():
    ifps = make_ifps(20, random.Random(5))
    _, sent = datagrams(ifps, error_correction="none")
    receiver = UdptlReceiver(1, reorder_window=4, resync_threshold=100)
    events = receiver.datagram_received(sent[0], 0.0)
    for index in range(2, 7):
        events += receiver.datagram_received(sent[index], 0.0)
    assert lost(events) == [1]
    assert received(events) == [(index, ifps[index]) for index in (0, 2, 3, 4, 5, 6)]


def test_empty_secondaries_are_counted_dropped_and_closed_up():
    # The AST-2016-003 pattern: 14 empty secondaries, then the previous IFP.
    ifps = make_ifps(3, random.Random(6))
    receiver = UdptlReceiver(1)
    events = receiver.datagram_received(encode_udptl(UdptlPacket(10, ifps[0], ())), 0.0)
    events += receiver.datagram_received(encode_udptl(UdptlPacket(12, ifps[2], (b"",) * 14 + (ifps[1],))), 0.0)
    assert received(events) == [(10, ifps[0]), (11, ifps[1]), (12, ifps[2])]
    assert receiver.stats.empty_secondaries == 14 and receiver.stats.recovered_redundancy == 1


def test_first_packet_secondaries_deliver_what_was_sent_before_it():
    ifps = make_ifps(3, random.Random(7))
    _, sent = datagrams(ifps, redundancy_depth=3)
    receiver = UdptlReceiver(1)
    assert received(receiver.datagram_received(sent[2], 0.0)) == list(enumerate(ifps))


def test_fec_recovers_single_losses_and_trims_parity_padding():
    rng = random.Random(8)
    ifps = make_ifps(60, rng)
    _, sent = datagrams(ifps, error_correction="fec", fec_span=3, fec_entries=3)
    receiver = UdptlReceiver(1)
    events = []
    for index, datagram in enumerate(sent):
        if index % 10 == 5:
            continue
        events += receiver.datagram_received(datagram, index * 0.02)
    assert received(events) == list(enumerate(ifps))
    assert receiver.stats.recovered_fec == 6


def test_malformed_datagrams_and_ifps_are_counted_never_raised():
    receiver = UdptlReceiver(1)
    assert receiver.datagram_received(b"GARBAGE", 0.0) == []
    assert receiver.datagram_received(b"\x00\x00\x01\x00", 0.0) == []  # no error-recovery
    events = receiver.datagram_received(encode_udptl(UdptlPacket(0, b"\xff\xff")), 0.0)
    assert events == [IfpReceived(0, b"\xff\xff", None)]
    assert (receiver.stats.malformed, receiver.stats.malformed_ifp) == (2, 1)


def test_a_stray_packet_is_dropped_but_a_restart_resynchronises():
    ifps = make_ifps(8, random.Random(9))
    receiver = UdptlReceiver(1)
    events = []
    for seq, ifp in zip((100, 101, 102), ifps):
        events += receiver.datagram_received(encode_udptl(UdptlPacket(seq, ifp)), 0.0)
    events += receiver.datagram_received(encode_udptl(UdptlPacket(30000, ifps[3])), 0.0)  # stray
    events += receiver.datagram_received(encode_udptl(UdptlPacket(103, ifps[4])), 0.0)
    assert receiver.stats.stray == 1
    for seq, ifp in zip((40007, 40008, 40009), ifps[5:]):  # the peer restarted its numbering
        events += receiver.datagram_received(encode_udptl(UdptlPacket(seq, ifp)), 0.0)
    assert received(events) == [(100, ifps[0]), (101, ifps[1]), (102, ifps[2]), (103, ifps[4]),
                                (40007, ifps[5]), (40008, ifps[6]), (40009, ifps[7])]
    assert receiver.stats.resyncs == 1 and lost(events) == []


def test_hostile_sequence_numbers_keep_memory_bounded():
    rng = random.Random(10)
    receiver = UdptlReceiver(1)
    for _ in range(5000):
        secondaries = tuple(rng.randbytes(rng.randrange(0, 4)) for _ in range(rng.randrange(0, 20)))
        datagram = encode_udptl(UdptlPacket(rng.randrange(65536), rng.randbytes(rng.randrange(0, 8)), secondaries))
        receiver.datagram_received(datagram, 0.0)
        receiver.datagram_received(rng.randbytes(rng.randrange(0, 30)), 0.0)
    assert len(receiver._held) <= receiver.reorder_window
    assert len(receiver._fec) <= receiver.reorder_window
    receiver.handle_timer(1e9)
    assert receiver._held == {}


# --------------------------------------------------------------------------- sender


@pytest.mark.parametrize(
    "max_datagram, scheme, depth",
    [(400, "redundancy", 3), (176, "redundancy", 3), (72, "redundancy", 3), (30, "redundancy", 2),
     (400, "fec", 3), (72, "fec", 3), (400, "none", 0), (20, "none", 0)],
)
def test_datagrams_never_exceed_max_datagram(max_datagram, scheme, depth):
    rng = random.Random(max_datagram)
    sender = UdptlSender(error_correction=scheme, redundancy_depth=depth, max_datagram=max_datagram, rng=rng)
    assert 0 < sender.max_ifp < max_datagram
    for _ in range(200):
        ifp = rng.randbytes(rng.randrange(1, sender.max_ifp + 1))
        datagram = sender.datagram_for(ifp)
        assert len(datagram) <= max_datagram
        assert decode_udptl(datagram).primary == ifp


def test_redundancy_is_trimmed_first_and_depth_follows_asterisk():
    # 176 octets cannot hold 4 IFPs of 80: Asterisk drops to depth 1 (max IFP 79).
    assert far_max_ifp(176, "redundancy", 3) == (79, 1)
    assert far_max_ifp(400, "redundancy", 3) == (93, 3)
    assert far_max_ifp(100, "redundancy", 3) == (43, 1)
    # A caller that sends IFPs over max_ifp loses redundancy, never the size limit.
    sender = UdptlSender(error_correction="redundancy", redundancy_depth=3, max_datagram=400)
    for size in (150, 150, 150):
        datagram = sender.datagram_for(bytes(size))
        assert len(datagram) <= 400
    assert len(decode_udptl(datagram).secondaries) == 1
    assert sender.stats.secondaries_trimmed >= 1


def test_an_ifp_that_cannot_fit_is_a_local_error():
    sender = UdptlSender(error_correction="redundancy", max_datagram=50)
    with pytest.raises(LocalProtocolError):
        sender.datagram_for(bytes(60))
    with pytest.raises(LocalProtocolError):
        UdptlSender(error_correction="redundancy", max_datagram=3)
    with pytest.raises(LocalProtocolError):
        UdptlSender(error_correction="parity", max_datagram=400)


def test_initial_sequence_number_comes_from_the_rng():
    first = UdptlSender(max_datagram=400, rng=random.Random(42)).datagram_for(b"\x02")
    again = UdptlSender(max_datagram=400, rng=random.Random(42)).datagram_for(b"\x02")
    assert first == again
    assert decode_udptl(first).seq == random.Random(42).randrange(0x10000)


def test_fec_winds_up_without_covering_unsent_packets():
    sender = UdptlSender(error_correction="fec", fec_span=3, fec_entries=3, max_datagram=400)
    infos = [decode_udptl(sender.datagram_for(bytes([index + 1]))).fec for index in range(12)]
    assert [len(info.entries) for info in infos] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert infos[0].npackets == 0 and infos[9].npackets == 3
    assert isinstance(infos[0], FecInfo)


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 2**32), st.integers(0, 9), st.data())
def test_damaged_datagram_in_the_hot_path_is_counted_and_recovered_later(seed, victim, data):
    # The in-order fast path parses the framing itself: it must refuse exactly what
    # decode_udptl refuses, so a cut or padded datagram is malformed, never delivered.
    ifps = make_ifps(12, random.Random(seed))
    _, sent = datagrams(ifps, redundancy_depth=2)
    original = sent[victim]
    if data.draw(st.booleans()):
        damaged = original[: data.draw(st.integers(0, len(original) - 1))]
    else:
        damaged = original + data.draw(st.binary(min_size=1, max_size=4))
    receiver = UdptlReceiver(1)
    events = []
    for index, datagram in enumerate(sent):
        events += receiver.datagram_received(damaged if index == victim else datagram, index * 0.02)
    events += receiver.handle_timer(10.0)
    assert receiver.stats.malformed == 1
    # The damaged one comes back from the next datagram's redundancy (for the very
    # first one, from the first good datagram's secondaries).
    assert received(events) == list(enumerate(ifps))


def test_secondaries_that_contradict_known_primaries_are_not_used():
    # SpanDSP's t38_core.c notes stacks that wrap from 65535 to 1, skipping 0.  Their
    # datagram 1 carries (IFP 65535, 65534, ...) where we would expect (0, 65535, ...):
    # filling slot 0 with a second copy of IFP 65535 must not happen.
    ifps = make_ifps(6, random.Random(11))
    seqs = [65532, 65533, 65534, 65535, 1, 2]
    receiver = UdptlReceiver(1)
    events = []
    for index, (seq, ifp) in enumerate(zip(seqs, ifps)):
        secondaries = tuple(reversed(ifps[max(0, index - 3) : index]))
        events += receiver.datagram_received(encode_udptl(UdptlPacket(seq, ifp, secondaries)), index * 0.02)
    events += receiver.handle_timer(10.0)
    assert received(events) == list(zip(seqs, ifps))
    assert lost(events) == [0]
    assert receiver.stats.inconsistent_redundancy >= 1 and receiver.stats.recovered_redundancy == 0


def _hostile_datagram(draw, base: int) -> bytes:
    seq = (base + draw(st.one_of(st.integers(-5, 70), st.integers(0, 0xFFFF)))) & 0xFFFF
    ifp = st.binary(max_size=6)
    if draw(st.booleans()):
        return encode_udptl(UdptlPacket(seq, draw(ifp), tuple(draw(st.lists(ifp, max_size=5)))))
    span = draw(st.integers(-2, 6))
    return encode_udptl(UdptlPacket(seq, draw(ifp), fec=FecInfo(span, tuple(draw(st.lists(ifp, max_size=4))))))


@settings(deadline=None, max_examples=120)
@given(st.data())
def test_any_datagram_sequence_keeps_the_delivery_contiguous(data):
    # Whatever arrives, the IFPs delivered and reported lost form one contiguous run of
    # sequence numbers, broken only where the receiver says it resynchronised.
    receiver = UdptlReceiver(data.draw(st.sampled_from([0, 1])), reorder_window=16, resync_threshold=200)
    base = data.draw(st.integers(0, 0xFFFF))
    now = 0.0
    previous = None
    resyncs = 0
    for _ in range(data.draw(st.integers(1, 60))):
        now += data.draw(st.sampled_from([0.0, 0.01, 0.3]))
        if data.draw(st.integers(0, 9)) == 0:
            datagram = data.draw(st.binary(max_size=20))
        else:
            datagram = _hostile_datagram(data.draw, base)
            base = (base + 1) & 0xFFFF
        events = receiver.datagram_received(datagram, now) + receiver.handle_timer(now)
        breaks = 0
        for event in events:
            for seq in (event.seqs if isinstance(event, IfpLost) else (event.seq,)):
                if previous is not None and seq != (previous + 1) & 0xFFFF:
                    breaks += 1
                previous = seq
        assert breaks <= receiver.stats.resyncs - resyncs
        resyncs = receiver.stats.resyncs
        assert len(receiver._held) <= receiver.reorder_window
        deadline = receiver.next_deadline()
        assert deadline is None or deadline > now


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 16385, 40000])
def test_sender_size_arithmetic_matches_the_encoding(size):
    # Trimming relies on predicted sizes: a datagram exactly at the limit must be sent
    # whole, one octet less must lose its secondary.
    previous, ifp = bytes(size), b"\x02"
    probe = UdptlSender(error_correction="redundancy", redundancy_depth=1, max_datagram=65507)
    probe.datagram_for(previous)
    exact = len(probe.datagram_for(ifp))
    for limit, kept in ((exact, 1), (exact - 1, 0)):
        sender = UdptlSender(error_correction="redundancy", redundancy_depth=1, max_datagram=limit)
        sender.datagram_for(previous)
        datagram = sender.datagram_for(ifp)
        assert len(datagram) <= limit
        assert len(decode_udptl(datagram).secondaries) == kept
