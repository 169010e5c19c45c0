"""Against SpanDSP: failure paths, repeated commands, EOM, T.38 versions, modems, localTCF."""

from __future__ import annotations

import random

import pytest

from t38gw.t30 import (
    CallEnded,
    DocumentEnded,
    Fcf,
    PageReceived,
    PhaseBCompleted,
    ReceiveCapabilities,
    ReceiverConfig,
    T30Frame,
    T30Result,
)

from tests.peers.spandsp import T30_ERR_OK, T30_ERRORS, make_fax_tiff
from tests.t38gw.t30.harness import perfect_channel, run_call
from udptl.codec import decode_ifp
from udptl.impairment import Impairment
from udptl.ifp import FieldType, T30Data

WIDTH = 1728


def pages_for(seed: int, count: int, width: int = WIDTH, rows=(40, 120)):
    from tests.t38gw.t30.pages import random_page

    rng = random.Random(seed)
    pages = []
    for _ in range(count):
        height = rng.randrange(*rows)
        pages.append((random_page(rng, width, height), width, height))
    return pages


@pytest.fixture
def tiff(tmp_path):
    def make(pages, **kw):
        path = tmp_path / f"tx{len(list(tmp_path.iterdir()))}.tif"
        make_fax_tiff(path, pages, **kw)
        return path

    return make


def assert_pages(outcome, pages):
    received = [e for e in outcome.events if isinstance(e, PageReceived)]
    assert [p.bitmap for p in received] == [bitmap for bitmap, _, _ in pages]


def engine_frames(outcome) -> list[str]:
    """T.30 frames SpanDSP received from us, by name (SpanDSP's own record)."""
    return [T30Frame.from_octets(frame).name for direction, frame in outcome.spandsp_frames if direction == "rx"]


def spandsp_frames(outcome) -> list[str]:
    return [T30Frame.from_octets(frame).name for direction, frame in outcome.spandsp_frames if direction == "tx"]


def test_sender_hangs_up_mid_page_keeps_confirmed_pages(tiff):
    pages = pages_for(1, 3, rows=(300, 400))
    bursts = []  # start times of SpanDSP's image-data bursts: TCF, page 1, page 2, ...

    def watch(ifp: bytes, now: float):
        packet = decode_ifp(ifp, 0)
        if not packet.is_indicator and packet.msg is not T30Data.V21:
            if not bursts or now - bursts[-1][1] > 0.5:
                bursts.append([now, now])
            bursts[-1][1] = now
        return ifp

    run_call(tiff(pages), ecm=False, compressions={"mh"}, tamper=watch)
    page_two = bursts[2]
    assert page_two[1] - page_two[0] > 0.1
    outcome = run_call(tiff(pages), ecm=False, compressions={"mh"}, stop_sender_at=(page_two[0] + page_two[1]) / 2)
    ended = outcome.call_ended
    assert ended.pages == 1 and ended.result in (T30Result.RX_NOCARRIER, T30Result.RX_T2EXPD), ended
    assert_pages(outcome, pages[:1])
    assert outcome.engine.finished and outcome.engine.next_deadline() is None


def test_dcn_before_any_page_when_we_cannot_receive(tiff):
    # A DIS without bit 10 ("ready to receive", e.g. archive full): SpanDSP hangs up with DCN.
    config = ReceiverConfig(local_ident="1", capabilities=ReceiveCapabilities(ready_to_receive=False))
    outcome = run_call(tiff(pages_for(2, 1)), config=config)
    assert outcome.sender_status == T30_ERRORS["T30_ERR_RX_INCAPABLE"]
    assert outcome.call_ended == CallEnded(T30Result.RX_DCNWHY, 0, "DCN in phase B (answering)")
    assert engine_frames(outcome)[:2] == ["CSI", "DIS"] and spandsp_frames(outcome)[-1] == "DCN"
    assert outcome.engine.finished


