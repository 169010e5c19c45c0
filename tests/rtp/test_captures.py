"""A real G.711 call (shared test data, captures/README.md), cross-checked with tshark.

FAX-Call-t38-CA-TDM-SIP-FB-1.pcap holds two PCMA streams between 10.23.1.52:16756 and
10.35.60.100:15580 (the T.38 re-INVITE was refused with 488).  Interop quirks it shows:

* 10.23.1.52 sends 10 ms packets (80 octets) although every SDP says ``a=ptime:20`` or
  30, then 20 ms ones; it sends comfort noise (PT 13, 1 octet, every 150 ms) and three
  RFC 4733 end-of-event packets (event 194) on PT 100; and after the re-INVITE its
  timestamp starts again from 0 (347200 -> 0) under the same SSRC, sequence numbers
  running on.
* 10.35.60.100's stream was trimmed by nDPI: 159 of 1871 sequence numbers are left,
  with one 34 s hole.

tshark is the oracle for the header fields of every RTP frame it decodes, and for the
RFC 3550 A.8 jitter it reports per stream.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import pytest

from rtp import JitterBuffer, RtpPacket, is_rtcp, parse_rtp, parse_telephone_event

from tests.support.pcap import read_udp

NDPI = "FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"
FAR, NEAR = 16756, 15580  # 10.23.1.52 (the 10 ms sender) and 10.35.60.100
DECODE = ["-d", f"udp.port=={FAR},rtp", "-d", f"udp.port=={NEAR},rtp"]


def _tshark(path, *arguments: str) -> str:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark not found: apt-get install tshark (the cross-check needs it)")
    return subprocess.run([tshark, "-r", str(path), *DECODE, *arguments], capture_output=True, text=True,
                          timeout=60, check=True).stdout


@pytest.fixture(scope="module")
def capture(testdata):
    return testdata / "captures" / NDPI


@pytest.fixture(scope="module")
def streams(capture) -> dict[int, list[tuple[float, int, RtpPacket]]]:
    """(arrival time, frame, packet) per source port, every datagram on the two RTP ports."""
    found: dict[int, list[tuple[float, int, RtpPacket]]] = {FAR: [], NEAR: []}
    for datagram in read_udp(capture):
        if (datagram.sport, datagram.dport) in ((FAR, NEAR), (NEAR, FAR)):
            assert not is_rtcp(datagram.payload)
            found[datagram.sport].append((datagram.time, datagram.frame, parse_rtp(datagram.payload)))
    return found


def test_every_datagram_parses_and_matches_tshark(capture, streams):
    ours = {frame: packet for stream in streams.values() for _, frame, packet in stream}
    assert len(ours) == 1330  # tshark decodes 1303 of them: 27 it takes for T.38 (an earlier SDP)
    rows = [line.split("\t") for line in _tshark(capture, "-Y", "rtp", "-T", "fields", "-e", "frame.number",
                                                   "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.p_type",
                                                   "-e", "rtp.marker", "-e", "rtp.ssrc").splitlines()]
    assert len(rows) == 1303
    for frame, seq, timestamp, payload_type, marker, ssrc in rows:
        packet = ours[int(frame)]
        assert (packet.sequence, packet.timestamp, packet.payload_type, packet.marker, packet.ssrc) == (
            int(seq), int(timestamp), int(payload_type), marker in ("1", "True"), int(ssrc, 16)), frame
    far = streams[FAR]
    assert Counter(packet.payload_type for _, _, packet in far) == {8: 1005, 13: 163, 100: 3}
    assert Counter(len(packet.payload) for _, _, packet in far if packet.payload_type == 8) == {80: 951, 160: 53, 40: 1}


def test_telephone_events_match_tshark(capture, streams):
    rows = [line.split("\t") for line in _tshark(capture, "-Y", "rtpevent", "-T", "fields", "-e", "frame.number",
                                                   "-e", "rtpevent.event_id", "-e", "rtpevent.end_of_event",
                                                   "-e", "rtpevent.volume", "-e", "rtpevent.duration").splitlines()]
    ours = {frame: packet for _, frame, packet in streams[FAR]}
    assert len(rows) == 3
    for frame, event, end, volume, duration in rows:
        parsed = parse_telephone_event(ours[int(frame)].payload)
        assert (parsed.event, parsed.end, parsed.volume, parsed.duration) == (
            int(event), end in ("1", "True"), int(volume), int(duration))


def replay(stream: list[tuple[float, int, RtpPacket]], event_pt: int) -> tuple[JitterBuffer, list[bytes | None], list[float]]:
    start = stream[0][0]
    buffer = JitterBuffer(8, telephone_event_pt=event_pt)
    out: list[bytes | None] = []
    jitter: list[float] = []
    index = 0
    for tick in range(int((stream[-1][0] - start) / 0.02) + 10):
        now = 0.001 + tick * 0.02
        while index < len(stream) and stream[index][0] - start <= now:
            buffer.push(stream[index][2], stream[index][0] - start)
            jitter.append(buffer.stats.jitter)
            index += 1
        out.append(buffer.pop(now))
    return buffer, out, jitter


def _tshark_jitter(capture, port: int) -> tuple[float, float]:
    for line in _tshark(capture, "-q", "-z", "rtp,streams").splitlines():
        fields = line.split()
        if len(fields) > 10 and fields[3] == str(port):
            return float(fields[-3]), float(fields[-2])  # mean and max jitter, ms
    raise AssertionError(f"no stream from port {port} in tshark's rtp,streams")


def test_the_10_ms_sender_with_cn_events_and_a_timestamp_restart_plays_out_whole(capture, streams):
    buffer, out, jitter = replay(streams[FAR], event_pt=100)
    stats = buffer.stats
    audio = b"".join(packet.payload for _, _, packet in streams[FAR] if packet.payload_type == 8)
    # Every audio octet comes out, in order, in 160-octet ticks; CN ticks are A-law silence.
    played = b"".join(frame for frame in out if frame is not None and frame != b"\xd5" * 160)
    assert played.replace(b"\xd5", b"") == audio.replace(b"\xd5", b"")
    assert all(frame is None or len(frame) == 160 for frame in out)
    assert (stats.lost, stats.late, stats.duplicates, stats.resyncs) == (0, 0, 0, 1)  # the restart spliced
    assert (stats.comfort_noise, stats.telephone_events, stats.telephone_event_packets) == (163, 1, 3)
    assert stats.silence > 1000  # CN every 150 ms covers most of the call
    mean, peak = _tshark_jitter(capture, FAR)
    assert sum(jitter) / len(jitter) == pytest.approx(mean, abs=0.02)
    assert max(jitter) == pytest.approx(peak, rel=0.1)


def test_the_trimmed_stream_counts_its_hole_as_loss(capture, streams):
    buffer, out, _ = replay(streams[NEAR], event_pt=102)
    stats = buffer.stats
    numbers = [packet.sequence for _, _, packet in streams[NEAR]]
    assert numbers == sorted(numbers) and (numbers[0], numbers[-1]) == (0, 1870)
    missing = 1871 - len(numbers)  # 1712, as tshark counts
    assert stats.lost == missing + stats.late and stats.late <= 1
    assert stats.telephone_events == 1 and stats.received == 159
    assert sum(frame is not None for frame in out) >= 155
