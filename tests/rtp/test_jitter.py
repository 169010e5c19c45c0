"""The jitter buffer in simulated time: packets arrive at chosen instants, the playout
ticks every 20 ms, and every returned frame is checked against what was sent."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtp import (
    LocalProtocolError,
    JitterBuffer,
    RtpPacket,
    TelephoneEvent,
    build_telephone_event,
    parse_rtp,
)
from rtp.sender import RtpSender

TICK = 0.020
SSRC = 0x5EED5EED


def frame(index: int) -> bytes:
    """A 20 ms G.711 payload that names its packet (never the silence value)."""
    return index.to_bytes(2, "big") * 80


def audio_stream(count: int, *, sequence: int = 1000, timestamp: int = 5000, ssrc: int = SSRC,
                 payload_type: int = 0) -> list[RtpPacket]:
    sender = RtpSender(payload_type, ssrc, sequence=sequence, timestamp=timestamp)
    return [parse_rtp(sender.packet(frame(index))) for index in range(count)]


def play(buffer: JitterBuffer, arrivals: Iterable[tuple[float, RtpPacket]], ticks: int,
         phase: float = 0.010) -> list[bytes | None]:
    """Push each packet at its arrival time and pop at ``phase + i * TICK``."""
    pending = sorted(arrivals, key=lambda arrival: arrival[0])
    out: list[bytes | None] = []
    index = 0
    for tick in range(ticks):
        now = phase + tick * TICK
        while index < len(pending) and pending[index][0] <= now:
            buffer.push(pending[index][1], pending[index][0])
            index += 1
        out.append(buffer.pop(now))
    return out


def on_time(packets: list[RtpPacket], offset: float = 0.005) -> list[tuple[float, RtpPacket]]:
    return [(offset + index * TICK, packet) for index, packet in enumerate(packets)]


def test_an_in_order_stream_plays_out_unchanged_after_the_depth():
    buffer = JitterBuffer(0)
    out = play(buffer, on_time(audio_stream(100)), 110)
    # First arrival 5 ms, playout from 65 ms: the ticks at 10, 30 and 50 ms have nothing.
    assert out[:3] == [None, None, None]
    assert out[3:103] == [frame(index) for index in range(100)]
    assert out[103:] == [None] * 7  # the stream ended
    stats = buffer.stats
    assert (stats.received, stats.played, stats.lost, stats.late, stats.duplicates, stats.reordered) == (100, 100, 0, 0, 0, 0)
    assert stats.jitter == pytest.approx(0, abs=1e-6)
    assert stats.dropped_for_drift == stats.inserted_for_drift == 0


def ramp(samples: int, start: int = 0) -> bytes:
    return bytes((start + index) % 251 for index in range(samples))  # never 0xFF


@pytest.mark.parametrize("ptime", [10, 30, 5, 40])
def test_packets_of_another_size_are_reframed_into_ticks(ptime: int):
    # Senders ignore a=ptime (the FAX-Call-t38-CA-TDM capture: 10 ms against ptime:20).
    samples = 8 * ptime
    audio = ramp(samples * 60)
    sender = RtpSender(0, SSRC, sequence=65500, timestamp=0xFFFFFF00)
    packets = [parse_rtp(sender.packet(audio[offset:offset + samples])) for offset in range(0, len(audio), samples)]
    arrivals = [(0.002 + index * ptime / 1000, packet) for index, packet in enumerate(packets)]
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 3 * ptime + 20)
    frames = [payload for payload in out if payload is not None]
    assert b"".join(frames) == audio[: 160 * len(frames)]
    assert len(frames) >= len(audio) // 160 - 1 and out.index(frames[0]) == 3
    assert buffer.stats.lost == buffer.stats.padded == 0


def test_a_lost_short_packet_is_padded_with_silence():
    audio = ramp(80 * 20)
    sender = RtpSender(8, SSRC, sequence=1, timestamp=1)
    packets = [parse_rtp(sender.packet(audio[offset:offset + 80])) for offset in range(0, len(audio), 80)]
    arrivals = [(0.002 + index * 0.010, packet) for index, packet in enumerate(packets) if index != 7]
    buffer = JitterBuffer(8)
    out = play(buffer, arrivals, 16)
    assert out[3:13] == [audio[160 * i:160 * i + 160] if i != 3 else audio[480:560] + b"\xd5" * 80 for i in range(10)]
    assert (buffer.stats.lost, buffer.stats.padded) == (1, 1)


def test_a_deeper_buffer_starts_later():
    out = play(JitterBuffer(8, depth_ms=100), on_time(audio_stream(20, payload_type=8)), 30)
    assert out[:5] == [None] * 5 and out[5] == frame(0) and out[24] == frame(19)


def test_reordering_within_the_depth_is_undone():
    packets = audio_stream(60)
    arrivals = on_time(packets)
    arrivals[10] = (arrivals[10][0] + 0.045, packets[10])  # overtaken by 11 and 12
    arrivals[30], arrivals[31] = (arrivals[31][0], packets[30]), (arrivals[30][0], packets[31])
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 70)
    assert out[3:63] == [frame(index) for index in range(60)]
    assert (buffer.stats.reordered, buffer.stats.lost, buffer.stats.late) == (2, 0, 0)


def test_duplicates_are_dropped_and_counted():
    packets = audio_stream(40)
    arrivals = on_time(packets) + [(0.005 + 5 * TICK + 0.002, packets[5]), (0.5, packets[7]), (0.9, packets[39])]
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 50)
    assert out[3:43] == [frame(index) for index in range(40)]
    assert (buffer.stats.duplicates, buffer.stats.received, buffer.stats.late) == (3, 40, 0)


def test_lost_and_late_packets():
    packets = audio_stream(60)
    arrivals = [arrival for index, arrival in enumerate(on_time(packets)) if index not in (20, 30, 31)]
    arrivals.append((0.005 + 20 * TICK + 0.2, packets[20]))  # 200 ms late: its slot (65 ms in) has passed
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 70)
    expected = [None if index in (20, 30, 31) else frame(index) for index in range(60)]
    assert out[3:63] == expected
    stats = buffer.stats
    # ``lost`` counts slots played without their packet; the one that came after its slot is also ``late``.
    assert (stats.lost, stats.late, stats.received, stats.played) == (3, 1, 58, 57)


def test_sequence_and_timestamp_wrap():
    packets = audio_stream(40, sequence=65520, timestamp=0xFFFFF000)
    assert [packet.sequence for packet in packets[14:18]] == [65534, 65535, 0, 1]
    arrivals = on_time(packets)
    arrivals[15], arrivals[16] = (arrivals[16][0], packets[15]), (arrivals[15][0], packets[16])  # 0 before 65535
    del arrivals[20]  # seq 4 lost
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 50)
    assert out[3:43] == [None if index == 20 else frame(index) for index in range(40)]
    assert (buffer.stats.lost, buffer.stats.reordered, buffer.stats.late) == (1, 1, 0)


def test_the_first_packet_overtaken_across_the_wrap_is_not_a_duplicate():
    # Found by Hypothesis: 65535 arriving after 0 extends to -1, which an empty-slot
    # marker of -1 in the duplicate ring took for a duplicate.
    packets = audio_stream(10, sequence=65535)
    arrivals = on_time(packets)
    arrivals[0] = (0.030, packets[0])
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 15)
    assert out[4:14] == [frame(index) for index in range(10)]  # playout from 0.025 + 0.060 s
    assert (buffer.stats.duplicates, buffer.stats.reordered, buffer.stats.lost) == (0, 1, 0)


def test_a_new_ssrc_is_spliced_on_without_a_gap():
    first = audio_stream(50)
    second = audio_stream(50, sequence=7, timestamp=123456789, ssrc=0xABCDEF01)
    renamed = [RtpPacket(p.payload_type, p.sequence, p.timestamp, p.ssrc, frame(100 + i), p.marker)
               for i, p in enumerate(second)]
    arrivals = on_time(first) + [(0.005 + (50 + index) * TICK, packet) for index, packet in enumerate(renamed)]
    arrivals.append((0.005 + 52 * TICK + 0.001, first[49]))  # a straggler of the old stream
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 110)
    assert out[3:103] == [frame(index) for index in range(50)] + [frame(100 + index) for index in range(50)]
    assert (buffer.stats.ssrc_changes, buffer.stats.lost, buffer.stats.late) == (1, 0, 1)


def test_a_new_ssrc_after_silence_plays_after_the_depth():
    first = audio_stream(20)
    second = [RtpPacket(0, 40000 + i, 99 + 160 * i, 0x1234, frame(100 + i)) for i in range(10)]
    arrivals = on_time(first) + [(2.005 + index * TICK, packet) for index, packet in enumerate(second)]
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 120)
    assert out[3:23] == [frame(index) for index in range(20)]
    start = out.index(frame(100))
    assert start == 103  # arrived at 2.005 s: played from 2.065 s, the tick at 2.07 s
    assert out[start:start + 10] == [frame(100 + index) for index in range(10)]
    assert buffer.stats.ssrc_changes == 1 and buffer.stats.lost == 0


def simulate_drift(ratio: float, seconds: float, seed: int,
                   jitter: float = 0.008) -> tuple[JitterBuffer, list[float], list[bytes], int]:
    """A sender whose clock runs ``ratio`` times ours (1.005: 0.5 % fast), 0-``jitter`` s of jitter."""
    rng = random.Random(seed)
    sender = RtpSender(0, SSRC, sequence=rng.getrandbits(16), timestamp=rng.getrandbits(32))
    count = int(seconds / TICK * ratio)
    arrivals = [(index * TICK / ratio + rng.uniform(0, jitter), parse_rtp(sender.packet(frame(index % 60000))))
                for index in range(count)]
    arrivals.sort(key=lambda arrival: arrival[0])
    buffer = JitterBuffer(0)
    levels: list[float] = []
    played: list[bytes] = []
    index = 0
    for tick in range(int(seconds / TICK)):
        now = 0.010 + tick * TICK
        while index < len(arrivals) and arrivals[index][0] <= now:
            buffer.push(arrivals[index][1], arrivals[index][0])
            index += 1
        payload = buffer.pop(now)
        if payload is not None:
            played.append(payload)
        levels.append(buffer.buffered_ms)
    return buffer, levels, played, index


@pytest.mark.parametrize("ratio", [1.005, 0.995], ids=["sender-0.5%-fast", "sender-0.5%-slow"])
def test_drift_over_ten_minutes_keeps_the_buffer_bounded(ratio: float):
    buffer, levels, played, pushed = simulate_drift(ratio, 600.0, seed=3550)
    stats = buffer.stats
    excess = abs(ratio - 1) * 600 / TICK  # 150 frames too many (fast) or too few (slow)
    steady = levels[500:]  # after the first 10 s
    assert max(steady) <= 140  # depth 60 + 2 ptimes + jitter and the decision window
    assert buffer.packets_held <= 10
    assert stats.lost == stats.late == stats.duplicates == 0
    if ratio > 1:
        assert stats.inserted_for_drift == 0
        assert 0.8 * excess <= stats.dropped_for_drift <= 1.2 * excess
        assert stats.played + stats.dropped_for_drift + buffer.packets_held == pushed
    else:
        assert stats.dropped_for_drift == 0
        assert 0.8 * excess <= stats.inserted_for_drift <= 1.2 * excess
        assert min(steady) >= 20 and stats.played + buffer.packets_held == pushed
    # Order is kept: the frames played are the sent ones in order, minus the dropped.
    numbers = [int.from_bytes(payload[:2], "big") for payload in played]
    assert all(later > earlier for earlier, later in zip(numbers, numbers[1:]))
    # The first half and the second half drop/insert alike: a rate, not a growing backlog.
    assert max(steady[: len(steady) // 2]) - max(steady[len(steady) // 2:]) < 30


@pytest.mark.parametrize("ratio", [1.005, 0.995], ids=["sender-0.5%-fast", "sender-0.5%-slow"])
def test_drift_with_jitter_near_the_depth_loses_nothing(ratio: float):
    buffer, _, _, _ = simulate_drift(ratio, 120.0, seed=5761, jitter=0.045)
    assert buffer.stats.reordered > 100  # the jitter does reorder
    assert buffer.stats.lost == buffer.stats.late == 0
    assert buffer.stats.dropped_for_drift + buffer.stats.inserted_for_drift > 20


def test_repeated_underruns_while_packets_arrive_hold_the_playout():
    # A 20 ms buffer against 30 ms of jitter and a sender 1 % slow: the buffer runs dry
    # again and again; each second underrun within the window holds playout a tick.
    rng = random.Random(3389)
    sender = RtpSender(0, SSRC, sequence=0, timestamp=0)
    arrivals = [(index * TICK / 0.99 + rng.uniform(0, 0.03), parse_rtp(sender.packet(frame(index))))
                for index in range(2970)]
    buffer = JitterBuffer(0, depth_ms=20)
    out = play(buffer, arrivals, 3000)
    stats = buffer.stats
    assert stats.inserted_for_drift >= 25 and stats.resyncs == 0
    assert stats.late < 0.02 * len(arrivals)  # without the holds the playout runs ever further ahead
    numbers = [int.from_bytes(payload[:2], "big") for payload in out if payload is not None]
    assert numbers == sorted(numbers) and len(numbers) == stats.received - stats.late - buffer.packets_held
    assert stats.lost == stats.late  # every gap is a packet that came after its slot; nothing vanished


def test_without_drift_control_a_fast_sender_would_pile_up():
    # The check above can fail: the same run with the mechanism disabled grows ~5 ms/s.
    buffer, levels, _, _ = simulate_drift(1.005, 60.0, seed=1)
    assert buffer.stats.dropped_for_drift > 0
    assert max(levels[500:]) <= 140
    undisciplined = JitterBuffer(0, drift_window_ms=10**9)
    sender = RtpSender(0, SSRC, sequence=0, timestamp=0)
    arrivals = [(index * TICK / 1.005, parse_rtp(sender.packet(frame(index)))) for index in range(3015)]
    play(undisciplined, arrivals, 3000)
    assert undisciplined.buffered_ms > 300


def test_interarrival_jitter_follows_rfc_3550_a8():
    packets = audio_stream(3)
    buffer = JitterBuffer(0)
    # Sent at 0, 20, 40 ms; arriving at 0, 30, 40 ms: |D| = 10 ms, then 10 ms.
    buffer.push(packets[0], 0.000)
    assert buffer.stats.jitter == 0
    buffer.push(packets[1], 0.030)
    assert buffer.stats.jitter == pytest.approx(10 / 16)  # J = 0 + (10 - 0) / 16
    buffer.push(packets[2], 0.040)
    assert buffer.stats.jitter == pytest.approx(10 / 16 + (10 - 10 / 16) / 16)


def test_interarrival_jitter_converges_to_the_alternating_delay():
    packets = audio_stream(400)
    buffer = JitterBuffer(0)
    for index, packet in enumerate(packets):
        buffer.push(packet, index * TICK + (0.010 if index % 2 else 0.0))
        buffer.pop(index * TICK + 0.015)
    assert buffer.stats.jitter == pytest.approx(10.0, rel=1e-3)


@pytest.mark.parametrize(("payload_type", "silence"), [(0, 0xFF), (8, 0xD5)])
def test_comfort_noise_plays_as_silence_until_the_next_packet(payload_type: int, silence: int):
    sender = RtpSender(payload_type, SSRC, sequence=300, timestamp=800)
    packets = [parse_rtp(sender.packet(frame(index))) for index in range(10)]
    cn = RtpPacket(13, sender.sequence, sender.timestamp, SSRC, bytes([40]))  # RFC 3389 3.1: noise level -40 dBov
    sender.sequence += 1
    sender.skip(160 * 10)  # 200 ms of silence suppressed (RFC 3551 4.1)
    resumed = [parse_rtp(sender.packet(frame(100 + index), marker=index == 0)) for index in range(10)]
    arrivals = on_time(packets) + [(0.005 + 10 * TICK, cn)]
    arrivals += [(0.005 + (20 + index) * TICK, packet) for index, packet in enumerate(resumed)]
    buffer = JitterBuffer(payload_type)
    out = play(buffer, arrivals, 40)
    quiet = bytes([silence]) * 160
    assert out[3:33] == [frame(index) for index in range(10)] + [quiet] * 10 + [frame(100 + i) for i in range(10)]
    stats = buffer.stats
    assert (stats.comfort_noise, stats.silence, stats.lost, stats.played) == (1, 10, 0, 20)


def test_a_pause_without_comfort_noise_is_fill_in_not_loss():
    sender = RtpSender(0, SSRC, sequence=1, timestamp=1)
    packets = [parse_rtp(sender.packet(frame(index))) for index in range(10)]
    sender.skip(160 * 50)
    packets += [parse_rtp(sender.packet(frame(10 + index), marker=index == 0)) for index in range(10)]
    arrivals = [(0.005 + (index if index < 10 else index + 50) * TICK, packet) for index, packet in enumerate(packets)]
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 80)
    assert out[3:73] == [frame(index) for index in range(10)] + [None] * 50 + [frame(10 + i) for i in range(10)]
    assert buffer.stats.lost == buffer.stats.late == 0


def test_telephone_events_are_counted_not_played():
    # RFC 4733: events share the stream's sequence numbers; a CNG tone (event 36) is
    # reported while the audio goes on, its end sent three times (2.5.1.4).
    sender = RtpSender(0, SSRC, sequence=65530, timestamp=0)
    arrivals: list[tuple[float, RtpPacket]] = []
    event_start = None
    for index in range(40):
        now = 0.005 + index * TICK
        if 10 <= index < 16:
            event_start = event_start if event_start is not None else sender.timestamp
            report = TelephoneEvent(36, index >= 13, 10, (index - 9) * 160)
            arrivals.append((now, RtpPacket(101, sender.sequence, event_start, SSRC, build_telephone_event(report))))
            sender.sequence = (sender.sequence + 1) & 0xFFFF
        arrivals.append((now + 0.001, parse_rtp(sender.packet(frame(index)))))
    arrivals.append((0.3, RtpPacket(101, sender.sequence, 99, SSRC, b"\x01")))  # malformed: 1 octet
    sender.sequence += 1
    arrivals.append((0.3, RtpPacket(18, sender.sequence, 99, SSRC, bytes(10))))  # G.729, not negotiated
    buffer = JitterBuffer(0, telephone_event_pt=101)
    out = play(buffer, arrivals, 50)
    assert out[3:43] == [frame(index) for index in range(40)]
    stats = buffer.stats
    assert (stats.telephone_events, stats.telephone_event_packets, stats.malformed) == (1, 7, 1)
    assert stats.other_payload_types == 1 and stats.lost == 0 and stats.played == 40
    assert buffer.last_telephone_event == TelephoneEvent(36, True, 10, 6 * 160)


def test_a_stream_that_resumes_far_behind_the_playout_is_spliced_on():
    # The far end stopped for 2 s and went on with the same SSRC, numbers and timestamps
    # as if no time had passed (some gateways on hold): its next packet is more than a
    # second behind the playout point, so it is spliced on, not dropped as late.
    packets = audio_stream(60)
    arrivals = on_time(packets[:20]) + [(2.0 + index * TICK, packet) for index, packet in enumerate(packets[20:])]
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 220)
    assert [payload for payload in out if payload is not None] == [frame(index) for index in range(60)]
    assert out.index(frame(20)) == 103  # arrived at 2.0 s, played from 2.06 s
    assert (buffer.stats.resyncs, buffer.stats.late, buffer.stats.lost) == (1, 0, 0)


def test_packets_that_keep_arriving_late_resynchronise():
    # The same after a 0.3 s stop: too little to tell from a delay spike, so the packets
    # are late; the third in a row with nothing buffered primes the buffer again.
    packets = audio_stream(60)
    arrivals = on_time(packets[:20]) + [(0.7 + index * TICK, packet) for index, packet in enumerate(packets[20:])]
    buffer = JitterBuffer(0)
    out = play(buffer, arrivals, 120)
    assert (buffer.stats.resyncs, buffer.stats.late, buffer.stats.lost) == (1, 3, 3)
    assert [payload for payload in out if payload is not None] == [frame(index) for index in range(60) if not 20 <= index < 23]


def test_a_timestamp_jump_without_time_passing_is_spliced_out():
    # Same SSRC, sequence numbers continuous, but the timestamp leaps 10 s ahead between
    # two packets 20 ms apart: played on as if it had not, no 10 s of fill-in.
    sender = RtpSender(0, SSRC, sequence=9, timestamp=0xFFFF0000)
    packets = [parse_rtp(sender.packet(frame(index))) for index in range(30)]
    sender.skip(80_000)
    packets += [parse_rtp(sender.packet(frame(30 + index))) for index in range(30)]
    buffer = JitterBuffer(0)
    out = play(buffer, on_time(packets), 70)
    assert out[3:63] == [frame(index) for index in range(60)]
    assert buffer.stats.resyncs == 1 and buffer.stats.lost == 0


def test_a_long_run_of_events_behind_a_gap_cannot_block_the_audio():
    # 20 s of RFC 4734 CNG events with no audio, the first event packet lost, then audio.
    packets = [RtpPacket(101, seq, 0, SSRC, build_telephone_event(TelephoneEvent(36, False, 10, min(seq * 160, 0xFFFF))))
               for seq in range(1, 1000) if seq != 2]
    sender = RtpSender(0, SSRC, sequence=1000, timestamp=160 * 1000)
    packets += [parse_rtp(sender.packet(frame(index))) for index in range(20)]
    buffer = JitterBuffer(0, telephone_event_pt=101)
    out = play(buffer, on_time(packets), 1030)
    assert out[1001:1021] == [frame(index) for index in range(20)]  # audio from 19.965 s, played from 20.03 s
    assert buffer.stats.telephone_event_packets == 998 and buffer.stats.played == 20 and buffer.stats.lost == 0


def test_hostile_timestamps_cannot_make_it_grow_or_raise():
    rng = random.Random(4733)
    buffer = JitterBuffer(0, telephone_event_pt=101)
    for tick in range(5000):
        now = tick * TICK
        for _ in range(rng.randrange(4)):
            buffer.push(RtpPacket(rng.choice((0, 0, 13, 101, 8)), rng.getrandbits(16), rng.getrandbits(32),
                                  rng.choice((1, 2)), rng.randbytes(rng.randrange(200))), now)
        payload = buffer.pop(now)
        assert payload is None or len(payload) == 160  # always one whole tick, whatever the packet sizes
        assert buffer.packets_held <= buffer.max_packets


def test_construction_refuses_what_it_cannot_play():
    for kwargs in ({"payload_type": 18}, {"telephone_event_pt": 13}, {"depth_ms": 10}, {"ptime_ms": 0},
                   {"drift_window_ms": 5}):
        with pytest.raises(LocalProtocolError):
            JitterBuffer(**kwargs)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ptime=st.sampled_from([10, 20, 30]),
    delays=st.lists(st.floats(0, 0.035), min_size=40, max_size=40),
    phase=st.floats(0, 0.0199),
    payload_type=st.sampled_from([0, 8]),
)
def test_any_arrival_jitter_within_the_depth_plays_out_exactly(sequence: int, timestamp: int, ptime: int,
                                                               delays: list[float], phase: float, payload_type: int):
    # Jitter up to 35 ms on a 60 ms buffer, any wrap point, any packet size, any tick phase:
    # the samples come out exactly as sent, none lost, none late.
    samples = 8 * ptime
    audio = ramp(samples * 40, start=sequence)
    sender = RtpSender(payload_type, SSRC, sequence=sequence, timestamp=timestamp)
    packets = [parse_rtp(sender.packet(audio[offset:offset + samples])) for offset in range(0, len(audio), samples)]
    arrivals = [(index * ptime / 1000 + delay, packet) for index, (delay, packet) in enumerate(zip(delays, packets))]
    first = min(arrival for arrival, _ in arrivals)
    buffer = JitterBuffer(payload_type)
    out = play(buffer, arrivals, 2 * ptime + 10, phase=phase)
    frames = [payload for payload in out if payload is not None]
    assert b"".join(frames) == audio[: 160 * len(frames)] and len(frames) >= len(audio) // 160 - 1
    assert out.index(frames[0]) == sum(1 for tick in range(len(out)) if phase + tick * TICK < first + 0.060)
    assert buffer.stats.lost == buffer.stats.late == buffer.stats.padded == 0
