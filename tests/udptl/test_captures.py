"""Real captures (shared test data, see captures/README.md): decode what is UDPTL, count the rest.

* asterisk-testsuite_ast-2016-003_crash.pcap: a deliberately malicious UDPTL stream
  (a GARBAGE datagram, a truncated one, then packets with 15 secondaries of which 14
  are empty, every third sequence number missing).
* FAX-Call-t38-CA-TDM-SIP-FB-1.pcap: no UDPTL at all, but RTP on the ports the SDP
  offered for T.38: the receiver must count it as malformed and deliver nothing.

tshark, when present, is only a cross-check of which frames are malformed T.38.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from udptl.codec import decode_ifp, decode_udptl, encode_ifp, encode_udptl
from udptl.errors import MalformedPacket
from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver

from tests.support.pcap import read_udp

AST = "asterisk-testsuite_ast-2016-003_crash.pcap"
NDPI = "FAX-Call-t38-CA-TDM-SIP-FB-1.pcap"


def _tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark not found: apt-get install tshark (the cross-check needs it)")
    return path


def _tshark_t38(path, *extra) -> list[list[str]]:
    output = subprocess.run(
        [_tshark(), "-r", str(path), *extra, "-T", "fields", "-E", "occurrence=f",
         "-e", "frame.number", "-e", "t38.seq_number", "-e", "t38.secondary_ifp_packets", "-e", "_ws.malformed"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [line.split("\t") for line in output.splitlines() if line]


@pytest.fixture(scope="module")
def ast_datagrams(testdata):
    datagrams = read_udp(testdata / "captures" / AST)
    assert datagrams and all(datagram.dport == 2 for datagram in datagrams)
    return datagrams


def test_ast_2016_003_every_datagram_decodes_or_is_declared_malformed(ast_datagrams):
    good = 0
    for datagram in ast_datagrams:
        try:
            packet = decode_udptl(datagram.payload)
        except MalformedPacket:
            assert datagram.frame in (1, 2)  # GARBAGE, and a packet with no error-recovery
            continue
        good += 1
        assert encode_udptl(packet) == datagram.payload
        assert len(packet.secondaries) == 15 and packet.secondaries.count(b"") == 14
        for ifp in (packet.primary, *filter(None, packet.secondaries)):
            # The scenario negotiates T38FaxVersion:0.
            assert encode_ifp(decode_ifp(ifp, 0), 0) == ifp
    assert good == len(ast_datagrams) - 2


def test_ast_2016_003_agrees_with_tshark(testdata, ast_datagrams):
    # Only the UDPTL layer is compared: Wireshark dissects the IFPs inside with the 2002
    # module and stumbles over the zero-length secondaries, so it flags many datagrams
    # whose framing is sound.
    rows = _tshark_t38(testdata / "captures" / AST, "-d", "udp.port==2,t38")
    assert len(rows) == len(ast_datagrams)
    for datagram, (frame, seq, secondaries, malformed) in zip(ast_datagrams, rows):
        assert int(frame) == datagram.frame
        try:
            packet = decode_udptl(datagram.payload)
        except MalformedPacket:
            assert malformed and not secondaries
            continue
        assert int(seq) == packet.seq
        if secondaries:  # absent where Wireshark's IFP dissection threw first
            assert int(secondaries) == len(packet.secondaries)


def test_ast_2016_003_through_the_receiver(ast_datagrams):
    receiver = UdptlReceiver(0)
    events = []
    for datagram in ast_datagrams:
        events += receiver.datagram_received(datagram.payload, datagram.time)
    events += receiver.handle_timer(ast_datagrams[-1].time + 60)
    stats = receiver.stats
    assert stats.malformed == 2
    assert stats.received == len(ast_datagrams) - 2
    assert stats.empty_secondaries == 14 * stats.received
    delivered = [event for event in events if isinstance(event, IfpReceived)]
    assert all(event.packet is not None for event in delivered)
    assert [event for event in events if isinstance(event, IfpLost)] == []
    # Every sequence number from the first to the last arrives once, in order; the
    # missing third of them from the one real secondary each packet carries.
    primaries = {decode_udptl(d.payload).seq for d in ast_datagrams[2:]}
    first, last = min(primaries) - 1, max(primaries)
    assert [event.seq for event in delivered] == list(range(first, last + 1))
    assert stats.recovered_redundancy == (last + 1 - first) - len(primaries)
    assert stats.recovered_redundancy > 30
    # Where the real secondary's IFP was also sent as a primary, they agree: the
    # secondary is the IFP just before its carrier.
    by_seq = {event.seq: event.raw for event in delivered}
    for datagram in ast_datagrams[2:]:
        packet = decode_udptl(datagram.payload)
        real = [ifp for ifp in packet.secondaries if ifp]
        if packet.seq - 1 in primaries:
            assert by_seq[packet.seq - 1] == real[0]


def _t38_ports(datagrams) -> set[int]:
    ports = set()
    for datagram in datagrams:
        for port in re.findall(rb"\r\nm=image (\d+) udptl t38", datagram.payload, re.I):
            if int(port):
                ports.add(int(port))
    return ports


def test_rtp_on_the_udptl_port_is_counted_malformed(testdata):
    datagrams = read_udp(testdata / "captures" / NDPI)
    ports = _t38_ports(datagrams)
    assert ports, "the re-INVITE SDPs offer m=image with a port"
    on_t38_ports = [d for d in datagrams if ports & {d.sport, d.dport} and 5060 not in (d.sport, d.dport)]
    assert len(on_t38_ports) > 100
    assert all(d.payload[0] >> 6 == 2 for d in on_t38_ports)  # RTP version 2, every one
    receiver = UdptlReceiver(1)
    for datagram in on_t38_ports:
        with pytest.raises(MalformedPacket):
            decode_udptl(datagram.payload)
        assert receiver.datagram_received(datagram.payload, datagram.time) == []
    assert receiver.stats.malformed == len(on_t38_ports)
    assert receiver.stats.received == 0 and receiver.next_deadline() is None
    # tshark (following the SDP) calls some of these T.38, and malformed: ours agree.
    tshark_frames = {int(row[0]) for row in _tshark_t38(testdata / "captures" / NDPI, "-Y", "t38") if row[3]}
    assert tshark_frames and tshark_frames <= {d.frame for d in on_t38_ports}
