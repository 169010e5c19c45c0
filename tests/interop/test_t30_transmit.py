"""Our T.30 transmit engine calls a SpanDSP T.38 terminal that receives (ctypes), in
simulated time, over our UDPTL and IFP codec: SpanDSP must report T30_ERR_OK and the
pages it wrote must equal ours pixel for pixel.

The matrix: ECM on/off x MH/MR/MMR (MMR only with ECM, T.30 Table 2 note 9) x standard/
fine x 1 and 3 pages x clean / 10 % loss each way with redundancy 3.  Then SpanDSP
refusing modes (no ECM, V.29 only, standard only) so that our engine must fall back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import imaging
from t38gw.t30 import CallEnded, Event, PhaseBCompleted, T30Result
from t38gw.t30.dcs import Compression
from t38gw.t30.events import PageSent
from t38gw.t30.t38_io import split_to_fit
from t38gw.t30.transmitter import T30Transmitter, TransmitterConfig
from tests.peers.spandsp import T30_ERR_OK, SpandspT38Terminal, read_fax_tiff
from tests.t38gw.t30.harness import Channel, _Link, perfect_channel
from tests.t38gw.t30.pages import random_page
from t38gw.t30.frames import REVERSE_BITS, Fcf
from udptl.impairment import Impairment
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator
from udptl.receiver import IfpReceived

_TRAINING = frozenset(i for i in T30Indicator if i.name.endswith("TRAINING"))
#: The FCD control field as T.38 carries it (each octet MSB first).
FCD_WIRE = int(Fcf.FCD).to_bytes(1, "big").translate(REVERSE_BITS)[0]

TICK = 0.02
SAMPLES_PER_TICK = 160


def make_pages(count: int, *, y_dpi: float, height: int = 80, seed: int = 21) -> list[imaging.Page]:
    rng = random.Random(seed)
    return [imaging.Page(1728, height, 204, y_dpi, random_page(rng, 1728, height)) for _ in range(count)]


class LossyChannel:
    def __init__(self, loss: float, seed: int) -> None:
        self.loss = loss
        self.rng = random.Random(seed)

    def __call__(self, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        return [] if self.rng.random() < self.loss else [(now + 0.01, datagram)]


@dataclass
class TransmitOutcome:
    status: int | None
    events: list[Event]
    engine: T30Transmitter
    received: list[tuple[bytes, int, int, float, float]]
    sim_seconds: float
    spandsp_frames: list = field(default_factory=list)
    unrecovered_to_spandsp: int = 0  # IFPs towards SpanDSP that UDPTL could not recover
    wrong_deliveries: int = 0  # IFPs UDPTL delivered (either way) under a seq that carried other bytes
    hung_up: bool = False  # SpanDSP's call was ended ``hang_up_after`` s after ours (BYE)
    cpu: float = 0.0  # process CPU seconds of the call's simulation

    @property
    def ended(self) -> CallEnded:
        found = [e for e in self.events if isinstance(e, CallEnded)]
        assert len(found) == 1, self.events[-5:]
        return found[0]

    @property
    def phase_b(self) -> PhaseBCompleted:
        return [e for e in self.events if isinstance(e, PhaseBCompleted)][0]


def send_to_spandsp(tmp_path, pages, *, config: TransmitterConfig | None = None, loss: float = 0.0,
                    redundancy: int = 0, seed: int = 1, loss_back: float | None = None,
                    burst_fec: bool = False, version: int = 0, max_sim_seconds: float = 600.0,
                    receiver_options: dict | None = None, tamper=None,
                    paths: tuple[Channel, Channel] | None = None, fec: bool = False,
                    hang_up_after: float | None = None,
                    log: Callable[[float, int, str], None] | None = None) -> TransmitOutcome:
    """``tamper(packet, now)`` may replace (or drop: None) each IFP our engine sends.

    ``paths``, (towards SpanDSP, towards our engine), replaces the channels that ``loss``,
    ``loss_back`` and ``burst_fec`` make, and draws nothing from ``seed`` for them (the
    impairment bench passes its ``udptl.impairment`` models); ``fec`` turns UDPTL FEC on
    both ways (``burst_fec`` does too).  ``hang_up_after``: SpanDSP's call is ended
    (t30_terminate, as the gateway's BYE would end it) once it is still going that many
    simulated seconds after our engine finished.  ``log(now, level, text)`` gets SpanDSP's
    log lines."""
    rng = random.Random(seed)
    if paths is not None:
        to_rx, to_tx = paths
    else:
        to_rx = LossyChannel(loss, rng.randrange(1 << 30)) if loss else perfect_channel
        back = loss if loss_back is None else loss_back
        to_tx = LossyChannel(back, rng.randrange(1 << 30)) if back else perfect_channel
        if burst_fec:
            # Gilbert-Elliott bursts of 2 datagrams on average, entered every ~50 datagrams
            # (the receive matrix's burst link), with UDPTL FEC, towards SpanDSP.  The way back
            # stays clean: SpanDSP sends a V.21 frame an octet or two per IFP, so a burst FEC
            # cannot repair garbles its CFR; we then repeat DCS after T4 as T.30 asks, and
            # SpanDSP 0.0.6 answers a DCS after its CFR with DCN ("Unexpected DCS frame").
            to_rx = Impairment(random.Random(rng.random()), burst_loss=(0.02, 0.5)).transmit
    fec = fec or burst_fec
    to_spandsp = _Link(version, to_rx, random.Random(rng.random()), redundancy=redundancy, fec=fec)
    to_engine = _Link(version, to_tx, random.Random(rng.random()), redundancy=redundancy, fec=fec)
    engine = T30Transmitter(config or TransmitterConfig(local_ident="+1 555 0199"), pages)
    rx_tiff = tmp_path / f"rx-{seed}-{rng.random()}.tif"
    now = 0.0

    def on_ifp(ifp: bytes, count: int) -> None:
        for _ in range(max(count, 1)):
            to_engine.send(ifp, now)

    events: list[Event] = []
    unrecovered = 0
    finished_at: float | None = None
    hung_up = False
    options = dict(receiver_options or {})
    if log is not None:
        options["log"] = lambda level, text: log(now, level, text)
    started = time.process_time()
    with SpandspT38Terminal(calling_party=False, on_ifp=on_ifp, version=version, ident="+1 555 0100",
                            rx_tiff=rx_tiff, **options) as spandsp:
        events.extend(engine.start(0.0))
        for tick in range(int(max_sim_seconds / TICK)):
            now = tick * TICK
            for item in to_engine.deliver(now):
                if isinstance(item, IfpReceived) and item.packet is not None:
                    events.extend(engine.ifp_received(item.packet, now))
                else:
                    events.extend(engine.ifps_lost(1 if isinstance(item, IfpReceived) else len(item.seqs), now))
            deadline = engine.next_deadline()
            if deadline is not None and deadline <= now:
                events.extend(engine.handle_timer(now))
            for out in engine.ifps_to_send(now):
                packet = tamper(out.packet, now) if tamper is not None else out.packet
                if packet is None:
                    continue
                for raw in split_to_fit(packet, version, to_spandsp.sender.max_ifp):
                    for _ in range(out.repeat):
                        to_spandsp.send(raw, now)
            for item in to_spandsp.deliver(now):
                if isinstance(item, IfpReceived):
                    spandsp.rx_ifp(item.raw, item.seq)
                else:
                    unrecovered += len(item.seqs)
            if engine.finished and spandsp.phase_e_status is not None:
                break
            if hang_up_after is not None:
                if engine.finished and finished_at is None:
                    finished_at = now
                if finished_at is not None and now - finished_at > hang_up_after and spandsp.phase_e_status is None:
                    # Our side is done: the gateway sends BYE, the far end's call ends with it.
                    spandsp.terminate()
                    hung_up = True
            spandsp.advance(SAMPLES_PER_TICK)
        status = spandsp.phase_e_status
        frames = list(spandsp.frames)
    cpu = time.process_time() - started
    received = read_fax_tiff(rx_tiff) if rx_tiff.exists() else []
    return TransmitOutcome(status, events, engine, received, now, frames, unrecovered,
                           to_spandsp.wrong_deliveries + to_engine.wrong_deliveries, hung_up, cpu)


def assert_received_equal(outcome: TransmitOutcome, pages: list[imaging.Page]) -> None:
    assert len(outcome.received) == len(pages)
    for (bitmap, width, height, _x, _y), page in zip(outcome.received, pages):
        assert (width, height) == (page.width, page.height)
        assert bitmap == page.bitmap


_CODINGS = [(True, Compression.MH), (True, Compression.MR), (True, Compression.MMR),
            (False, Compression.MH), (False, Compression.MR)]


_RESOLUTION_NAMES = {98: "standard", 196: "fine", 391: "superfine"}
#: ECM on/off x MH/MR/MMR x standard/fine/superfine x 1, 3 and 5 pages x clean / 10 % loss
#: with redundancy 3 / burst loss with FEC; 5-page calls impaired only at fine resolution.
CELLS = [
    pytest.param(ecm, compression, y_dpi, pages, link,
                 id=f"{'ecm' if ecm else 'noecm'}-{compression.value}-{_RESOLUTION_NAMES[y_dpi]}-{pages}-{link}")
    for ecm, compression in _CODINGS
    for y_dpi in (98, 196, 391)
    for pages in (1, 3, 5)
    for link in ("clean", "loss10-red3", "burst-fec")
    if not (pages == 5 and link != "clean" and y_dpi != 196)
]


@pytest.mark.parametrize(("ecm", "compression", "y_dpi", "page_count", "link"), CELLS)
def test_matrix_spandsp_receives_our_pages(tmp_path, ecm, compression, y_dpi, page_count, link) -> None:
    pages = make_pages(page_count, y_dpi=y_dpi, seed=page_count * 7 + y_dpi)
    config = TransmitterConfig(local_ident="+1 555 0199", ecm=ecm, compressions=frozenset({compression}))
    impaired = link == "loss10-red3"
    outcome = send_to_spandsp(tmp_path, pages, config=config, loss=0.1 if impaired else 0.0,
                              redundancy=3 if impaired else 0, burst_fec=link == "burst-fec",
                              seed=y_dpi + page_count + len(link))
    assert outcome.status == T30_ERR_OK, SpandspT38Terminal.completion_code_name(outcome.status or -1)
    assert outcome.ended.result is T30Result.OK, outcome.ended
    phase_b = outcome.phase_b
    assert (phase_b.ecm, phase_b.compression, phase_b.y_dpi) == (ecm, compression.value, y_dpi)
    if not ecm and outcome.unrecovered_to_spandsp:
        # Non-ECM has no retransmission: image data UDPTL could not recover is gone, and
        # SpanDSP may still confirm the page (its own quality judgement).  Every page arrived.
        assert len(outcome.received) == len(pages)
        return
    assert_received_equal(outcome, pages)


def test_spandsp_without_ecm_gets_non_ecm_mr(tmp_path) -> None:
    pages = make_pages(2, y_dpi=196)
    outcome = send_to_spandsp(tmp_path, pages, receiver_options={"ecm": False})
    assert outcome.status == T30_ERR_OK
    assert (outcome.phase_b.ecm, outcome.phase_b.compression) == (False, "mr")
    assert_received_equal(outcome, pages)


def test_spandsp_v29_only_gets_9600(tmp_path) -> None:
    pages = make_pages(1, y_dpi=98)
    outcome = send_to_spandsp(tmp_path, pages, receiver_options={"max_bitrate": 9600})
    assert outcome.status == T30_ERR_OK
    assert (outcome.phase_b.modem, outcome.phase_b.bit_rate) == ("V.29", 9600)
    assert_received_equal(outcome, pages)


def test_spandsp_mh_only(tmp_path) -> None:
    pages = make_pages(1, y_dpi=196)
    outcome = send_to_spandsp(tmp_path, pages, receiver_options={"compressions": frozenset({"mh"}), "ecm": False})
    assert outcome.status == T30_ERR_OK
    assert (outcome.phase_b.ecm, outcome.phase_b.compression) == (False, "mh")
    assert_received_equal(outcome, pages)


def test_spandsp_ecm_under_heavy_loss_ppr(tmp_path) -> None:
    """5 % loss towards SpanDSP, no redundancy: FCD frames go missing, SpanDSP sends PPR, we
    resend those.  (Its own responses travel clean: SpanDSP sends V.21 frames an octet or
    two per IFP, so 5 % loss without redundancy garbles most of them.)"""
    pages = make_pages(1, y_dpi=196, height=400)
    outcome = send_to_spandsp(tmp_path, pages, loss=0.05, loss_back=0.0, seed=4)
    assert outcome.status == T30_ERR_OK, SpandspT38Terminal.completion_code_name(outcome.status or -1)
    assert outcome.engine.counters["ppr_received"] >= 1
    assert_received_equal(outcome, pages)
    sent = [e for e in outcome.events if isinstance(e, PageSent)]
    assert [s.response for s in sent] == ["MCF"]


# ---------------------------------------------------------------------- SpanDSP pushes back
def _data_field(packet):
    return packet.fields[0] if packet.fields else None


def test_ftt_at_14400_falls_back_one_step(tmp_path) -> None:
    """The TCF at V.17 14.4k arrives as ones (a line too noisy for it): SpanDSP answers FTT
    and our engine trains again one step down (T.30 Annex A.2), at 12k."""
    pages = make_pages(1, y_dpi=98)

    def damage_tcf_14400(packet, now):
        field = _data_field(packet)
        if packet.msg is T30Data.V17_14400 and field is not None and field.field_type is FieldType.T4_NON_ECM_DATA:
            return IfpPacket(packet.msg, (DataField(FieldType.T4_NON_ECM_DATA, b"\xff" * len(field.data)),))
        return packet

    outcome = send_to_spandsp(tmp_path, pages, tamper=damage_tcf_14400)
    assert outcome.status == T30_ERR_OK
    assert outcome.engine.counters["ftt_received"] == 1
    assert [f for d, f in outcome.spandsp_frames if d == "tx" and f[2] & 0xFE == Fcf.FTT]
    assert (outcome.phase_b.modem, outcome.phase_b.bit_rate) == ("V.17", 12000)
    assert_received_equal(outcome, pages)


def test_rtn_once_resends_the_page(tmp_path) -> None:
    """The first copy of page 1 (non-ECM) arrives as garbage: SpanDSP answers RTN; our engine
    retrains and sends the page again, which SpanDSP confirms."""
    pages = make_pages(2, y_dpi=196)
    state = {"pages_started": 0, "damaging": False}

    def damage_first_page(packet, now):
        if isinstance(packet.msg, T30Indicator) and packet.msg in _TRAINING:
            state["pages_started"] += 1
        field = _data_field(packet)
        # Training indicators: 1 = TCF, 2 = the first page (each repeated 3 times, counted once).
        if field is not None and field.field_type is FieldType.T4_NON_ECM_DATA and state["pages_started"] == 2:
            return IfpPacket(packet.msg, (DataField(FieldType.T4_NON_ECM_DATA, bytes(len(field.data))),))
        return packet

    config = TransmitterConfig(ecm=False, compressions=frozenset({Compression.MR}))
    outcome = send_to_spandsp(tmp_path, pages, config=config, tamper=damage_first_page)
    assert outcome.status == T30_ERR_OK, SpandspT38Terminal.completion_code_name(outcome.status or -1)
    sent = [(e.number, e.response) for e in outcome.events if isinstance(e, PageSent)]
    assert sent == [(1, "RTN"), (1, "MCF"), (2, "MCF")]
    assert_received_equal(outcome, pages)


def test_ppr_resends_exactly_the_frames_listed(tmp_path) -> None:
    """FCD frames 2 and 5 of the first block are lost: SpanDSP's PPR lists them and our
    second burst carries exactly frames 2 and 5 (T.30 A.4.2)."""
    pages = make_pages(1, y_dpi=196, height=300)
    bursts: list[list[int]] = []

    def drop_frames(packet, now):
        field = _data_field(packet)
        if isinstance(packet.msg, T30Indicator) and packet.msg in _TRAINING:
            bursts.append([])
        if packet.msg is not T30Data.V21 and field is not None and field.field_type is FieldType.HDLC_DATA:
            frame = field.data
            if frame[2] == FCD_WIRE:
                number = frame[3:4].translate(REVERSE_BITS)[0]
                bursts[-1].append(number)
                if len([b for b in bursts if b]) == 1 and number in (2, 5):
                    return None
        return packet

    config = TransmitterConfig(compressions=frozenset({Compression.MR}), ecm_frame_size=64)
    outcome = send_to_spandsp(tmp_path, pages, config=config, tamper=drop_frames)
    assert outcome.status == T30_ERR_OK, SpandspT38Terminal.completion_code_name(outcome.status or -1)
    bursts = [b for b in bursts if b]  # the TCF's training carried no frames
    assert len(bursts) == 2 and len(bursts[0]) > 6
    assert bursts[1] == [2, 5]
    assert outcome.engine.counters["ppr_received"] == 1
    assert_received_equal(outcome, pages)


def test_ppr_four_times_ctc_then_eor(tmp_path) -> None:
    """FCD frame 2 never gets through: SpanDSP sends PPR naming it; each retransmission
    carries frame 2 alone; after the 4th PPR we send CTC at 2400 (SpanDSP answers CTR),
    after 4 more at the lowest rate EOR-EOP (SpanDSP answers ERR), and we end RETRYDCN."""
    pages = make_pages(1, y_dpi=98, height=200)
    bursts: list[list[int]] = []

    def drop_frame_2(packet, now):
        field = _data_field(packet)
        if isinstance(packet.msg, T30Indicator) and packet.msg in _TRAINING:
            bursts.append([])
        if packet.msg is not T30Data.V21 and field is not None and field.field_type is FieldType.HDLC_DATA:
            frame = field.data
            if len(frame) > 3 and frame[2] == FCD_WIRE:
                number = frame[3:4].translate(REVERSE_BITS)[0]
                bursts[-1].append(number)
                if number == 2:
                    return None
        return packet

    config = TransmitterConfig(max_bit_rate=4800, ecm_frame_size=64)
    outcome = send_to_spandsp(tmp_path, pages, config=config, tamper=drop_frame_2)
    counters = outcome.engine.counters
    assert (counters["ppr_received"], counters["ctc_sent"], counters["eor_sent"]) == (8, 1, 1)
    bursts = [b for b in bursts if b]
    assert len(bursts) == 8 and len(bursts[0]) > 10
    assert all(b == [2] for b in bursts[1:])  # T.30 A.4.2: exactly the frame the PPR lists
    sent_by_spandsp = [f[2] & 0xFE for d, f in outcome.spandsp_frames if d == "tx"]  # T.30 order
    assert Fcf.CTR in sent_by_spandsp and Fcf.ERR in sent_by_spandsp
    assert outcome.ended.result is T30Result.RETRYDCN
    assert [(e.response, e.confirmed) for e in outcome.events if isinstance(e, PageSent)] == [("ERR", False)]


@pytest.mark.parametrize("compression", [Compression.MH, Compression.MR])
def test_minimum_scan_line_time_honoured(tmp_path, compression) -> None:
    """SpanDSP's DIS asks for 20 ms per scan line: our DCS says 20 ms and every coded line
    carries fill up to 20 ms at the modem rate (T.4 4.1.3); SpanDSP takes the pages."""
    from t38gw.t30.dcs import parse_dcs

    pages = make_pages(2, y_dpi=98, height=60)
    config = TransmitterConfig(ecm=False, compressions=frozenset({compression}))
    outcome = send_to_spandsp(tmp_path, pages, config=config, receiver_options={"min_scan_line_time_ms": 20})
    assert outcome.status == T30_ERR_OK, SpandspT38Terminal.completion_code_name(outcome.status or -1)
    dcs = [f for d, f in outcome.spandsp_frames if d == "rx" and f[2] & 0xFE == Fcf.DCS]
    assert dcs and parse_dcs(dcs[-1][3:]).min_scan_time_ms == 20
    assert outcome.engine.mode is not None and outcome.engine.mode.scan_time_ms == 20
    # The page as coded for that rate lasts at least 20 ms per line.
    from t38gw.t30.transmitter import code_page

    data = code_page(pages[0].bitmap, 1728, outcome.engine.mode, outcome.engine.modem)
    assert len(data) * 8 >= 60 * outcome.phase_b.bit_rate * 20 // 1000
    assert_received_equal(outcome, pages)
