"""The receive engine driven by a scripted sender: every T.30 path we promise."""

from __future__ import annotations

import random

import pytest

from t38gw.t30 import (
    CallEnded,
    Compression,
    DocumentEnded,
    Fcf,
    LocalProtocolError,
    Modulation,
    PageQuality,
    PageReceived,
    PageRejected,
    PhaseBCompleted,
    ProtocolEventLogged,
    ReceiverConfig,
    State,
    T30Receiver,
    T30Result,
    judge_quality,
)
from t38gw.t30.dcs import build_dcs
from t38gw.t30.ecm import frames_in_ppr_map
from t38gw.t30.frames import PPS_NULL, decode_ident
from tests.t38gw.t30 import scripted as s
from udptl.ifp import FieldType, T30Indicator

WIDTH = 1728
HEIGHT = 120


def random_bitmap(rng: random.Random, width: int, height: int) -> bytes:
    stride = width // 8
    out = bytearray(stride * height)
    for y in range(height):
        for _ in range(rng.randrange(0, 5)):
            a = rng.randrange(width)
            for x in range(a, min(width, a + rng.randrange(1, 120))):
                out[y * stride + (x >> 3)] |= 0x80 >> (x & 7)
    return bytes(out)


@pytest.fixture(scope="module")
def page():
    bitmap = random_bitmap(random.Random(7), WIDTH, HEIGHT)
    return bitmap, {c: s.coded_page(bitmap, WIDTH, HEIGHT, c) for c in Compression}


def engine(**config) -> s.Driver:
    config.setdefault("local_ident", "+1 555 0100")
    return s.Driver(T30Receiver(ReceiverConfig(**config)))


def trained(driver: s.Driver, modulation=Modulation.V17_14400, **dcs) -> None:
    driver.wait(6.0)  # CED and DIS go out
    driver.feed(s.dcs_sequence(modulation, **dcs))
    driver.feed(s.tcf(modulation))
    driver.flush()


def names(driver: s.Driver) -> list[str]:
    driver.flush()
    return driver.sent_names()


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_answer_sends_ced_then_csi_and_dis():
    d = engine()
    d.wait(6.0)
    assert d.sent[0].packet.msg is T30Indicator.CED and d.sent[0].at == 0.0
    preamble = next(o for o in d.sent if o.packet.msg is T30Indicator.V21_PREAMBLE)
    assert preamble.at >= 3.0  # T.30 5.3.6.1: CED lasts 2.6-4 s before V.21
    frames = d.sent_frames()
    assert [f.name for f in frames] == ["CSI", "DIS"]
    assert decode_ident(frames[0].fif) == "+1 555 0100"
    assert not frames[0].final and frames[1].final


def test_preamble_first_when_configured():
    d = engine(send_ced=False)
    d.wait(0.1)
    assert d.sent[0].packet.msg is T30Indicator.V21_PREAMBLE


def test_start_twice_is_our_error():
    receiver = T30Receiver()
    receiver.start(0.0)
    with pytest.raises(LocalProtocolError):
        receiver.start(1.0)


def test_no_answer_to_three_dis_ends_with_dcn():
    # TSB-85 MRGX01: DIS three times, T4 apart, then DCN (RETRYDCN), well within T1.
    d = engine()
    d.wait(60.0)
    ended = of(d.events, CallEnded)
    assert ended == [CallEnded(T30Result.RETRYDCN, 0, "no answer to 3 DIS")]
    sent = names(d)
    assert sent[-1] == "DCN" and sent.count("DIS") == 3
    assert d.engine.finished and d.engine.next_deadline() is None


def test_dcn_before_any_page():
    d = engine()
    d.wait(6.0)
    d.feed(s.control(s.frame(Fcf.DCN)))
    assert of(d.events, CallEnded)[0].result is T30Result.RX_DCNWHY
    assert d.engine.state is State.ENDED


def test_good_tcf_gets_cfr_and_phase_b_report():
    d = engine()
    trained(d, Modulation.V29_9600, compression=Compression.MR)
    assert names(d)[-1] == "CFR"
    (pb,) = of(d.events, PhaseBCompleted)
    assert (pb.remote_ident, pb.modem, pb.bit_rate, pb.compression, pb.ecm) == ("+1 555 0199", "V.29", 9600, "mr", False)


