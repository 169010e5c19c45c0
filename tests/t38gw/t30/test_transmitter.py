"""The T.30 transmit engine against our own receive engine, in simulated time.

Both engines talk through our UDPTL sender/receiver and the IFP codec (real bytes), over
a perfect or lossy channel (tests/t38gw/t30/harness.py's ``_Link``).  The pages the
receiver confirms must equal the pages we sent, bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

import imaging
from t38gw.t30 import CallEnded, Event, PageReceived, PhaseBCompleted, ReceiverConfig, T30Receiver, T30Result
from t38gw.t30.dcs import Compression, ReceiveCapabilities, Resolution, build_dcs, parse_dcs, parse_dis
from t38gw.t30.events import PageSent
from t38gw.t30.frames import Fcf
from t38gw.t30.t38_io import split_to_fit
from t38gw.t30.transmitter import State, T30Transmitter, TransmitterConfig
from tests.t38gw.t30.harness import _Link, perfect_channel
from tests.t38gw.t30.pages import random_page
from udptl.receiver import IfpReceived

TICK = 0.01


def make_pages(count: int, *, y_dpi: float = 98, height: int = 60, seed: int = 7) -> list[imaging.Page]:
    rng = random.Random(seed)
    return [imaging.Page(1728, height, 204, y_dpi, random_page(rng, 1728, height)) for _ in range(count)]


@dataclass
class PairOutcome:
    tx_events: list[Event]
    rx_events: list[Event]
    transmitter: T30Transmitter
    receiver: T30Receiver
    sim_seconds: float
    tx_ifps: int

    def ended(self, events: list[Event]) -> CallEnded:
        found = [e for e in events if isinstance(e, CallEnded)]
        assert len(found) == 1, events[-5:]
        return found[0]

    @property
    def pages(self) -> list[PageReceived]:
        return [e for e in self.rx_events if isinstance(e, PageReceived)]


class LossyChannel:
    """Drops each datagram with probability ``loss`` (seeded)."""

    def __init__(self, loss: float, seed: int) -> None:
        self.loss = loss
        self.rng = random.Random(seed)

    def __call__(self, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        return [] if self.rng.random() < self.loss else [(now + 0.01, datagram)]


def run_pair(pages, *, tx_config: TransmitterConfig | None = None, rx_config: ReceiverConfig | None = None,
             to_rx=perfect_channel, to_tx=perfect_channel, redundancy: int = 0, version: int = 0,
             rx_hook=None, max_sim_seconds: float = 600.0, tamper=None) -> PairOutcome:
    """Our transmitter calls our receiver; ``rx_hook(receiver, events, now)`` may act on the
    receiver (e.g. flow control) after each step."""
    rng = random.Random(3)
    tx = T30Transmitter(tx_config or TransmitterConfig(local_ident="+1 555 0199"), pages)
    rx = T30Receiver(rx_config or ReceiverConfig(local_ident="+1 555 0100"))
    to_rx_link = _Link(version, to_rx, random.Random(rng.random()), redundancy=redundancy, fec=False)
    to_tx_link = _Link(version, to_tx, random.Random(rng.random()), redundancy=redundancy, fec=False)
    tx_events: list[Event] = list(tx.start(0.0))
    rx_events: list[Event] = list(rx.start(0.0))
    now = 0.0
    tx_ifps = 0

    def feed(engine, link, events) -> None:
        for item in link.deliver(now):
            if isinstance(item, IfpReceived) and item.packet is not None:
                events.extend(engine.ifp_received(item.packet, now))
            else:
                events.extend(engine.ifps_lost(1, now))

    for tick in range(int(max_sim_seconds / TICK)):
        now = tick * TICK
        feed(tx, to_tx_link, tx_events)
        feed(rx, to_rx_link, rx_events)
        for engine, events in ((tx, tx_events), (rx, rx_events)):
            deadline = engine.next_deadline()
            if deadline is not None and deadline <= now:
                events.extend(engine.handle_timer(now))
        if rx_hook is not None:
            rx_hook(rx, rx_events, now)
        for out in tx.ifps_to_send(now):
            assert out.at <= now + 1e-9
            packet = tamper(out.packet) if tamper is not None else out.packet
            if packet is None:
                continue
            for raw in split_to_fit(packet, version, to_rx_link.sender.max_ifp):
                for _ in range(out.repeat):
                    to_rx_link.send(raw, now)
                    tx_ifps += 1
        for out in rx.ifps_to_send(now):
            for raw in split_to_fit(out.packet, version, to_tx_link.sender.max_ifp):
                for _ in range(out.repeat):
                    to_tx_link.send(raw, now)
        if tx.finished and rx.finished:
            break
    return PairOutcome(tx_events, rx_events, tx, rx, now, tx_ifps)


def assert_pages_equal(outcome: PairOutcome, pages: list[imaging.Page]) -> None:
    received = outcome.pages
    assert len(received) == len(pages)
    for got, sent in zip(received, pages):
        assert (got.width, got.height) == (sent.width, sent.height)
        assert got.bitmap == sent.bitmap


# ---------------------------------------------------------------------- clean calls
@pytest.mark.parametrize(("ecm", "compression"), [
    (True, Compression.MH), (True, Compression.MR), (True, Compression.MMR),
    (False, Compression.MH), (False, Compression.MR),
])
def test_clean_call_pages_identical(ecm: bool, compression: Compression) -> None:
    pages = make_pages(3, y_dpi=196 if compression is Compression.MR else 98)
    config = TransmitterConfig(local_ident="+1 555 0199", ecm=ecm, compressions=frozenset({compression}))
    outcome = run_pair(pages, tx_config=config)
    tx_end, rx_end = outcome.ended(outcome.tx_events), outcome.ended(outcome.rx_events)
    assert tx_end.result is T30Result.OK, tx_end
    assert rx_end.result is T30Result.OK, rx_end
    assert tx_end.pages == 3
    assert_pages_equal(outcome, pages)
    phase_b = [e for e in outcome.tx_events if isinstance(e, PhaseBCompleted)]
    assert len(phase_b) == 1
    assert (phase_b[0].ecm, phase_b[0].compression, phase_b[0].bit_rate) == (ecm, compression.value, 14400)
    assert outcome.receiver.remote_ident == "+1 555 0199"
    assert outcome.transmitter.remote_ident == "+1 555 0100"
    sent = [e for e in outcome.tx_events if isinstance(e, PageSent)]
    assert [(s.number, s.response) for s in sent] == [(1, "MCF"), (2, "MCF"), (3, "MCF")]


def test_non_ecm_mmr_request_falls_back_to_mr_or_mh() -> None:
    pages = make_pages(1)
    outcome = run_pair(pages, tx_config=TransmitterConfig(ecm=False))
    assert outcome.ended(outcome.tx_events).result is T30Result.OK
    assert outcome.receiver.dcs is not None and not outcome.receiver.dcs.ecm
    assert outcome.receiver.dcs.compression is Compression.MR
    assert_pages_equal(outcome, pages)


def test_fine_page_to_standard_only_receiver_merges_rows() -> None:
    pages = make_pages(1, y_dpi=196, height=40)
    caps = ReceiveCapabilities(resolutions=frozenset({Resolution.R8_STANDARD}))
    outcome = run_pair(pages, rx_config=ReceiverConfig(capabilities=caps))
    assert outcome.ended(outcome.tx_events).result is T30Result.OK
    got = outcome.pages[0]
    assert got.height == 20 and got.y_dpi == 98
    stride = 216
    src = pages[0].bitmap
    expected = b"".join(
        (int.from_bytes(src[(2 * y) * stride:(2 * y + 1) * stride], "big")
         | int.from_bytes(src[(2 * y + 1) * stride:(2 * y + 2) * stride], "big")).to_bytes(stride, "big")
        for y in range(20))
    assert got.bitmap == expected


def test_mode_follows_the_dis() -> None:
    caps = ReceiveCapabilities(modems=frozenset({"V.27ter", "V.29"}), ecm=False,
                               compressions=frozenset({Compression.MH}))
    pages = make_pages(1)
    outcome = run_pair(pages, rx_config=ReceiverConfig(capabilities=caps))
    phase_b = [e for e in outcome.tx_events if isinstance(e, PhaseBCompleted)][0]
    assert (phase_b.modem, phase_b.bit_rate, phase_b.ecm, phase_b.compression) == ("V.29", 9600, False, "mh")
    assert_pages_equal(outcome, pages)


def test_pacing_image_data_not_faster_than_the_modem() -> None:
    pages = make_pages(1, height=200)
    outcome = run_pair(pages, tx_config=TransmitterConfig(ecm=False))
    assert outcome.ended(outcome.tx_events).result is T30Result.OK
    # The page's coded size over 14400 bit/s bounds how early the call can end.
    coded = len(imaging.encode_page(pages[0].bitmap, 1728, imaging.Coding.MR, k=2,
                                    bit_order=imaging.BitOrder.MSB_FIRST))
    assert outcome.sim_seconds > coded * 8 / 14400 + 1.5  # + TCF


def test_ifps_come_out_only_when_due() -> None:
    pages = make_pages(1)
    tx = T30Transmitter(TransmitterConfig(), pages)
    tx.start(0.0)
    first = tx.ifps_to_send(0.0)
    assert first and all(p.at <= 0.0 for p in first)  # CNG
    assert tx.ifps_to_send(0.1) == []
    deadline = tx.next_deadline()
    assert deadline is not None and 0.1 < deadline <= 0.5 + 1e-9
    assert tx.state is State.AWAIT_DIS


def test_no_dis_ends_after_t0() -> None:
    # The first wait for DIS is T0 (SpanDSP's 60 s; TSB-85 MTGX02), not T1.
    tx = T30Transmitter(TransmitterConfig(t0=10.0, t1=5.0), make_pages(1))
    events = tx.start(0.0)
    cng = 0
    now = 0.0
    while not tx.finished and now < 60:
        deadline = tx.next_deadline()
        assert deadline is not None
        now = deadline
        events += tx.handle_timer(now)
        cng += sum(1 for p in tx.ifps_to_send(now) if p.packet.msg.name == "CNG")
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert ended and ended[0].result is T30Result.TX_T1EXPIRED
    assert 10.0 <= now <= 11.1, now  # T0 (from the end of the first CNG), not T1
    assert 2 <= cng <= 4  # T.30 5.3.2: CNG every 3.5 s while waiting


# ---------------------------------------------------------------------- impaired calls
def test_ecm_with_loss_pages_identical() -> None:
    pages = make_pages(2, height=120)
    outcome = run_pair(pages, to_rx=LossyChannel(0.1, 5), to_tx=LossyChannel(0.1, 6), redundancy=3)
    assert outcome.ended(outcome.tx_events).result is T30Result.OK
    assert_pages_equal(outcome, pages)


def test_ecm_heavy_loss_without_redundancy_uses_ppr() -> None:
    pages = make_pages(1, height=300)
    outcome = run_pair(pages, to_rx=LossyChannel(0.05, 11))
    assert outcome.ended(outcome.tx_events).result is T30Result.OK, outcome.ended(outcome.tx_events)
    assert outcome.transmitter.counters["ppr_received"] >= 1
    assert_pages_equal(outcome, pages)


def test_ftt_steps_the_modem_down() -> None:
    """Our receiver answers FTT to the first two TCFs (the TCF data of V.17 14.4k and 12k is
    damaged on the way): the sender must fall back one step each time."""
    pages = make_pages(1)
    damaged = {"count": 0}
    outcome = run_pair(pages, rx_hook=_ftt_hook(damaged))
    phase_b = [e for e in outcome.tx_events if isinstance(e, PhaseBCompleted)][0]
    assert phase_b.bit_rate == 9600 and phase_b.modem == "V.17"
    assert outcome.transmitter.counters["ftt_received"] == 2
    assert_pages_equal(outcome, pages)


def _ftt_hook(state):
    """Make our receiver judge the first two TCFs as failed (its longest zero run cut)."""
    def hook(rx: T30Receiver, events, now) -> None:
        if rx.state.value == "tcf" and state["count"] < 2 and not state.get("active"):
            state["active"] = True
            state["count"] += 1
        if state.get("active"):
            rx._tcf_longest = 0  # white-box: the channel "damaged" the zeros
            rx._tcf_zero_run = 0
            if rx.state.value != "tcf":
                state["active"] = False
    return hook


def test_rtn_resends_the_page_then_gives_up() -> None:
    pages = make_pages(2)

    def always_bad(compression, width):
        from t38gw.t30.receiver import imaging_decoder

        class Bad:
            def __init__(self) -> None:
                self.inner = imaging_decoder(compression, width)

            page_ended = property(lambda self: self.inner.page_ended)
            rows = property(lambda self: self.inner.rows)

            def feed(self, data: bytes) -> None:
                self.inner.feed(data)

            def finish(self):
                page = self.inner.finish()
                return replace(page, bad_rows=page.height)  # every row "bad": RTN
        return Bad()

    tx = T30Transmitter(TransmitterConfig(ecm=False, max_page_retries=2), pages)
    rx = T30Receiver(ReceiverConfig(), decoder_factory=always_bad)
    outcome = _run_engines(tx, rx)
    sent = [e for e in outcome[0] if isinstance(e, PageSent)]
    assert [(s.number, s.response, s.attempt) for s in sent] == [(1, "RTN", 1), (1, "RTN", 2), (1, "RTN", 3)]
    ended = [e for e in outcome[0] if isinstance(e, CallEnded)][0]
    assert ended.result is T30Result.RETRYDCN
    assert tx.counters["rtn_received"] == 3


def _run_engines(tx: T30Transmitter, rx: T30Receiver, max_sim_seconds: float = 600.0):
    tx_events = list(tx.start(0.0))
    rx_events = list(rx.start(0.0))
    link_a = _Link(0, perfect_channel, random.Random(1), redundancy=0, fec=False)
    link_b = _Link(0, perfect_channel, random.Random(2), redundancy=0, fec=False)
    for tick in range(int(max_sim_seconds / TICK)):
        now = tick * TICK
        for engine, link, events in ((tx, link_b, tx_events), (rx, link_a, rx_events)):
            for item in link.deliver(now):
                if isinstance(item, IfpReceived) and item.packet is not None:
                    events.extend(engine.ifp_received(item.packet, now))
            deadline = engine.next_deadline()
            if deadline is not None and deadline <= now:
                events.extend(engine.handle_timer(now))
        for engine, link in ((tx, link_a), (rx, link_b)):
            for out in engine.ifps_to_send(now):
                for raw in split_to_fit(out.packet, 0, link.sender.max_ifp):
                    for _ in range(out.repeat):
                        link.send(raw, now)
        if tx.finished and rx.finished:
            break
    return tx_events, rx_events


def test_rnr_is_polled_with_rr() -> None:
    pages = make_pages(1)
    state = {"done": False}

    def hook(rx: T30Receiver, events, now) -> None:
        if not state["done"] and now < 1.0:
            rx.set_receiver_ready(False, now)
        if not state["done"] and rx.state.value == "receiver_not_ready":
            state.setdefault("since", now)
            if now - state["since"] > 8.0:
                rx.set_receiver_ready(True, now)
                state["done"] = True
    outcome = run_pair(pages, rx_hook=hook)
    assert outcome.ended(outcome.tx_events).result is T30Result.OK
    assert outcome.transmitter.counters["rnr_received"] >= 2
    assert_pages_equal(outcome, pages)


# ---------------------------------------------------------------------- DIS/DCS codecs
def test_parse_dis_reads_our_own_dis() -> None:
    caps = ReceiveCapabilities()
    remote = parse_dis(caps.dis_fif())
    assert remote.capabilities.modems == caps.modems
    assert remote.capabilities.ecm and remote.capabilities.compressions == frozenset(Compression)
    assert Resolution.R8_SUPERFINE in remote.capabilities.resolutions
    assert remote.scan_time_ms == (0, 0)


@pytest.mark.parametrize("ms", [0, 5, 10, 20, 40])
def test_build_dcs_scan_time_round_trips(ms: int) -> None:
    from t38gw.t30.dcs import Modulation

    assert parse_dcs(build_dcs(Modulation.V29_9600, min_scan_time_ms=ms)).min_scan_time_ms == ms


def test_fcf_values_used_by_the_transmitter() -> None:
    assert Fcf.PPS != Fcf.EOR and Fcf.CTC != Fcf.CTR


# ---------------------------------------------------------------------- page coding
@pytest.mark.parametrize("compression", [Compression.MH, Compression.MMR])
def test_fast_page_coding_decodes_to_the_page(compression: Compression) -> None:
    """The libtiff path of code_page: MMR byte-identical to imaging.encode_page, MH the same
    lines with RTC from a byte boundary; both decode back to the bitmap."""
    from t38gw.t30.dcs import Modulation, PaperWidth
    from t38gw.t30.transmitter import ChosenMode, code_page

    page = make_pages(1, height=150, seed=99)[0]
    mode = ChosenMode((Modulation.V17_14400,), Resolution.R8_STANDARD, PaperWidth.A4, compression, True, 0)
    coded = code_page(page.bitmap, 1728, mode, Modulation.V17_14400)
    coding = imaging.Coding.MMR if compression is Compression.MMR else imaging.Coding.MH
    reference = imaging.encode_page(page.bitmap, 1728, coding, bit_order=imaging.BitOrder.MSB_FIRST)
    if compression is Compression.MMR:
        assert coded == reference
    else:
        assert coded[:len(reference) - 10] == reference[:len(reference) - 10]
    decoder = imaging.StreamingDecoder(coding, 1728, bit_order=imaging.BitOrder.MSB_FIRST)
    decoder.feed(coded)
    decoded = decoder.finish()
    assert decoded.bitmap == page.bitmap and decoded.bad_rows == 0 and decoded.ended


@pytest.mark.parametrize("resolution", [Resolution.R8_STANDARD, Resolution.R8_FINE], ids=lambda r: r.label)
@pytest.mark.parametrize("number", range(1, 9))
def test_mr_page_coding_through_libtiff_is_t4_for_the_line(number: int, resolution: Resolution) -> None:
    """The libtiff MR path of code_page (no fill): an ITU T.24 chart coded with K 2 at 98
    and 4 at 196 lines/inch (T.4 4.2.1.3.4), the tag bits saying so, the same lines as
    imaging.encode_page then RTC from the octet boundary; our decoder and libtiff both
    give the chart back pel for pel."""
    from imaging.libtiff import decode_with_libtiff
    from t38gw.t30.dcs import Modulation, PaperWidth
    from t38gw.t30.transmitter import ChosenMode, code_page
    from tests.imaging.test_libtiff_oracle import bits_of, mr_lines_then_rtc_from_octet, mr_tag_bits
    from tests.t38gw.t30.pages import chart_page

    order = imaging.BitOrder.MSB_FIRST
    bitmap = chart_page(number, 1728)
    height = len(bitmap) // 216
    mode = ChosenMode((Modulation.V17_14400,), resolution, PaperWidth.A4, Compression.MR, True, 0)
    coded = code_page(bitmap, 1728, mode, Modulation.V17_14400)
    k = {98: 2, 196: 4}[resolution.y_dpi]
    assert mr_tag_bits(coded, order) == "".join("0" if row % k else "1" for row in range(height)) + "1" * 6
    reference = imaging.encode_page(bitmap, 1728, imaging.Coding.MR, k=k, bit_order=order)
    assert bits_of(coded, order) == mr_lines_then_rtc_from_octet(reference, order)
    decoder = imaging.StreamingDecoder(imaging.Coding.MR, 1728, bit_order=order)
    decoder.feed(coded)
    decoded = decoder.finish()
    assert (decoded.height, decoded.bad_rows, decoded.ended) == (height, 0, True)
    assert decoded.bitmap == bitmap
    assert decode_with_libtiff(coded, 1728, height, imaging.Coding.MR, bit_order=order) == bitmap


@pytest.mark.parametrize(("resolution", "scan_time_ms"), [(Resolution.R8_FINE, 20), (Resolution.R8_SUPERFINE, 0)],
                         ids=["fill", "k8"])
def test_mr_page_coding_stays_ours_where_libtiff_cannot(resolution: Resolution, scan_time_ms: int) -> None:
    """Fill bits (T.4 4.1.3) and K 8 at 391 lines/inch are beyond libtiff: code_page gives
    exactly imaging.encode_page's page."""
    from t38gw.t30.dcs import Modulation, PaperWidth
    from t38gw.t30.transmitter import ChosenMode, code_page

    page = make_pages(1, height=150, seed=5)[0]
    mode = ChosenMode((Modulation.V29_9600,), resolution, PaperWidth.A4, Compression.MR, False, scan_time_ms)
    coded = code_page(page.bitmap, 1728, mode, Modulation.V29_9600)
    fill = imaging.min_row_bits(9600, scan_time_ms)
    assert coded == imaging.encode_page(page.bitmap, 1728, imaging.Coding.MR, k=imaging.mr_k(resolution.y_dpi),
                                        min_row_bits=fill, bit_order=imaging.BitOrder.MSB_FIRST)


