"""ECM block bookkeeping and the IFP <-> HDLC/image front end."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from t38gw.t30 import Fcf, T30Frame
from t38gw.t30.ecm import EcmBlock, frames_in_ppr_map
from t38gw.t30.t38_io import (
    HdlcFrameArrived,
    HdlcSignalEnded,
    IfpDemultiplexer,
    ImageDataArrived,
    ImageSignalEnded,
    SignalStarted,
    hdlc_burst,
)
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator


def test_ppr_map_bit_for_frame_0_is_the_first_transmitted_bit():
    block = EcmBlock(0, 0, 256)
    block.set_frame_count(10)
    for n in range(10):
        if n not in (0, 9):
            block.frame_received(n, b"x")
    bitmap = block.ppr_map()
    # Frames 0 and 9 are missing; 10-255 were never sent and are flagged too (SpanDSP's
    # map, TSB-85 OREN02/03): bits 10-15 of octet 1 and every later octet.
    assert bitmap[0] == 0x01 and bitmap[1] == 0xFE and bitmap[2:] == b"\xff" * 30
    # On the T.38 wire (MSB first) frame 0 is the top bit of the first octet.
    assert T30Frame(Fcf.PPR, bitmap).to_wire()[3] == 0x80


@given(st.integers(1, 256), st.sets(st.integers(0, 255)))
@settings(deadline=None, max_examples=150)
def test_ppr_map_round_trip(count, present):
    block = EcmBlock(0, 0, 64)
    for n in present:
        block.frame_received(n, bytes([n]) * 64)
    block.set_frame_count(count)
    missing = [n for n in range(count) if n not in present]
    assert block.missing() == missing
    assert frames_in_ppr_map(block.ppr_map()) == [n for n in range(256) if n not in present]


def test_a_frame_longer_or_shorter_than_an_fcd_can_be_is_asked_for_again():
    # An audio line cut a frame short and SpanDSP's modem joined its octets to the next
    # frame's, closed by that frame's good FCS: kept, it would corrupt the page (issue 13).
    block = EcmBlock(0, 0, 256)
    assert block.frame_received(0, b"\x11" * 256)
    assert not block.frame_received(1, b"\x22" * 300)  # longer than any FCD
    assert block.frame_received(2, b"\x33" * 100)  # short, but not the block's last
    assert block.frame_received(3, b"\x44" * 40)  # the block's last may be short
    block.set_frame_count(4)
    assert block.missing() == [1, 2]
    assert frames_in_ppr_map(block.ppr_map())[:2] == [1, 2]
    block.frame_received(1, b"\x22" * 256)
    block.frame_received(2, b"\x33" * 256)
    assert block.missing() == [] and block.data() == b"\x11" * 256 + b"\x22" * 256 + b"\x33" * 256 + b"\x44" * 40


def test_frame_count_only_grows():
    block = EcmBlock(0, 0, 64)
    block.set_frame_count(40)
    block.set_frame_count(3)  # SpanDSP counts the resend burst only
    assert block.frame_count == 40


def v21(*fields):
    return IfpPacket(T30Data.V21, tuple(DataField(t, d) for t, d in fields))


def test_demux_swallows_repeats_and_joins_chunks():
    demux = IfpDemultiplexer()
    out = []
    preamble = IfpPacket(T30Indicator.V21_PREAMBLE)
    for packet in [preamble, preamble,
                   v21((FieldType.HDLC_DATA, b"\xff\xc8")), v21((FieldType.HDLC_DATA, b"\x01\x00")),
                   v21((FieldType.HDLC_FCS_OK_SIG_END, b"")), v21((FieldType.HDLC_FCS_OK_SIG_END, b"")),
                   v21((FieldType.HDLC_FCS_OK, b""))]:
        out += demux.packet_received(packet)
    assert out == [SignalStarted(T30Indicator.V21_PREAMBLE),
                   HdlcFrameArrived(b"\xff\xc8\x01\x00", True, T30Data.V21), HdlcSignalEnded(T30Data.V21)]


def test_demux_takes_octets_inside_the_fcs_field_and_marks_loss():
    demux = IfpDemultiplexer()
    out = demux.packet_received(v21((FieldType.HDLC_DATA, b"\xff"), (FieldType.HDLC_FCS_OK, b"\xc8\x01")))
    assert out == [HdlcFrameArrived(b"\xff\xc8\x01", True, T30Data.V21)]
    demux.packet_received(v21((FieldType.HDLC_DATA, b"\xff\xc8")))
    demux.note_loss()
    out = demux.packet_received(v21((FieldType.HDLC_FCS_OK, b"")))
    assert out == [HdlcFrameArrived(b"\xff\xc8", False, T30Data.V21)]


def test_demux_image_data():
    demux = IfpDemultiplexer()
    t = T30Data.V17_14400
    out = []
    for packet in [IfpPacket(T30Indicator.V17_14400_LONG_TRAINING),
                   IfpPacket(t, (DataField(FieldType.T4_NON_ECM_DATA, b"\x00\x01"),)),
                   IfpPacket(t, (DataField(FieldType.T4_NON_ECM_SIG_END, b"\x02"),)),
                   IfpPacket(t, (DataField(FieldType.T4_NON_ECM_SIG_END, b"\x02"),))]:
        out += demux.packet_received(packet)
    assert out == [SignalStarted(T30Indicator.V17_14400_LONG_TRAINING), ImageDataArrived(b"\x00\x01", t),
                   ImageDataArrived(b"\x02", t), ImageSignalEnded(t)]


def test_an_endless_frame_is_cut_and_marked_bad():
    demux = IfpDemultiplexer()
    for _ in range(20):
        demux.packet_received(v21((FieldType.HDLC_DATA, bytes(100))))
    (frame,) = demux.packet_received(v21((FieldType.HDLC_FCS_OK, b"")))
    assert not frame.fcs_ok and len(frame.wire) <= 512


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=30)), min_size=1, max_size=4))
@settings(deadline=None, max_examples=100)
def test_hdlc_burst_round_trips_through_the_demux(specs):
    frames = [T30Frame(fcf, fif, final=i == len(specs) - 1) for i, (fcf, fif) in enumerate(specs)]
    frames = [T30Frame.from_octets(f.to_octets()) for f in frames]
    packets, end = hdlc_burst(frames, 10.0)
    assert end > 11.0 and [p.at for p in packets] == sorted(p.at for p in packets)
    demux = IfpDemultiplexer()
    got = []
    for out in packets:
        for _ in range(out.repeat):
            got += demux.packet_received(out.packet)
    arrived = [T30Frame.from_wire(e.wire) for e in got if isinstance(e, HdlcFrameArrived)]
    assert arrived == frames
    assert sum(isinstance(e, HdlcSignalEnded) for e in got) == 1


@given(st.binary(min_size=3, max_size=80), st.data())
@settings(deadline=None, max_examples=100)
def test_hdlc_frame_is_the_same_whole_or_in_any_chunks(wire, data):
    # The h11 test for the front end: a frame split anyhow (even byte by byte) reassembles
    # to the same octets; a repeated end packet after it adds nothing.
    cuts = sorted(data.draw(st.sets(st.integers(1, len(wire) - 1), max_size=len(wire))))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)])]
    demux = IfpDemultiplexer()
    got = []
    for piece in pieces:
        got += demux.packet_received(v21((FieldType.HDLC_DATA, piece)))
    end = v21((FieldType.HDLC_FCS_OK_SIG_END, b""))
    got += demux.packet_received(end) + demux.packet_received(end)
    assert got == [HdlcFrameArrived(wire, True, T30Data.V21), HdlcSignalEnded(T30Data.V21)]