def test_tcf_failing_twice_then_fallback_succeeds(page):
    bitmap, coded = page
    d = engine()
    d.wait(6.0)
    for modulation in (Modulation.V17_14400, Modulation.V17_12000):
        d.feed(s.dcs_sequence(modulation))
        d.feed(s.tcf(modulation, good=False))
    d.feed(s.dcs_sequence(Modulation.V17_9600))
    d.feed(s.tcf(Modulation.V17_9600))
    assert [n for n in names(d) if n in ("FTT", "CFR")] == ["FTT", "FTT", "CFR"]
    d.feed(s.image_carrier(Modulation.V17_9600, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.EOP)))
    d.feed(s.control(s.frame(Fcf.DCN)))
    (got,) = of(d.events, PageReceived)
    assert got.bitmap == bitmap and got.quality is PageQuality.GOOD
    assert of(d.events, CallEnded)[0].result is T30Result.OK


def test_tcf_failing_twice_then_sender_gives_up():
    d = engine()
    d.wait(6.0)
    for modulation in (Modulation.V17_14400, Modulation.V17_12000):
        d.feed(s.dcs_sequence(modulation))
        d.feed(s.tcf(modulation, good=False))
    d.feed(s.control(s.frame(Fcf.DCN)))
    (ended,) = of(d.events, CallEnded)
    assert ended.result is T30Result.CANNOT_TRAIN and ended.pages == 0


def test_tcf_zero_run_is_judged_over_its_duration():
    # 1 s of zeros at 9600 bit/s is the threshold (SpanDSP's rule); a burst of ones first is fine.
    for zeros, expected in ((1200, "CFR"), (1199, "FTT")):
        d = engine()
        d.wait(6.0)
        d.feed(s.dcs_sequence(Modulation.V29_9600))
        data = b"\xff" * 100 + bytes(zeros) + b"\x01" + bytes(zeros // 2)
        d.feed(s.image_carrier(Modulation.V29_9600, data, chunk=37))
        assert names(d)[-1] == expected


def test_local_tcf_answers_cfr_without_judging_tcf():
    d = engine(transferred_tcf=False)
    d.wait(6.0)
    d.feed(s.dcs_sequence(Modulation.V17_14400))
    assert names(d)[-1] == "DIS"
    d.wait(1.1)  # no training burst followed: CFR
    assert names(d)[-1] == "CFR"
    # A peer that still sends a (bad) TCF gets CFR only after it, unjudged.
    d = engine(transferred_tcf=False)
    d.wait(6.0)
    d.feed(s.dcs_sequence(Modulation.V17_14400))
    burst = s.tcf(Modulation.V17_14400, good=False)
    d.feed(burst[:-1])
    assert names(d)[-1] == "DIS"
    d.feed(burst[-1:])
    assert names(d)[-1] == "CFR"


@pytest.mark.parametrize("compression", [Compression.MH, Compression.MR])
def test_non_ecm_pages_and_lost_mcf(page, compression):
    bitmap, coded = page
    d = engine()
    trained(d, compression=compression)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[compression]))
    d.feed(s.control(s.frame(Fcf.MPS)))
    assert names(d)[-1] == "MCF"
    # The sender did not hear our MCF and repeats MPS after T4: the same answer, once more.
    d.wait(3.0)
    d.feed(s.control(s.frame(Fcf.MPS)))
    assert names(d)[-2:] == ["MCF", "MCF"]
    assert d.engine.counters["responses_repeated"] == 1
    d.feed(s.image_carrier(Modulation.V17_14400, coded[compression]))
    d.feed(s.control(s.frame(Fcf.EOP)))
    d.feed(s.control(s.frame(Fcf.DCN)))
    pages = of(d.events, PageReceived)
    assert [p.number for p in pages] == [1, 2]
    assert all(p.bitmap == bitmap and p.height == HEIGHT and p.bad_rows == 0 for p in pages)
    assert of(d.events, DocumentEnded) == [DocumentEnded(2, more_documents=False)]
    assert of(d.events, CallEnded)[0] == CallEnded(T30Result.OK, 2, "DCN after EOP")


def test_damaged_non_ecm_page_gets_rtn_and_is_not_counted(page):
    bitmap, coded = page
    data = bytearray(coded[Compression.MH])
    for i in range(40, len(data) - 40, 7):  # hit most rows
        data[i] ^= 0x5A
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, bytes(data)))
    d.feed(s.control(s.frame(Fcf.MPS)))
    assert names(d)[-1] == "RTN"
    (rejected,) = of(d.events, PageRejected)
    assert rejected.bad_rows > 0
    assert not of(d.events, PageReceived)
    # After RTN the sender retrains: a new DCS is expected.
    assert d.engine.state is State.AWAIT_DCS


def test_garbled_post_page_command_gets_no_answer(page):
    # TSB-85 MRGN17 "do not respond to bad EOP commands" (CRP is optional, T.30 5.3.6.1.8).
    bitmap, coded = page
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.EOP), fcs_ok=False))
    d.flush()
    assert names(d)[-1] == "CFR"
    d.feed(s.control(s.frame(Fcf.EOP)))
    assert names(d)[-1] == "MCF"
    assert len(of(d.events, PageReceived)) == 1


