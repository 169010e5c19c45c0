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
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from t38gw.t30 import PageReceived, ReceiverConfig, T30Receiver  # noqa: E402
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


if __name__ == "__main__":
    main()
