"""CPU per received non-ECM page: StreamingDecoder (as before issue #14) vs NonEcmPageDecoder.

Two measurements, process CPU time, best of ``--repeat`` runs:

1. Decoder alone.  The ITU-T T.24 charts coded by SpanDSP's t4_tx (as a SpanDSP sender puts
   them on the line; bit-reversed to T.38's MSB-first order), MH and MR, standard (98 lpi:
   every other chart row, MR K=2) and fine (196 lpi, K=4), fed in 36-octet pieces (one T.38
   IFP at 14400 bit/s), ``page_ended`` and ``rows`` read after every piece as the T.30
   receiver does, then ``finish``.  Every page is checked equal (bitmap, height, bad rows).
2. A whole call.  A SpanDSP sender faxes ``--pages`` chart pages non-ECM to a SpanDSP
   receiver in simulated time (bench/t30.py's recording); the sender's IFP stream is
   replayed into ``T30Receiver`` with each decoder factory, all of the receiver's calls
   timed (IFP decoding, T.30, page decoding); the pages must equal the charts.

Run: ``.venv/bin/python bench/nonecm_decode.py`` (``--repeat N``, ``--pages N``, ``--charts 1,2``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imaging import BitOrder, Coding, DecodedPage, StreamingDecoder  # noqa: E402
from imaging.bits import reverse_bits  # noqa: E402
from imaging.nonecm import NonEcmPageDecoder  # noqa: E402
from t38gw.t30 import PageReceived, ReceiverConfig, T30Receiver  # noqa: E402
from t38gw.t30.receiver import imaging_decoder, non_ecm_decoder  # noqa: E402
from tests.imaging.charts import CHART_WIDTH, chart  # noqa: E402
from tests.peers.spandsp import spandsp_t4_encode  # noqa: E402
from udptl.codec import decode_ifp  # noqa: E402

PIECE = 36  # octets per IFP at 14400 bit/s (20 ms)


def standard(bitmap: bytes) -> bytes:
    stride = CHART_WIDTH // 8
    return b"".join(bitmap[row * stride:(row + 1) * stride] for row in range(0, len(bitmap) // stride, 2))


def receive(decoder: StreamingDecoder | NonEcmPageDecoder, data: bytes):
    for start in range(0, len(data), PIECE):
        if decoder.page_ended:
            break
        decoder.feed(data[start:start + PIECE])
        _ = decoder.rows
    return decoder.finish()


def decoder_alone(charts: list[int], repeat: int) -> None:
    print(f"decoder alone: ms CPU per page, {PIECE}-octet pieces, SpanDSP-coded ITU charts {charts}")
    print(f"{'coding':6} {'lpi':>4} {'rows':>5} {'streaming':>10} {'nonecm':>8} {'ratio':>6}  fast path")
    for coding in (Coding.MH, Coding.MR):
        for y_dpi in (98, 196):
            pages = []
            for number in charts:
                bitmap = chart(number) if y_dpi == 196 else standard(chart(number))
                height = len(bitmap) // (CHART_WIDTH // 8)
                coded = spandsp_t4_encode(bitmap, CHART_WIDTH, height, coding.value, y_dpi=y_dpi)
                pages.append((bitmap, reverse_bits(coded)))
            times = {}
            fast = 0
            for name in ("streaming", "nonecm"):
                best = float("inf")
                for _ in range(repeat):
                    cpu = 0.0
                    for bitmap, data in pages:
                        decoder: StreamingDecoder | NonEcmPageDecoder
                        if name == "streaming":
                            decoder = StreamingDecoder(coding, CHART_WIDTH, bit_order=BitOrder.MSB_FIRST)
                        else:
                            decoder = NonEcmPageDecoder(coding, CHART_WIDTH, bit_order=BitOrder.MSB_FIRST)
                        start = time.process_time()
                        page = receive(decoder, data)
                        cpu += time.process_time() - start
                        assert page.bitmap == bitmap and page.bad_rows == 0, (name, coding, y_dpi)
                        if isinstance(decoder, NonEcmPageDecoder) and decoder.path == "libtiff":
                            fast += 1
                    best = min(best, cpu / len(pages))
                times[name] = best
            rows = len(pages[0][0]) // (CHART_WIDTH // 8)
            print(f"{coding.value:6} {y_dpi:4} {rows:5} {times['streaming'] * 1e3:10.2f} {times['nonecm'] * 1e3:8.2f}"
                  f" {times['streaming'] / times['nonecm']:6.1f}  {fast}/{len(pages) * repeat}")


class _NoDecoder:
    """Stands in for the page decoder: the receiver's own work alone (T.30, IFP decoding)."""

    page_ended = False
    rows = 0

    def __init__(self, compression, width: int) -> None:
        self.width = width

    def feed(self, data: bytes) -> None:
        self.rows = 1

    def finish(self) -> DecodedPage:
        return DecodedPage(self.width, 1, bytes(self.width // 8))


def replay(stream, bitmaps, factory) -> float:
    engine = T30Receiver(ReceiverConfig(local_ident="1"), decoder_factory=factory)
    clock = time.process_time
    start = clock()
    engine.start(0.0)
    cpu = clock() - start
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
                assert factory is _NoDecoder or event.bitmap == bitmaps[pages][0], f"page {pages + 1} differs"
                assert event.bad_rows == 0
                pages += 1
    assert pages == len(bitmaps), (pages, len(bitmaps))
    return cpu


def whole_call(pages: int, repeat: int) -> None:
    import importlib.util

    # bench/t30.py's recording: a SpanDSP sender -> a SpanDSP receiver, simulated time.
    spec = importlib.util.spec_from_file_location("bench_t30", Path(__file__).resolve().parent / "t30.py")
    assert spec is not None and spec.loader is not None
    bench_t30 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_t30)
    record = bench_t30.record

    print(f"\nwhole simulated-time call, {pages} page(s) (charts from 1, 2376 rows, coded by SpanDSP with the"
          " K of the declared lpi): ms CPU of T30Receiver per page (IFP decode + T.30 + T.4); 'no T.4' has"
          " the page decoder stubbed out")
    print(f"{'coding':6} {'lpi':>4} {'IFPs':>5} {'streaming':>10} {'nonecm':>8} {'ratio':>6} {'no T.4':>7}")
    for coding in ("mh", "mr"):
        for y_dpi in (98, 196):
            with tempfile.TemporaryDirectory(prefix="t38gw-bench-") as folder:
                stream, bitmaps = record(pages, False, coding, y_dpi, Path(folder))
            before = min(replay(stream, bitmaps, imaging_decoder) for _ in range(repeat))
            after = min(replay(stream, bitmaps, non_ecm_decoder) for _ in range(repeat))
            protocol = min(replay(stream, bitmaps, _NoDecoder) for _ in range(repeat))
            print(f"{coding:6} {y_dpi:4} {len(stream):5} {before / pages * 1e3:10.2f} {after / pages * 1e3:8.2f}"
                  f" {before / after:6.1f} {protocol / pages * 1e3:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pages", type=int, default=1)
    parser.add_argument("--charts", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--no-call", action="store_true", help="skip the whole-call replay")
    args = parser.parse_args()
    decoder_alone([int(n) for n in args.charts.split(",")], args.repeat)
    if not args.no_call:
        whole_call(args.pages, args.repeat)


if __name__ == "__main__":
    main()