def test_eom_returns_to_phase_b_with_a_new_dis(page):
    bitmap, coded = page
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.EOM)))
    d.flush()
    assert names(d)[-1] == "MCF"
    assert of(d.events, DocumentEnded) == [DocumentEnded(1, more_documents=True)]
    # T.30 Figure 5-2 / TSB-85 MRGN09: DIS follows when T2 runs out without a command.
    d.wait(5.5)
    assert names(d)[-1] == "MCF"
    d.wait(3.0)
    d.flush()
    assert names(d)[-3:] == ["MCF", "CSI", "DIS"]
    assert d.engine.state is State.ANSWERING
    d.feed(s.dcs_sequence(Modulation.V17_14400, compression=Compression.MR))
    d.feed(s.tcf(Modulation.V17_14400))
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MR]))
    d.feed(s.control(s.frame(Fcf.EOP)))
    d.feed(s.control(s.frame(Fcf.DCN)))
    assert [p.compression for p in of(d.events, PageReceived)] == ["mh", "mr"]
    assert of(d.events, CallEnded)[0].result is T30Result.OK


def test_sender_stops_mid_page_keeps_confirmed_pages(page):
    bitmap, coded = page
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.MPS)))
    half = coded[Compression.MH][: len(coded[Compression.MH]) // 2]
    d.feed([s.IfpPacket(Modulation.V17_14400.indicator)] + s.image_carrier(Modulation.V17_14400, half)[1:-1])
    d.wait(60.0)
    (ended,) = of(d.events, CallEnded)
    assert ended.pages == 1 and ended.result in (T30Result.RX_T2EXPD, T30Result.RX_NOCARRIER)
    assert len(of(d.events, PageReceived)) == 1
    assert d.engine.finished


def test_hang_up_records_the_state_and_pages(page):
    bitmap, coded = page
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.MPS)))
    events = d.engine.hang_up(d.now + 1)
    assert events == [CallEnded(T30Result.CALL_DROPPED, 1, "call dropped in state await_page")]
    assert d.engine.hang_up(d.now + 2) == []
    assert d.engine.finished and d.engine.next_deadline() is None


def ecm_setup(frame_size=256, compression=Compression.MMR) -> s.Driver:
    d = engine()
    trained(d, ecm=True, ecm_frame_size=frame_size, compression=compression)
    return d


@pytest.mark.parametrize("frame_size", [64, 256])
def test_ecm_ppr_names_exactly_the_missing_frames(page, frame_size):
    bitmap, coded = page
    data = coded[Compression.MMR] * 1  # one page
    frames = dict(enumerate(s.ecm_frames(data, frame_size)))
    assert len(frames) >= 3
    lost = {0, len(frames) - 1}
    bad = frozenset({1})
    d = ecm_setup(frame_size)
    d.feed(s.ecm_burst(Modulation.V17_14400, {n: f for n, f in frames.items() if n not in lost}, bad=bad))
    d.feed(s.pps(Fcf.EOP | 1, 0, 0, len(frames)))
    d.flush()
    ppr = d.sent_frames()[-1]
    assert ppr.name == "PPR" and len(ppr.fif) == 32
    # Every frame not held is flagged, those past the block's end too (SpanDSP's map).
    assert frames_in_ppr_map(ppr.fif) == sorted(lost | bad | set(range(len(frames), 256)))
    # SpanDSP counts only the frames of the resend burst in the next PPS.
    d.feed(s.ecm_burst(Modulation.V17_14400, {n: frames[n] for n in sorted(lost | bad)}))
    d.feed(s.pps(Fcf.EOP | 1, 0, 0, 3))
    assert names(d)[-1] == "MCF"
    (got,) = of(d.events, PageReceived)
    assert got.bitmap == bitmap and got.ecm and got.compression == "mmr"
    assert d.engine.counters["ppr_sent"] == 1