def test_tcf_that_fails_twice_then_sender_falls_back(tiff):
    pages = pages_for(3, 2)
    tcf_bursts = []

    def spoil_tcf(ifp: bytes, now: float):
        packet = decode_ifp(ifp, 0)
        if packet.is_indicator or packet.msg is T30Data.V21:
            return ifp
        if not any(f.field_type in (FieldType.T4_NON_ECM_DATA, FieldType.T4_NON_ECM_SIG_END) for f in packet.fields or ()):
            return ifp
        if not tcf_bursts or now - tcf_bursts[-1] > 1.0:
            tcf_bursts.append(now)
        tcf_bursts[-1] = now
        if len(tcf_bursts) <= 2:
            return ifp.replace(b"\x00\x00\x00\x00", b"\x00\x55\x00\x00")  # ones in the zeros
        return ifp

    outcome = run_call(tiff(pages), ecm=False, compressions={"mr"}, tamper=spoil_tcf)
    assert outcome.sender_status == T30_ERR_OK
    assert [n for n in engine_frames(outcome) if n in ("FTT", "CFR")] == ["FTT", "FTT", "CFR"]
    rates = [e.bit_rate for e in outcome.events if isinstance(e, PhaseBCompleted)]
    assert rates == [9600] and outcome.sender_stats["bit_rate"] == 9600  # 14400 -> 12000 -> 9600
    assert_pages(outcome, pages)
    assert outcome.call_ended.result is T30Result.OK


def test_peer_that_never_answers_dis_gets_three_dis_then_dcn(tiff):
    def silent(datagram, now):
        return []

    sent = []

    def heard_by_sender(datagram, now):
        from udptl.codec import decode_udptl

        for field in decode_ifp(decode_udptl(datagram).primary, 0).fields or ():
            if field.field_type is FieldType.HDLC_DATA:
                sent.append(T30Frame.from_wire(field.data).name)
        return perfect_channel(datagram, now)

    outcome = run_call(tiff(pages_for(4, 1)), to_engine=silent, to_sender=heard_by_sender, max_sim_seconds=60.0)
    # TSB-85 MRGX01: three DIS, then DCN (RETRYDCN).
    assert outcome.call_ended == CallEnded(T30Result.RETRYDCN, 0, "no answer to 3 DIS")
    assert sent.count("DIS") == 3 and sent[-1] == "DCN"
    assert outcome.engine.finished and outcome.engine.next_deadline() is None
    assert outcome.sim_seconds < 35.0  # well before T1: CED, 3 x (DIS + T4), DCN


def test_lost_mcf_is_answered_again_when_sender_repeats_mps(tiff):
    pages = pages_for(5, 2)
    dropped = []

    def drop_first_mcf(datagram, now):
        # Drop every datagram carrying our first post-page answer (MCF), all copies.
        from udptl.codec import decode_udptl

        ifp = decode_ifp(decode_udptl(datagram).primary, 0)
        for field in ifp.fields or ():
            if field.field_type is FieldType.HDLC_DATA and T30Frame.from_wire(field.data).fcf == Fcf.MCF:
                if not dropped or dropped == ["MCF"]:
                    dropped.append("MCF")
                    if len(dropped) == 1:
                        return []
        return perfect_channel(datagram, now)

    outcome = run_call(tiff(pages), ecm=False, compressions={"mh"}, to_sender=drop_first_mcf)
    assert outcome.sender_status == T30_ERR_OK
    assert spandsp_frames(outcome).count("MPS") == 2  # repeated after T4
    assert outcome.engine.counters["responses_repeated"] == 1
    assert_pages(outcome, pages)


def test_eom_starts_a_new_phase_b(tiff):
    # SpanDSP sends EOM when the next page has another format: then DIS/DCS again.
    fine = pages_for(6, 1)
    standard = pages_for(7, 1)
    from tests.peers.spandsp import read_fax_tiff

    both = tiff(fine + standard, x_dpi=204, y_dpi=196)
    _rewrite_second_page_resolution(both, 98)
    assert [p[4] for p in read_fax_tiff(both)] == [196.0, 98.0]
    outcome = run_call(both, ecm=True, compressions={"mmr"})
    assert outcome.sender_status == T30_ERR_OK
    assert "EOM" in [n for n in spandsp_frames(outcome)] or any(
        n == "PPS" for n in spandsp_frames(outcome))
    assert [e for e in outcome.events if isinstance(e, DocumentEnded)] == [
        DocumentEnded(1, more_documents=True), DocumentEnded(1, more_documents=False)]
    assert engine_frames(outcome).count("DIS") >= 2
    received = [e for e in outcome.events if isinstance(e, PageReceived)]
    assert [(p.y_dpi, p.bitmap) for p in received] == [(196, fine[0][0]), (98, standard[0][0])]


