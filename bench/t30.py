"""CPU per received page: our T.30 engine beside SpanDSP's receiving terminal, same run.

A SpanDSP sender faxes the eight ITU-T T.24 charts to a SpanDSP receiver in simulated
time (tests/peers/spandsp.py); the sender's IFP stream is recorded.  The same stream is
then replayed, at its recorded times, into

* our engine: ``decode_ifp`` + ``T30Receiver.ifp_received`` (+ its timers), the pages
  decoded by ``imaging`` into bitmaps in memory;
* a fresh SpanDSP T.38 terminal (C): ``t38_core_rx_ifp_packet`` + ``t38_terminal_send_timeout``
  every 20 ms, as it must be driven; it decodes the pages and writes them to a TIFF.

Only the receivers' own calls are timed (process CPU), each replay repeated and the best
kept.  Run: ``.venv/bin/python bench/t30.py`` (``--repeat N``, ``--pages N``).

The transmit rows: the same chart pages sent by our ``T30Transmitter`` (its calls timed,
page coding included) and by SpanDSP's sending terminal (its ``rx_ifp`` and
``t38_terminal_send_timeout`` calls timed, TIFF reading and coding included), each to a
SpanDSP receiving terminal in simulated time, IFPs handed over directly every 20 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import imaging  # noqa: E402
from t38gw.t30 import PageReceived, ReceiverConfig, T30Receiver  # noqa: E402
from t38gw.t30.dcs import Compression  # noqa: E402
from t38gw.t30.transmitter import T30Transmitter, TransmitterConfig  # noqa: E402
from udptl.codec import encode_ifp  # noqa: E402
from tests.peers.spandsp import (  # noqa: E402
    SENDER_TO_RECEIVER,
    SpandspT38Terminal,
    make_fax_tiff,
    run_spandsp_fax,
)
from tests.t38gw.t30.pages import chart_page  # noqa: E402
from udptl.codec import decode_ifp  # noqa: E402

TICK = 0.02


def record(pages: int, ecm: bool, coding: str, y_dpi: int, folder: Path):
    bitmaps = [(chart_page(1 + i % 8, 1728), 1728) for i in range(pages)]
    bitmaps = [(b, w, len(b) // (w // 8)) for b, w in bitmaps]
    tx = folder / "tx.tif"
    make_fax_tiff(tx, bitmaps, x_dpi=204, y_dpi=y_dpi)
    run = run_spandsp_fax(tx, folder / "rx.tif", ecm=ecm, compressions={coding})
    if not run.ok:
        raise SystemExit(f"recording run failed: {run.sender_status} / {run.receiver_status}")
    stream = [(t.time, t.seq, t.ifp) for t in run.trace if t.direction == SENDER_TO_RECEIVER
              for _ in range(max(t.count, 1))]
    return stream, bitmaps


class _CountingDecoder:
    """Stands in for the page decoder to measure the protocol work alone."""

    page_ended = False

    def __init__(self, compression, width) -> None:
        self.rows = 0
        self.width = width

    def feed(self, data: bytes) -> None:
        self.rows = 1

    def finish(self):
        from imaging import DecodedPage

        return DecodedPage(self.width, 1, bytes(self.width // 8), 0, 0)


def replay_engine(stream, bitmaps, decoder_factory=None) -> float:
    engine = T30Receiver(ReceiverConfig(local_ident="1"), decoder_factory=decoder_factory)
    cpu = 0.0
    clock = time.process_time
    start = clock()
    engine.start(0.0)
    cpu += clock() - start
    pages = 0
    for now, _seq, ifp in stream:
        start = clock()
        deadline = engine.next_deadline()
        if deadline is not None and deadline <= now:
            engine.handle_timer(now)
        events = engine.ifp_received(decode_ifp(ifp, 0), now)
        engine.ifps_to_send(now)
        cpu += clock() - start
        for event in events:
            if isinstance(event, PageReceived):
                assert decoder_factory or event.bitmap == bitmaps[pages][0], f"page {pages + 1} differs"
                pages += 1
    assert pages == len(bitmaps), (pages, len(bitmaps))
    return cpu


def replay_spandsp(stream, folder: Path, ecm: bool, coding: str) -> float:
    terminal = SpandspT38Terminal(calling_party=False, on_ifp=lambda ifp, count: None, ecm=ecm,
                                  compressions={coding}, rx_tiff=folder / "spandsp-rx.tif")
    clock = time.process_time
    cpu = 0.0
    with terminal:
        index = 0
        end = stream[-1][0] + 1.0
        tick = 0
        while tick * TICK <= end:
            now = tick * TICK
            start = clock()
            while index < len(stream) and stream[index][0] <= now:
                terminal.rx_ifp(stream[index][2], stream[index][1])
                index += 1
            terminal.advance(160)
            cpu += clock() - start
            tick += 1
        pages_rx = terminal.stats()["pages_rx"]
    if pages_rx < 1:
        raise SystemExit("SpanDSP replay received no page")
    return cpu


def _chart_bitmaps(pages: int) -> list[tuple[bytes, int, int]]:
    bitmaps = [(chart_page(1 + i % 8, 1728), 1728) for i in range(pages)]
    return [(b, w, len(b) // (w // 8)) for b, w in bitmaps]


def transmit_engine(pages: int, ecm: bool, coding: str, y_dpi: int, folder: Path) -> float:
    """CPU of our T30Transmitter sending the chart pages to a SpanDSP receiver."""
    bitmaps = _chart_bitmaps(pages)
    doc = [imaging.Page(w, h, 204, y_dpi, b) for b, w, h in bitmaps]
    config = TransmitterConfig(local_ident="1", ecm=ecm, compressions=frozenset({Compression(coding)}))
    clock = time.process_time
    to_engine: list[bytes] = []
    receiver = SpandspT38Terminal(calling_party=False, on_ifp=lambda ifp, count: to_engine.append(ifp),
                                  rx_tiff=folder / "engine-rx.tif")
    cpu = 0.0
    seq = 0
    with receiver:
        start = clock()
        engine = T30Transmitter(config, doc)
        engine.start(0.0)
        cpu += clock() - start
        from udptl.codec import decode_ifp as decode
        for tick in range(200_000):
            now = tick * TICK
            pending, to_engine[:] = list(to_engine), []
            start = clock()
            for raw in pending:
                engine.ifp_received(decode(raw, 0), now)
            deadline = engine.next_deadline()
            if deadline is not None and deadline <= now:
                engine.handle_timer(now)
            out = engine.ifps_to_send(now)
            raws = [encode_ifp(o.packet, 0) for o in out for _ in range(o.repeat)]
            cpu += clock() - start
            for raw in raws:
                receiver.rx_ifp(raw, seq)
                seq += 1
            if engine.finished and receiver.phase_e_status is not None:
                break
            receiver.advance(160)
        if receiver.stats()["pages_rx"] != pages or receiver.phase_e_status != 0:
            raise SystemExit(f"transmit run failed: {receiver.stats()} {receiver.phase_e_status}")
    return cpu


def transmit_spandsp(pages: int, ecm: bool, coding: str, y_dpi: int, folder: Path) -> float:
    """CPU of SpanDSP's sending terminal on the same pages to a SpanDSP receiver."""
    tx = folder / "tx.tif"
    make_fax_tiff(tx, _chart_bitmaps(pages), x_dpi=204, y_dpi=y_dpi)
    to_rx: list[bytes] = []
    to_tx: list[bytes] = []
    clock = time.process_time
    sender = SpandspT38Terminal(calling_party=True, on_ifp=lambda ifp, count: to_rx.append(ifp), ecm=ecm,
                                compressions={coding}, tx_tiff=tx)
    receiver = SpandspT38Terminal(calling_party=False, on_ifp=lambda ifp, count: to_tx.append(ifp), ecm=ecm,
                                  compressions={coding}, rx_tiff=folder / "spandsp-rx.tif")
    cpu = 0.0
    seqs = [0, 0]
    with sender, receiver:
        for _tick in range(200_000):
            pending, to_tx[:] = list(to_tx), []
            start = clock()
            for raw in pending:
                sender.rx_ifp(raw, seqs[0])
                seqs[0] += 1
            sender.advance(160)
            cpu += clock() - start
            pending, to_rx[:] = list(to_rx), []
            for raw in pending:
                receiver.rx_ifp(raw, seqs[1])
                seqs[1] += 1
            receiver.advance(160)
            if sender.phase_e_status is not None and receiver.phase_e_status is not None:
                break
        if receiver.stats()["pages_rx"] != pages:
            raise SystemExit(f"SpanDSP transmit run failed: {receiver.stats()}")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cases = [("ECM  MMR fine 204x196", True, "mmr", 196), ("ECM  MR  fine 204x196", True, "mr", 196),
             ("nonECM MH fine 204x196", False, "mh", 196)]
    print(f"T.30 receive CPU per page, {args.pages} ITU T.24 chart pages (1728 x 2376), best of {args.repeat}")
    print(f"{'case':24} {'engine ms/page':>15} {'of it T.30+IFP':>15} {'SpanDSP ms/page':>16} {'ratio':>6}")
    for label, ecm, coding, y_dpi in cases:
        with tempfile.TemporaryDirectory(prefix="t38gw-bench-") as name:
            folder = Path(name)
            stream, bitmaps = record(args.pages, ecm, coding, y_dpi, folder)
            ours = min(replay_engine(stream, bitmaps) for _ in range(args.repeat))
            protocol = min(replay_engine(stream, bitmaps, _CountingDecoder) for _ in range(args.repeat))
            theirs = min(replay_spandsp(stream, folder, ecm, coding) for _ in range(args.repeat))
        per_ours = ours / args.pages * 1000
        per_theirs = theirs / args.pages * 1000
        per_protocol = protocol / args.pages * 1000
        print(f"{label:24} {per_ours:15.2f} {per_protocol:15.2f} {per_theirs:16.2f} {per_ours / per_theirs:6.2f}")
    print(f"T.30 transmit CPU per page, same pages, best of {args.repeat}")
    print(f"{'case':24} {'engine ms/page':>15} {'SpanDSP ms/page':>16} {'ratio':>6}")
    for label, ecm, coding, y_dpi in cases:
        with tempfile.TemporaryDirectory(prefix="t38gw-bench-") as name:
            folder = Path(name)
            ours = min(transmit_engine(args.pages, ecm, coding, y_dpi, folder) for _ in range(args.repeat))
            theirs = min(transmit_spandsp(args.pages, ecm, coding, y_dpi, folder) for _ in range(args.repeat))
        per_ours, per_theirs = ours / args.pages * 1000, theirs / args.pages * 1000
        print(f"{label:24} {per_ours:15.2f} {per_theirs:16.2f} {per_ours / per_theirs:6.2f}")


if __name__ == "__main__":
    main()