def test_ecm_partial_pages_across_blocks_and_repeated_pps(page):
    bitmap, coded = page
    data = coded[Compression.MMR]
    frames = s.ecm_frames(data, 64)
    split = len(frames) // 2
    d = ecm_setup(64)
    d.feed(s.ecm_burst(Modulation.V17_14400, dict(enumerate(frames[:split]))))
    d.feed(s.pps(PPS_NULL, 0, 0, split))
    assert names(d)[-1] == "MCF"
    d.wait(3.5)  # the sender's T4 runs out: our MCF was lost
    d.feed(s.pps(PPS_NULL, 0, 0, split))
    assert names(d)[-2:] == ["MCF", "MCF"]
    d.feed(s.ecm_burst(Modulation.V17_14400, dict(enumerate(frames[split:]))))
    d.feed(s.pps(Fcf.MPS | 1, 0, 1, len(frames) - split))
    d.feed(s.ecm_burst(Modulation.V17_14400, dict(enumerate(frames))))
    d.feed(s.pps(Fcf.EOP | 1, 1, 0, len(frames)))
    d.wait(3.5)
    d.feed(s.pps(Fcf.EOP | 1, 1, 0, len(frames)))  # repeated again: MCF again, no third page
    d.feed(s.control(s.frame(Fcf.DCN)))
    pages = of(d.events, PageReceived)
    assert [p.bitmap == bitmap for p in pages] == [True, True]
    assert of(d.events, CallEnded)[0].result is T30Result.OK


def test_ecm_ctc_ctr_and_eor_err(page):
    bitmap, coded = page
    frames = dict(enumerate(s.ecm_frames(coded[Compression.MMR], 64)))
    d = ecm_setup(64)
    d.feed(s.ecm_burst(Modulation.V17_14400, {n: f for n, f in frames.items() if n != 2}))
    for _ in range(4):
        d.feed(s.pps(Fcf.EOP | 1, 0, 0, len(frames)))
        d.feed(s.ecm_burst(Modulation.V17_14400, {}))
    assert names(d).count("PPR") == 4
    # T.30 A.4.3: after four PPRs the sender may continue to correct at a lower rate...
    d.feed(s.control(s.frame(Fcf.CTC, bytes([0, 0x08]))))
    assert names(d)[-1] == "CTR"
    d.feed(s.ecm_burst(Modulation.V17_9600, {}))
    d.feed(s.pps(Fcf.EOP | 1, 0, 0, len(frames)))
    assert names(d)[-1] == "PPR"
    # ...or end the retransmission: the block is kept as it is.
    d.feed(s.control(s.frame(Fcf.EOR, bytes([Fcf.EOP | 1]))))
    assert names(d)[-1] == "ERR"
    # A frame is missing: the page is not confirmed (PageReceived pages are whole).
    assert not of(d.events, PageReceived)
    (rejected,) = of(d.events, PageRejected)
    assert rejected.number == 1 and rejected.ecm and rejected.bitmap is None
    assert any("EOR" in e.what for e in of(d.events, ProtocolEventLogged))
    d.feed(s.control(s.frame(Fcf.DCN)))
    assert of(d.events, CallEnded)[0].result is T30Result.RX_DCNDATA


def test_ecm_receiver_not_ready_rr_and_t5(page):
    bitmap, coded = page
    frames = dict(enumerate(s.ecm_frames(coded[Compression.MMR], 256)))
    d = ecm_setup()
    d.events += d.engine.set_receiver_ready(False, d.now)
    d.feed(s.ecm_burst(Modulation.V17_14400, frames))
    d.feed(s.pps(Fcf.MPS | 1, 0, 0, len(frames)))
    assert names(d)[-1] == "RNR"
    d.feed(s.control(s.frame(Fcf.RR)))
    assert names(d)[-1] == "RNR"
    d.events += d.engine.set_receiver_ready(True, d.now)
    d.feed(s.control(s.frame(Fcf.RR)))
    assert names(d)[-1] == "MCF"
    assert len(of(d.events, PageReceived)) == 1
    # Not ready for longer than T5: the call ends.
    d.events += d.engine.set_receiver_ready(False, d.now)
    d.feed(s.ecm_burst(Modulation.V17_14400, frames))
    d.feed(s.pps(Fcf.EOP | 1, 1, 0, len(frames)))
    d.wait(70.0)
    assert of(d.events, CallEnded)[0].result is T30Result.RX_T5EXP


def test_dtc_asks_to_poll_and_is_refused():
    d = engine()
    d.wait(6.0)
    d.feed(s.control(s.frame(Fcf.DTC, b"\x00\x00\x00")))
    assert of(d.events, CallEnded)[0].result is T30Result.NO_POLL
    assert names(d)[-1] == "DCN"


def test_dcs_for_a_mode_not_offered_is_refused():
    from t38gw.t30.dcs import BIT_T6, ReceiveCapabilities

    d = engine(capabilities=ReceiveCapabilities(compressions=frozenset({Compression.MH})))
    d.wait(6.0)
    d.feed(s.dcs_sequence(Modulation.V17_14400, ecm=True, compression=Compression.MMR))
    assert of(d.events, CallEnded)[0].result is T30Result.INCOMPATIBLE
    assert BIT_T6 == 31