def _rewrite_second_page_resolution(path, y_dpi: int) -> None:
    """Set YResolution of the second IFD (a RATIONAL) in place."""
    import struct

    with open(path, "r+b") as f:
        data = f.read()
        endian = "<" if data[:2] == b"II" else ">"
        (offset,) = struct.unpack(endian + "I", data[4:8])
        for ifd in range(2):
            (count,) = struct.unpack(endian + "H", data[offset:offset + 2])
            if ifd == 1:
                for i in range(count):
                    entry = offset + 2 + 12 * i
                    tag, kind, n, value = struct.unpack(endian + "HHII", data[entry:entry + 12])
                    if tag == 283:
                        f.seek(value)
                        f.write(struct.pack(endian + "II", y_dpi, 1))
            (offset,) = struct.unpack(endian + "I", data[offset + 2 + 12 * count:offset + 6 + 12 * count])


@pytest.mark.parametrize("version", [0, 1, 2, 3])
@pytest.mark.parametrize("ecm,coding", [(False, "mr"), (True, "mmr")])
def test_t38_versions(tiff, version, ecm, coding):
    pages = pages_for(10 + version, 2)
    rng = random.Random(version)
    outcome = run_call(tiff(pages), ecm=ecm, compressions={coding}, version=version, redundancy=3,
                       to_engine=Impairment(random.Random(rng.random()), loss=0.05).transmit,
                       to_sender=Impairment(random.Random(rng.random()), loss=0.05).transmit)
    assert outcome.sender_status == T30_ERR_OK
    assert outcome.call_ended.result is T30Result.OK
    assert_pages(outcome, pages)


@pytest.mark.parametrize("max_bitrate,modem,rate", [(4800, "V.27ter", 4800), (9600, "V.29", 9600),
                                                    (14400, "V.17", 14400)])
def test_modems(tiff, max_bitrate, modem, rate):
    pages = pages_for(20, 1)
    outcome = run_call(tiff(pages), ecm=False, compressions={"mh"}, max_bitrate=max_bitrate)
    assert outcome.sender_status == T30_ERR_OK
    (phase_b,) = [e for e in outcome.events if isinstance(e, PhaseBCompleted)]
    assert (phase_b.modem, phase_b.bit_rate) == (modem, rate)
    assert_pages(outcome, pages)


def test_local_tcf(tiff):
    pages = pages_for(21, 2)
    outcome = run_call(tiff(pages), ecm=True, compressions={"mmr"}, transferred_tcf=False,
                       config=ReceiverConfig(local_ident="1", transferred_tcf=False))
    assert outcome.sender_status == T30_ERR_OK
    assert outcome.call_ended.result is T30Result.OK
    assert_pages(outcome, pages)


def test_identities_travel_both_ways(tiff):
    outcome = run_call(tiff(pages_for(22, 1)), sender_ident="+44 20 7946 0018",
                       config=ReceiverConfig(local_ident="+1 555 0100"))
    (phase_b,) = [e for e in outcome.events if isinstance(e, PhaseBCompleted)]
    assert phase_b.remote_ident == "+44 20 7946 0018"
    assert outcome.sender_status == T30_ERR_OK


def test_every_frame_we_send_is_one_spandsp_understands(tiff):
    outcome = run_call(tiff(pages_for(23, 3)), ecm=True, compressions={"mr"})
    frames = engine_frames(outcome)
    assert frames[:2] == ["CSI", "DIS"] and "CFR" in frames and frames.count("MCF") >= 3
    assert outcome.sender_status == T30_ERR_OK



