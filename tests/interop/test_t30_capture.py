"""Real third-party bytes: the AST-2016-003 capture (a SpanDSP V.21/V.17 ECM exchange with
every third datagram dropped, empty secondaries and a garbage first packet) through our
UDPTL receiver into the engine.  Redundancy makes the stream whole again, and the engine
must receive the one page in it exactly as a receiving fax would."""

from __future__ import annotations

import struct

from t38gw.t30 import CallEnded, PageReceived, PhaseBCompleted, ReceiverConfig, T30Receiver, T30Result
from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver

CAPTURE = "captures/asterisk-testsuite_ast-2016-003_crash.pcap"
LINKTYPE_LINUX_SLL = 113


def udp_payloads(data: bytes, dst_port: int):
    """(time, payload) of UDP datagrams to ``dst_port`` in a classic pcap of Linux cooked frames."""
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == LINKTYPE_LINUX_SLL, linktype
    offset = 24
    first = None
    while offset + 16 <= len(data):
        seconds, micros, captured, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + captured]
        offset += 16 + captured
        when = seconds + micros / 1e6
        first = when if first is None else first
        ip = frame[16:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4:]
        if struct.unpack(">H", udp[2:4])[0] == dst_port:
            yield when - first, udp[8:]


def receive_capture(datagrams, decoder_factory=None):
    receiver = UdptlReceiver(0)
    engine = T30Receiver(ReceiverConfig(local_ident="1"), decoder_factory=decoder_factory)
    events = engine.start(0.0)
    delivered = lost = 0
    for when, payload in datagrams:
        for item in receiver.datagram_received(payload, when):
            if isinstance(item, IfpReceived) and item.packet is not None:
                delivered += 1
                events += engine.ifp_received(item.packet, when)
            elif isinstance(item, IfpLost) or item.packet is None:
                lost += 1
                events += engine.ifps_lost(1, when)
        engine.ifps_to_send(when)
    return engine, receiver, events, delivered, lost


def test_hostile_capture_through_udptl_into_the_engine(testdata):
    datagrams = list(udp_payloads((testdata / CAPTURE).read_bytes(), dst_port=2))
    assert len(datagrams) >= 120
    engine, receiver, events, delivered, lost = receive_capture(datagrams)
    assert delivered > 150 and receiver.stats.recovered_redundancy > 0
    (phase_b,) = [e for e in events if isinstance(e, PhaseBCompleted)]
    assert (phase_b.modem, phase_b.bit_rate, phase_b.ecm, phase_b.compression) == ("V.17", 14400, True, "mmr")
    (page,) = [e for e in events if isinstance(e, PageReceived)]
    assert (page.width, page.height, page.bad_rows) == (1728, 2292, 0)
    assert any(page.bitmap)  # not a blank page
    assert engine.counters["ppr_sent"] == 0 and engine.counters["bad_frames"] == 0
    assert [e for e in events if isinstance(e, CallEnded)] == [CallEnded(T30Result.OK, 1, "DCN after EOP")]
    assert engine.finished and lost == 0


def test_capture_page_matches_spandsps_own_decoder(testdata):
    from tests.t38gw.t30.spandsp_decoder import SpandspPageDecoder

    datagrams = list(udp_payloads((testdata / CAPTURE).read_bytes(), dst_port=2))
    ours = [e for e in receive_capture(datagrams)[2] if isinstance(e, PageReceived)]
    theirs = [e for e in receive_capture(datagrams, SpandspPageDecoder)[2] if isinstance(e, PageReceived)]
    assert [(p.height, p.bitmap) for p in ours] == [(p.height, p.bitmap) for p in theirs]