@pytest.mark.parametrize(
    "height,bad,run,expected",
    [
        (100, 0, 0, PageQuality.GOOD),
        (100, 1, 1, PageQuality.GOOD),
        (100, 2, 1, PageQuality.POOR),  # 2 % is no longer "under 2 %"
        (1000, 19, 3, PageQuality.GOOD),
        (1000, 19, 4, PageQuality.POOR),
        (1000, 49, 15, PageQuality.POOR),
        (1000, 50, 1, PageQuality.BAD),
        (1000, 10, 16, PageQuality.BAD),
        (0, 0, 0, PageQuality.BAD),
    ],
)
def test_copy_quality_thresholds(height, bad, run, expected):
    assert judge_quality(height, bad, run) is expected


def test_unexpected_command_is_logged_not_raised():
    d = engine()
    d.wait(6.0)
    d.feed(s.control(s.frame(Fcf.MCF)))
    assert any("unexpected MCF" in e.what for e in of(d.events, ProtocolEventLogged))
    assert d.engine.state is State.ANSWERING


def test_lost_ifps_make_the_frame_in_progress_bad(page):
    d = engine()
    trained(d)
    bitmap, coded = page
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    packets = s.control(s.frame(Fcf.MPS))
    d.feed(packets[:2])
    d.events += d.engine.ifps_lost(1, d.now)
    d.feed(packets[2:])
    d.flush()
    assert names(d)[-1] == "CFR"  # a damaged command gets no answer; the sender repeats it
    assert d.engine.counters["bad_frames"] == 1


def test_repeated_indicators_and_end_packets_count_once(page):
    bitmap, coded = page
    d = engine()
    trained(d)
    packets = s.image_carrier(Modulation.V17_14400, coded[Compression.MH])
    tripled = [packets[0]] * 3 + packets[1:-1] + [packets[-1]] * 3
    d.feed(tripled)
    post = s.control(s.frame(Fcf.EOP))
    d.feed([post[0]] * 3 + post[1:-2] + [post[-2]] * 3 + [post[-1]] * 3)
    assert names(d).count("MCF") == 1
    assert len(of(d.events, PageReceived)) == 1
    assert FieldType.HDLC_FCS_OK_SIG_END in {f.field_type for p in post for f in p.fields or ()}


def test_tcf_whose_end_was_lost_is_judged_once_the_data_stops():
    d = engine()
    d.wait(6.0)
    d.feed(s.dcs_sequence(Modulation.V17_14400))
    d.feed(s.tcf(Modulation.V17_14400)[:-1])  # no sig-end
    assert "CFR" not in names(d)
    d.wait(0.6)
    assert names(d)[-1] == "CFR"


def test_stale_tcf_is_not_answered_when_the_sender_already_repeats_dcs():
    d = engine()
    d.wait(6.0)
    d.feed(s.dcs_sequence(Modulation.V17_14400))
    d.feed(s.tcf(Modulation.V17_14400)[:-1], spacing=0.001)
    d.feed(s.dcs_sequence(Modulation.V17_14400), spacing=0.001)  # before TCF_END fires
    assert "CFR" not in names(d)
    d.feed(s.tcf(Modulation.V17_14400))
    assert names(d).count("CFR") == 1


def test_an_endless_page_ends_the_call_at_max_page_rows():
    row = s.coded_page(bytes(216), WIDTH, 1, Compression.MH)[:-9]  # one EOL-led row, no RTC
    d = engine(max_page_rows=50)
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, row * 400, chunk=500))
    d.flush()
    assert not of(d.events, PageReceived) and names(d)[-1] == "DCN"
    (ended,) = of(d.events, CallEnded)
    assert ended.result is T30Result.LIMIT_REACHED and "50 rows" in ended.reason
    assert d.engine._decoder is None  # nothing more is held


def test_ecm_commands_in_a_non_ecm_call_are_logged_not_obeyed(page):
    d = engine()
    trained(d)
    for packets in (s.pps(Fcf.MPS | 1, 0, 0, 3), s.control(s.frame(Fcf.CTC, b"\x00\x08")),
                    s.control(s.frame(Fcf.EOR, bytes([Fcf.EOP | 1])))):
        d.feed(packets)
    assert not of(d.events, PageReceived)
    assert names(d)[-1] == "CFR" and d.engine.counters["unexpected"] == 3


def test_eom_answered_rtn_also_returns_to_phase_b(page):
    bitmap, coded = page
    data = bytearray(coded[Compression.MH])
    for i in range(40, len(data) - 40, 7):
        data[i] ^= 0x5A
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, bytes(data)))
    d.feed(s.control(s.frame(Fcf.EOM)))
    d.wait(9.0)
    d.flush()
    assert names(d)[-3:] == ["RTN", "CSI", "DIS"]
    assert d.engine.state is State.ANSWERING and not of(d.events, DocumentEnded)