def test_pages_larger_than_one_ecm_block(tiff):
    # ITU chart 7 (dense text) at 204x391 codes to more than one 256-frame block (64 KiB) in
    # MH: SpanDSP sends PPS-NULL between the partial pages of one page.
    from tests.t38gw.t30.pages import chart_page

    bitmap = chart_page(7, WIDTH) * 2
    pages = [(bitmap, WIDTH, len(bitmap) // (WIDTH // 8))]
    outcome = run_call(tiff(pages, x_dpi=204, y_dpi=391), ecm=True, compressions={"mh"})
    assert outcome.sender_status == T30_ERR_OK
    pps = [T30Frame.from_octets(frame) for direction, frame in outcome.spandsp_frames
           if direction == "tx" and T30Frame.from_octets(frame).fcf == Fcf.PPS]
    assert [p.fif[0] & 0xFE for p in pps][:1] == [0x00] and pps[-1].fif[0] & 0xFE == Fcf.EOP
    assert {p.fif[2] for p in pps} >= {0, 1}  # block counter advanced within the page
    assert_pages(outcome, pages)


@pytest.mark.parametrize("x_dpi,y_dpi,width", [(408, 391, 3456), (408, 391, 4864)])
@pytest.mark.parametrize("ecm,coding", [(False, "mh"), (True, "mmr")])
def test_r16_superfine(tiff, x_dpi, y_dpi, width, ecm, coding):
    pages = pages_for(30, 2, width=width)
    outcome = run_call(tiff(pages, x_dpi=x_dpi, y_dpi=y_dpi), ecm=ecm, compressions={coding})
    assert outcome.sender_status == T30_ERR_OK
    (phase_b,) = [e for e in outcome.events if isinstance(e, PhaseBCompleted)]
    assert (phase_b.x_dpi, phase_b.y_dpi, phase_b.width_px) == (x_dpi, y_dpi, width)
    assert_pages(outcome, pages)


def test_a_mode_we_do_not_offer_is_never_chosen(tiff):
    # 600x600 is not in our DIS: SpanDSP cannot send the page and hangs up; nothing is received.
    width = 5184
    outcome = run_call(tiff(pages_for(31, 1, width=width), x_dpi=600, y_dpi=600), ecm=True, compressions={"mmr"})
    assert outcome.sender_status != T30_ERR_OK
    assert outcome.call_ended.result is T30Result.RX_DCNWHY and outcome.call_ended.pages == 0


def test_garbled_command_gets_no_answer_and_spandsp_repeats_it(tiff):
    from udptl.codec import encode_ifp
    from udptl.ifp import DataField, IfpPacket

    pages = pages_for(32, 2)
    frame = bytearray()
    spoiled = []

    def spoil_first_mps(ifp: bytes, now: float):
        packet = decode_ifp(ifp, 0)
        if packet.is_indicator or packet.msg is not T30Data.V21:
            return ifp
        fields = []
        for field in packet.fields or ():
            if field.field_type is FieldType.HDLC_DATA:
                frame.extend(field.data)
            elif field.field_type in (FieldType.HDLC_FCS_OK, FieldType.HDLC_FCS_OK_SIG_END):
                is_mps = len(frame) >= 3 and T30Frame.from_wire(bytes(frame)).fcf == Fcf.MPS
                frame.clear()
                if is_mps and not spoiled and field.field_type is FieldType.HDLC_FCS_OK_SIG_END:
                    spoiled.append(now)
                    field = DataField(FieldType.HDLC_FCS_BAD_SIG_END, field.data)
            fields.append(field)
        return encode_ifp(IfpPacket(packet.msg, tuple(fields)), 0)

    outcome = run_call(tiff(pages), ecm=False, compressions={"mh"}, tamper=spoil_first_mps)
    assert spoiled and outcome.sender_status == T30_ERR_OK
    sent = engine_frames(outcome)
    # TSB-85 MRGN17: a bad-FCS command gets no answer (CRP is optional, T.30 5.3.6.1.8);
    # SpanDSP repeats it when its T4 runs out.
    assert "CRP" not in sent and sent.count("MCF") == 2
    assert spandsp_frames(outcome).count("MPS") == 2
    assert outcome.engine.counters["bad_frames"] == 1
    assert_pages(outcome, pages)


def test_subaddress_and_sender_ident_from_spandsp(tiff):
    import ctypes

    def configure(sender):
        lib = sender._lib
        for name in ("t30_set_tx_sub_address", "t30_set_tx_sender_ident"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            getattr(lib, name).restype = ctypes.c_int
        lib.t30_set_tx_sub_address(sender.t30_state, b"4021")
        lib.t30_set_tx_sender_ident(sender.t30_state, b"0042")  # SID: T.30 5.3.6.2.10

    outcome = run_call(tiff(pages_for(33, 1)), configure_sender=configure)
    assert outcome.sender_status == T30_ERR_OK
    (phase_b,) = [e for e in outcome.events if isinstance(e, PhaseBCompleted)]
    assert (phase_b.subaddress, phase_b.password) == ("4021", "0042")
    sent = spandsp_frames(outcome)
    assert {"TSI", "SUB", "DCS"} <= set(sent) and ({"PWD", "SID"} & set(sent))


def test_ppr_names_the_frames_lost_on_the_wire_and_spandsp_resends_them(tiff):
    from udptl.codec import decode_udptl

    from t38gw.t30.ecm import frames_in_ppr_map
    from t38gw.t30.frames import REVERSE_BITS

    pages = pages_for(34, 1, rows=(400, 401))
    fcd_head = T30Frame(Fcf.FCD, final=False).to_wire()[:3]
    victims = {3, 7}
    dropped = set()

    def lose_two_frames(datagram, now):
        # No redundancy on this link: a lost datagram is a lost piece of an FCD frame.
        for field in decode_ifp(decode_udptl(datagram).primary, 0).fields or ():
            data = field.data
            if field.field_type is FieldType.HDLC_DATA and data[:3] == fcd_head and len(data) > 3:
                number = data[3:4].translate(REVERSE_BITS)[0]
                if number in victims and number not in dropped:
                    dropped.add(number)
                    return []
        return perfect_channel(datagram, now)

    outcome = run_call(tiff(pages), ecm=True, compressions={"mh"}, to_engine=lose_two_frames)
    assert dropped == victims and outcome.sender_status == T30_ERR_OK
    pprs = [T30Frame.from_octets(f) for d, f in outcome.spandsp_frames if d == "rx" and f[2] & 0xFE == Fcf.PPR]
    # The map flags every frame not held, those past the block's end too (as SpanDSP's
    # receiver does); SpanDSP resends only the frames it sent.
    frame_count = max(n for n in range(256) if n not in frames_in_ppr_map(pprs[0].fif)) + 1
    assert [frames_in_ppr_map(p.fif) for p in pprs] == [sorted(victims) + list(range(frame_count, 256))]
    assert_pages(outcome, pages)


def test_preamble_first_answer(tiff):
    pages = pages_for(35, 1)
    outcome = run_call(tiff(pages), config=ReceiverConfig(local_ident="1", send_ced=False))
    assert outcome.sender_status == T30_ERR_OK
    assert_pages(outcome, pages)


@pytest.mark.parametrize("peer_max_datagram", [40, 72])
def test_small_t38faxmaxdatagram_frames_are_split_and_spandsp_reassembles_them(tiff, peer_max_datagram):
    """A peer declaring a tiny T38FaxMaxDatagram: our CSI/DIS/PPR frames go out in several
    hdlc-data chunks (T.38 clause 7) that never exceed it, and SpanDSP still gets every
    frame -- including a 35-octet PPR, provoked by losing one FCD frame towards us."""
    from udptl.codec import decode_udptl

    from t38gw.t30.frames import REVERSE_BITS

    pages = pages_for(77, 1, rows=(400, 401))
    fcd_head = T30Frame(Fcf.FCD, final=False).to_wire()[:3]
    dropped = set()
    sizes = []

    def lose_frame_5(datagram, now):
        for field in decode_ifp(decode_udptl(datagram).primary, 0).fields or ():
            data = field.data
            if field.field_type is FieldType.HDLC_DATA and data[:3] == fcd_head and len(data) > 3:
                if data[3:4].translate(REVERSE_BITS)[0] == 5 and not dropped:
                    dropped.add(5)
                    return []
        return perfect_channel(datagram, now)

    def to_sender(datagram, now):
        sizes.append(len(datagram))
        return perfect_channel(datagram, now)

    outcome = run_call(tiff(pages), ecm=True, compressions={"mmr"}, to_engine=lose_frame_5, to_sender=to_sender,
                       sender_max_datagram=peer_max_datagram)
    assert outcome.sender_status == T30_ERR_OK
    assert outcome.call_ended.result is T30Result.OK
    assert_pages(outcome, pages)
    assert "PPR" in engine_frames(outcome)
    assert max(sizes) <= peer_max_datagram


@pytest.mark.parametrize("ecm", [False, True])
def test_page_limit_keeps_the_confirmed_pages_and_disconnects_spandsp(tiff, ecm):
    # Issue 9 item 3: the page that reaches max_pages is confirmed (MCF), then DCN; SpanDSP
    # reports the call ended by the far end, and every confirmed page is kept.
    pages = pages_for(41, 5)
    config = ReceiverConfig(local_ident="+1 555 0100", max_pages=3)
    outcome = run_call(tiff(pages), ecm=ecm, compressions={"mh"}, config=config)
    assert outcome.call_ended == CallEnded(T30Result.LIMIT_REACHED, 3, "page limit of 3 pages per call reached")
    assert_pages(outcome, pages[:3])
    sent = engine_frames(outcome)
    assert sent[-2:] == ["MCF", "DCN"] and sent.count("MCF") == 3
    assert outcome.sender_status != T30_ERR_OK and outcome.sender_stats["pages_tx"] == 3