def _drop_fcd(number: int):
    """A tamper that loses FCD frame ``number`` every time it is sent (a line that always
    garbles it): its hdlc-data goes, its fcs-OK arrives with nothing before it."""
    from t38gw.t30.frames import REVERSE_BITS
    from udptl.ifp import FieldType, T30Data

    fcd = bytes([int(Fcf.FCD)]).translate(REVERSE_BITS)[0]

    def tamper(packet):
        fields = packet.fields or ()
        if packet.msg is not T30Data.V21 and fields and fields[0].field_type is FieldType.HDLC_DATA:
            data = fields[0].data
            if len(data) > 3 and data[2] == fcd and data[3:4].translate(REVERSE_BITS)[0] == number:
                return None
        return packet
    return tamper


def test_ppr_four_times_ctc_then_eor() -> None:
    """Frame 2 never gets through: after the 4th PPR for the block the sender sends CTC at
    the next lower rate (T.30 A.4.3; CTR), 4 PPRs later at the lowest rate EOR (ERR), and
    the call ends RETRYDCN with the page not confirmed whole."""
    pages = make_pages(1, height=200)
    config = TransmitterConfig(max_bit_rate=4800, ecm_frame_size=64)
    outcome = run_pair(pages, tx_config=config, tamper=_drop_fcd(2))
    counters = outcome.transmitter.counters
    assert counters["ppr_received"] == 8 and counters["ctc_sent"] == 1 and counters["eor_sent"] == 1
    sent = [e for e in outcome.tx_events if isinstance(e, PageSent)]
    assert [(s.response, s.confirmed) for s in sent] == [("ERR", False)]
    assert outcome.ended(outcome.tx_events).result is T30Result.RETRYDCN
    assert outcome.receiver.dcs is not None and outcome.receiver.dcs.modulation.bit_rate == 4800