def test_repeated_eom_gets_mcf_again_not_dis(page):
    bitmap, coded = page
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.EOM)))
    d.wait(3.5)
    d.feed(s.control(s.frame(Fcf.EOM)))  # the sender missed our MCF
    d.flush()
    assert names(d)[-2:] == ["MCF", "MCF"]  # TSB-85 MRGN16
    assert len(of(d.events, PageReceived)) == 1 and len(of(d.events, DocumentEnded)) == 1


def test_a_command_repeated_while_our_answer_is_still_going_out_is_answered_once(page):
    # A repeat that crosses our response (it was late on the network) must not get a
    # second copy: that one would reach the sender after it moved on to its next page.
    bitmap, coded = page
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.MPS)))
    d.feed(s.control(s.frame(Fcf.MPS)), spacing=0.01)
    d.flush()
    assert names(d).count("MCF") == 1 and len(of(d.events, PageReceived)) == 1


def test_page_limit_confirms_the_page_that_reaches_it_then_disconnects(page):
    bitmap, coded = page
    d = engine(max_pages=2)
    trained(d)
    for _ in range(2):
        d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
        d.feed(s.control(s.frame(Fcf.MPS)))  # "more pages follow"
        d.wait(3.0)
    d.flush()
    assert names(d)[-3:] == ["MCF", "MCF", "DCN"]
    assert [p.number for p in of(d.events, PageReceived)] == [1, 2]
    assert of(d.events, CallEnded) == [CallEnded(T30Result.LIMIT_REACHED, 2, "page limit of 2 pages per call reached")]


def test_page_limit_reached_by_the_last_page_is_a_normal_end(page):
    bitmap, coded = page
    d = engine(max_pages=1)
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.EOP)))
    d.feed(s.control(s.frame(Fcf.DCN)))
    assert of(d.events, CallEnded)[0].result is T30Result.OK


def test_ecm_page_with_too_many_blocks_is_not_confirmed(page):
    bitmap, coded = page
    frames = s.ecm_frames(coded[Compression.MMR], 64)
    d = ecm_setup(64)
    d.engine.config = ReceiverConfig(local_ident="+1 555 0100", max_ecm_blocks_per_page=2)
    for block in range(3):
        d.feed(s.ecm_burst(Modulation.V17_14400, dict(enumerate(frames[:4]))))
        d.feed(s.pps(PPS_NULL, 0, block, 4))
    d.flush()
    assert names(d)[-3:] == ["MCF", "MCF", "DCN"]
    assert not of(d.events, PageReceived)
    (ended,) = of(d.events, CallEnded)
    assert ended.result is T30Result.LIMIT_REACHED and "2 ECM blocks" in ended.reason


