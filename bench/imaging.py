"""Page coding speed: our streaming decoder vs libtiff (through Pillow), measured in one run.

Decodes the eight ITU-T T.24 charts (1728 x 2376) in MH, MR (libtiff's K) and MMR and prints
pages per CPU-second (process time, so other load on the machine does not skew the ratio) for
our StreamingDecoder (fed BENCH_CHUNK-octet pieces, as from the line) and for libtiff, with
the ratios; then encode pages/s for ours (K=4) and libtiff's.
Run: .venv/bin/python bench/imaging.py   (BENCH_ROUNDS, BENCH_CHUNK to vary)
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from imaging import BitOrder, Coding, StreamingDecoder, encode_page  # noqa: E402
from imaging.libtiff import encode_with_libtiff  # noqa: E402
from imaging.tiff import CodedPage, build_tiff  # noqa: E402

WIDTH, HEIGHT = 1728, 2376
ORDER = BitOrder.MSB_FIRST  # as T.38 carries it
CHUNK = int(os.environ.get("BENCH_CHUNK", "256"))  # octets per feed; T.38 at 14400 bit/s carries ~36
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def charts() -> list[bytes]:
    folder = Path(os.environ.get("T38GW_TESTDATA", Path(__file__).resolve().parent.parent.parent / "shared" / "testdata"))
    pages = []
    for number in range(1, 9):
        raw = gzip.decompress((folder / "itu_t24_charts" / f"itu{number}.pbm.gz").read_bytes())
        pages.append(raw.split(maxsplit=3)[3])
    return pages


def best_rate(work, pages: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return pages / best


def main() -> None:
    bitmaps = charts()
    print(f"{len(bitmaps)} ITU charts {WIDTH}x{HEIGHT}, best of {ROUNDS} rounds, pages per CPU-second; ours fed {CHUNK}-octet pieces")
    print("decode, pages/s: ours (packed 1-bit rows) | libtiff load+tobytes (the same product: packed rows) and the")
    print("ratio ours/that (the fair comparison) | libtiff load only (leaves Pillow's 1 byte/pel image) and ours/that")
    print(
        f"{'coding':6} {'ours decode':>12} {'libtiff load+tobytes':>21} {'ratio':>7} {'libtiff load only':>18} {'ratio':>7}"
        f" {'ours encode':>12} {'libtiff encode':>15}"
    )
    for coding in Coding:
        coded = [encode_with_libtiff(b, WIDTH, HEIGHT, coding, bit_order=ORDER) for b in bitmaps]
        # libtiff's fastest way to packed rows: see imaging/libtiff.py (photometric=1).
        tiffs = [build_tiff([CodedPage(WIDTH, HEIGHT, 204, 196, coding, ORDER, c)], photometric=1) for c in coded]

        def ours_decode(coded=coded, coding=coding):
            for data in coded:
                decoder = StreamingDecoder(coding, WIDTH, bit_order=ORDER)
                for start in range(0, len(data), CHUNK):
                    decoder.feed(data[start : start + CHUNK])
                decoder.finish()

        def libtiff_decode(tiffs=tiffs):
            for tiff in tiffs:
                with Image.open(io.BytesIO(tiff)) as image:
                    image.load()
                    image.tobytes("raw", "1")

        def libtiff_decode_only(tiffs=tiffs):
            for tiff in tiffs:
                with Image.open(io.BytesIO(tiff)) as image:
                    image.load()

        def ours_encode(coding=coding):
            for bitmap in bitmaps:
                encode_page(bitmap, WIDTH, coding, k=4, bit_order=ORDER)

        def libtiff_encode(coding=coding):
            for bitmap in bitmaps:
                encode_with_libtiff(bitmap, WIDTH, HEIGHT, coding, bit_order=ORDER)

        ours = best_rate(ours_decode, len(coded))
        theirs = best_rate(libtiff_decode, len(tiffs))
        theirs_raw = best_rate(libtiff_decode_only, len(tiffs))
        ours_enc = best_rate(ours_encode, len(bitmaps))
        theirs_enc = best_rate(libtiff_encode, len(bitmaps))
        print(
            f"{coding.name:6} {ours:12.1f} {theirs:21.1f} {ours / theirs:6.2f}x {theirs_raw:18.1f} {ours / theirs_raw:6.2f}x"
            f" {ours_enc:12.1f} {theirs_enc:15.1f}"
        )


if __name__ == "__main__":
    main()