def test_non_ecm_page_with_unrecovered_loss_is_answered_rtn_with_its_best_copy(page):
    # Issue 9 item 10 / T.30 5.3.6.2: rows lost with IFPs cannot be counted by the decoder;
    # RTN makes the sender retrain and (SpanDSP does) send the page again.
    bitmap, coded = page
    d = engine()
    trained(d)
    packets = s.image_carrier(Modulation.V17_14400, coded[Compression.MH], chunk=100)
    middle = len(packets) // 2
    d.feed(packets[:middle])
    d.events += d.engine.ifps_lost(2, d.now)
    d.feed(packets[middle + 2:])
    d.feed(s.control(s.frame(Fcf.MPS)))
    d.flush()
    assert names(d)[-1] == "RTN"
    assert not of(d.events, PageReceived)
    (rejected,) = of(d.events, PageRejected)
    assert rejected.number == 1 and rejected.bitmap is not None and rejected.bitmap != bitmap
    assert rejected.ifp_loss_gaps == 1 and not rejected.ecm
    received_ifps = len(packets) - 3  # data packets fed (one indicator, two lost)
    assert rejected.rows_lost_estimate == -(-rejected.height * 2 // received_ifps)
    assert (rejected.width, rejected.x_dpi, rejected.y_dpi, rejected.compression) == (WIDTH, 204, 98, "mh")
    # The sender retrains and sends the page again: confirmed under the same number.
    d.wait(2.0)
    d.feed(s.dcs_sequence(Modulation.V17_12000))
    d.feed(s.tcf(Modulation.V17_12000))
    d.feed(s.image_carrier(Modulation.V17_12000, coded[Compression.MH]))
    d.feed(s.control(s.frame(Fcf.EOP)))
    (got,) = of(d.events, PageReceived)
    assert got.number == 1 and got.bitmap == bitmap and got.ifp_loss_gaps == 0



def test_poor_page_without_ifp_loss_keeps_the_rtp_rule(page):
    # Only unrecovered UDPTL loss turns a page into RTN; a page the decoder repaired a few
    # rows of (no IFP lost) is still kept and answered RTP (quality thresholds above).
    bitmap, coded = page
    data = bytearray(coded[Compression.MH])
    for fraction in (0.25, 0.5, 0.75):
        data[int(len(data) * fraction)] ^= 0xFF
    d = engine()
    trained(d)
    d.feed(s.image_carrier(Modulation.V17_14400, bytes(data)))
    d.feed(s.control(s.frame(Fcf.EOP)))
    d.flush()
    (got,) = of(d.events, PageReceived)
    assert got.ifp_loss_gaps == 0 and got.bad_rows > 0
    assert names(d)[-1] == got.quality.value and got.quality is not PageQuality.BAD


def test_ifps_lost_after_the_pages_rtc_lose_no_row(page):
    # The end-of-data packets go out several times and any of them may be lost; once the
    # decoder has seen RTC nothing the page needs can be in them.
    bitmap, coded = page
    d = engine()
    trained(d)
    packets = s.image_carrier(Modulation.V17_14400, coded[Compression.MH] + bytes(300), chunk=100)
    d.feed(packets[:-1])
    d.events += d.engine.ifps_lost(2, d.now)
    d.feed(packets[-1:])
    d.feed(s.control(s.frame(Fcf.EOP)))
    d.flush()
    assert names(d)[-1] == "MCF"
    (got,) = of(d.events, PageReceived)
    assert got.bitmap == bitmap and got.ifp_loss_gaps == 0


def test_ecm_pps_that_skips_a_block_is_not_confirmed(page):
    # T.30 A.4.1 numbering: confirming block 1 of a page whose block 0 we never took would
    # tell the sender we hold a page we do not have.
    bitmap, coded = page
    frames = s.ecm_frames(coded[Compression.MMR], 64)
    d = ecm_setup(64)
    d.feed(s.ecm_burst(Modulation.V17_14400, dict(enumerate(frames))))
    d.feed(s.pps(Fcf.EOP | 1, 0, 1, len(frames)))
    d.flush()
    assert names(d)[-1] == "DCN" and not of(d.events, PageReceived)
    assert of(d.events, CallEnded)[0].result is T30Result.RX_ECMPHD


def test_ecm_next_page_after_a_page_answered_err_is_taken(page):
    bitmap, coded = page
    frames = dict(enumerate(s.ecm_frames(coded[Compression.MMR], 64)))
    d = ecm_setup(64)
    d.feed(s.ecm_burst(Modulation.V17_14400, {n: f for n, f in frames.items() if n != 1}))
    d.feed(s.pps(Fcf.MPS | 1, 0, 0, len(frames)))
    d.wait(1.5)
    d.feed(s.control(s.frame(Fcf.EOR, bytes([Fcf.MPS | 1]))))
    d.wait(1.5)
    d.feed(s.ecm_burst(Modulation.V17_14400, frames))  # the sender's page 1
    d.feed(s.pps(Fcf.EOP | 1, 1, 0, len(frames)))
    d.feed(s.control(s.frame(Fcf.DCN)))
    # The ECM page numbers say the sender went on to its next page: that page is number 2,
    # and the rejected one stays number 1 (a consumer must not take 2 for a resend of 1).
    assert [e.number for e in of(d.events, PageRejected)] == [1]
    (got,) = of(d.events, PageReceived)
    assert got.number == 2 and got.bitmap == bitmap
    assert of(d.events, CallEnded)[0].result is T30Result.OK


def test_sender_going_on_after_rtn_leaves_the_rejected_page_its_number(page):
    # T.30 5.3.6.2.8 lets a sender answer RTN to MPS with its next page instead of a resend;
    # the next page must not take the rejected page's number (a consumer would drop the
    # rejected copy as replaced).
    bitmap, coded = page
    other = random_bitmap(random.Random(8), WIDTH, HEIGHT)
    d = engine()
    trained(d)
    packets = s.image_carrier(Modulation.V17_14400, coded[Compression.MH], chunk=100)
    middle = len(packets) // 2
    d.feed(packets[:middle])
    d.events += d.engine.ifps_lost(1, d.now)
    d.feed(packets[middle + 1:])
    d.feed(s.control(s.frame(Fcf.MPS)))
    d.wait(2.0)
    d.feed(s.dcs_sequence(Modulation.V17_12000))
    d.feed(s.tcf(Modulation.V17_12000))
    d.feed(s.image_carrier(Modulation.V17_12000, s.coded_page(other, WIDTH, HEIGHT, Compression.MH)))
    d.feed(s.control(s.frame(Fcf.EOP)))
    assert [e.number for e in of(d.events, PageRejected)] == [1]
    (got,) = of(d.events, PageReceived)
    assert got.number == 2 and got.bitmap == other


def test_ecm_page_keeping_a_block_taken_after_eor_is_not_reported_received(page):
    # EOR-NULL / ERR, then the sender goes on with the page's next block: the page has
    # frames missing, so it is no PageReceived, though the last block gets its MCF.
    bitmap, coded = page
    frames = s.ecm_frames(coded[Compression.MMR], 64)
    half = len(frames) // 2
    d = ecm_setup(64)
    d.feed(s.ecm_burst(Modulation.V17_14400, {n: f for n, f in enumerate(frames[:half]) if n != 1}))
    d.feed(s.pps(PPS_NULL, 0, 0, half))
    d.wait(1.5)
    d.feed(s.control(s.frame(Fcf.EOR, bytes([PPS_NULL]))))
    d.wait(1.5)
    d.feed(s.ecm_burst(Modulation.V17_14400, dict(enumerate(frames[half:]))))
    d.feed(s.pps(Fcf.EOP | 1, 0, 1, len(frames) - half))
    d.flush()
    assert names(d)[-3:] == ["PPR", "ERR", "MCF"]
    assert not of(d.events, PageReceived)
    (rejected,) = of(d.events, PageRejected)
    assert rejected.number == 1 and rejected.ecm


def _unreadable_dcs(kind: str) -> bytes:
    fif = bytearray(build_dcs(Modulation.V27TER_2400))
    if kind == "short":
        return bytes(fif[:2])
    if kind == "modem":
        fif[1] |= 1 << ((13 - 1) & 7)  # T.30 Table 2 bits 11-14 = 0010: reserved
    else:
        fif[2] |= (1 << ((17 - 1) & 7)) | (1 << ((18 - 1) & 7))  # bits 17-18 = 11: invalid
    return bytes(fif)


@pytest.mark.parametrize("kind", ["short", "modem", "width"])
def test_unreadable_dcs_while_answering_gets_dis_again_then_a_good_one_trains(kind):
    # T.30 Figure 5-2: a command the called terminal cannot read is answered by DIS again
    # (as a garbled DCS, TSB-85 MRGN11), after the TCF that follows it.
    d = engine()
    d.wait(6.0)
    dis_before = names(d).count("DIS")
    d.feed(s.control(s.frame(Fcf.DCS, _unreadable_dcs(kind))))
    d.feed(s.tcf(Modulation.V27TER_2400))
    d.wait(1.0)
    assert not of(d.events, CallEnded)
    assert d.engine.state is State.ANSWERING
    assert names(d).count("DIS") == dis_before + 1 and "FTT" not in names(d) and "CFR" not in names(d)
    assert any("bad DCS" in e.what for e in of(d.events, ProtocolEventLogged))
    d.feed(s.dcs_sequence(Modulation.V17_14400))
    d.feed(s.tcf(Modulation.V17_14400))
    assert names(d)[-1] == "CFR" and of(d.events, PhaseBCompleted)


def test_a_sender_that_only_sends_unreadable_dcs_is_disconnected_after_three_dis():
    d = engine()
    d.wait(6.0)
    for _ in range(4):
        d.feed(s.control(s.frame(Fcf.DCS, _unreadable_dcs("modem"))))
        d.wait(3.5)
    d.wait(10.0)
    (ended,) = of(d.events, CallEnded)
    assert ended.result is T30Result.RETRYDCN and names(d)[-1] == "DCN"


def test_unreadable_dcs_after_ftt_gets_no_answer():
    # Outside phase B's DIS, an unreadable command gets silence (TSB-85 MRGN17); the
    # sender repeats it, here with a good DCS.
    d = engine()
    d.wait(6.0)
    d.feed(s.dcs_sequence(Modulation.V17_14400))
    d.feed(s.tcf(Modulation.V17_14400, good=False))
    assert names(d)[-1] == "FTT" and d.engine.state is State.AWAIT_DCS
    sent = len(names(d))
    d.feed(s.control(s.frame(Fcf.DCS, _unreadable_dcs("short"))))
    d.wait(2.0)
    assert len(names(d)) == sent and d.engine.state is State.AWAIT_DCS and not of(d.events, CallEnded)
    d.feed(s.dcs_sequence(Modulation.V17_9600))
    d.feed(s.tcf(Modulation.V17_9600))
    assert names(d)[-1] == "CFR"
