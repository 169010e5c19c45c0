"""Archive write cost per page: appending to the page journal vs rewriting the documents.

A 200-page fax of ITU-T T.24 charts (1728 x 2376; charts 1-8 in turn, each page shifted
down by a few rows so that no two pages are the same, as in a real fax) is archived the way
the call session does it now - each confirmed page G4-coded once, appended to the page
journal (TIFF, one IFD per page, two fsyncs) and meta.json rewritten; fax.pdf/fax.tif made
once at the end - and, as the reference measured in the same run, the way it was done
before: after page k, fax.pdf (pikepdf) and fax.tif rewritten whole with all k pages
(temporary file, fsync, rename).  Printed: wall time of the write after page 1 and after
page 200 (wall, since fsync is most of it), the end-of-call cost, and the memory a
200-page call holds beyond the page being received (tracemalloc, and the process RSS).
Files go to a temporary folder under ./var (a real disk, not tmpfs); BENCH_PAGES to vary.
Run: .venv/bin/python bench/archive.py
"""

from __future__ import annotations

import gc
import gzip
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pikepdf  # noqa: E402

from imaging import Page  # noqa: E402
from imaging.output import g4_stream, write_tiff  # noqa: E402
from t38gw import archive  # noqa: E402
from t38gw.config import Route  # noqa: E402
from t38gw.faxrecord import InboundFax  # noqa: E402

WIDTH, HEIGHT = 1728, 2376
PAGES = int(os.environ.get("BENCH_PAGES", "200"))
ROUNDS = 3  # the reference's rewrites are timed best of 3 (they are long and steady)


def charts() -> list[bytes]:
    folder = Path(os.environ.get("T38GW_TESTDATA", Path(__file__).resolve().parent.parent.parent / "shared" / "testdata"))
    bitmaps = []
    for number in range(1, 9):
        raw = gzip.decompress((folder / "itu_t24_charts" / f"itu{number}.pbm.gz").read_bytes())
        bitmaps.append(raw.split(maxsplit=3)[3])
    return bitmaps


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def old_write_pdf(pages: list[Page], path: Path) -> None:
    """The PDF writer as it was before this change (pikepdf, the whole document)."""
    pdf = pikepdf.new()
    for page in pages:
        width_pt, height_pt = page.width * 72 / page.x_dpi, page.height * 72 / page.y_dpi
        image = pikepdf.Stream(pdf, g4_stream(page))
        image.Type, image.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
        image.Width, image.Height, image.BitsPerComponent = page.width, page.height, 1
        image.ColorSpace, image.Filter = pikepdf.Name.DeviceGray, pikepdf.Name.CCITTFaxDecode
        image.DecodeParms = pikepdf.Dictionary(K=-1, Columns=page.width, Rows=page.height, BlackIs1=False)
        pdf_page = pdf.add_blank_page(page_size=(width_pt, height_pt))
        pdf_page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        pdf_page.Contents = pdf.make_stream(f"q {width_pt:.4f} 0 0 {height_pt:.4f} 0 0 cm /Im0 Do Q".encode())
    pdf.save(path)


def old_write_after(pages: list[Page], folder: Path) -> float:
    """Seconds the old code spent after confirming page len(pages): both documents rewritten."""
    best = float("inf")
    for _ in range(ROUNDS):
        g4_stream.cache_clear()  # its 16 entries are thrashed by k > 16 pages in order anyway
        start = time.perf_counter()
        archive.write_atomic(folder / "fax.pdf", lambda tmp: old_write_pdf(pages, tmp))
        archive.write_atomic(folder / "fax.tif", lambda tmp: write_tiff(pages, tmp))
        best = min(best, time.perf_counter() - start)
    return best


def page_number(bitmaps: list[bytes], index: int) -> Page:
    """Page ``index``: a chart shifted down by ``index`` rows (wrapping), a new bytes object."""
    source = bitmaps[index % len(bitmaps)]
    cut = (HEIGHT - index % HEIGHT) * (WIDTH // 8)
    return Page(WIDTH, HEIGHT, 204, 196, source[cut:] + source[:cut])


def new_record(root: Path, fax_id: str) -> InboundFax:
    return InboundFax(fax_id=fax_id, started_at=time.time(), root=root, formats=("pdf", "tiff"),
                      sip={"call_id": "bench"}, route_index=None, route=Route())


def run_call(bitmaps: list[bytes], record: InboundFax, *, trace: bool) -> dict:
    """Archive PAGES pages as the call session does; per-page times or traced memory."""
    task_s, write_s, held = [], [], []
    gc.collect()
    if trace:
        tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0] if trace else 0
    for index in range(PAGES):
        page = page_number(bitmaps, index)  # the page being received
        start = time.perf_counter()
        record.add_page(page, bad_rows=0)  # the call's task: hashes the rows
        pages, meta = record.snapshot()
        queued = time.perf_counter()
        record.write(pages, meta)  # the writer thread: G4-codes and appends, meta.json
        done = time.perf_counter()
        record.forget_written()  # as the session does once the write returned
        del page, pages, meta
        task_s.append(queued - start)
        write_s.append(done - queued)
        if trace:
            held.append(tracemalloc.get_traced_memory()[0] - baseline)
    if trace:
        tracemalloc.reset_peak()
    record.finish("received", "", time.time())
    start = time.perf_counter()
    record.write(*record.snapshot())
    finish_s = time.perf_counter() - start
    finish_peak = tracemalloc.get_traced_memory()[1] - baseline if trace else 0
    if trace:
        tracemalloc.stop()
    return {"task": task_s, "write": write_s, "finish": finish_s, "held": held, "finish_peak": finish_peak,
            "folder": record.folder}


def main() -> None:
    bitmaps = charts()
    base = Path("var")
    base.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-archive-", dir=base))
    try:
        # One short call first: the process's one-time costs (lazy imports of Pillow's TIFF
        # plugin, libtiff's first use) are not a call's.
        warm = new_record(work / "warm", "01a21438-6359-7817-b310-bde014280621")
        warm.add_page(page_number(bitmaps, 0), bad_rows=0)
        warm.write(*warm.snapshot())
        warm.finish("received", "", time.time())
        warm.write(*warm.snapshot())
        del warm
        gc.collect()
        rss_before = rss_kib()
        timed = run_call(bitmaps, new_record(work / "timed", "01a21438-6359-7817-b310-bde014280622"), trace=False)
        rss_after = rss_kib()
        # A second call of the same size, traced: what the record holds, and whether RSS
        # grows again (memory kept per call would).
        traced = run_call(bitmaps, new_record(work / "traced", "01a21438-6359-7817-b310-bde014280623"), trace=True)
        gc.collect()
        rss_second = rss_kib()
        folder = timed["folder"]
        size_pdf = (folder / "fax.pdf").stat().st_size
        size_tif = (folder / "fax.tif").stat().st_size
        write_s, task_s, finish_s, held = timed["write"], timed["task"], timed["finish"], traced["held"]

        old_folder = work / "old"
        old_folder.mkdir()
        pages = [page_number(bitmaps, index) for index in range(PAGES)]  # the old code held them all
        old_first = old_write_after(pages[:1], old_folder)
        old_last = old_write_after(pages, old_folder)

        ms = 1000
        print(f"{PAGES} pages of ITU charts {WIDTH}x{HEIGHT} at 204x196, archive formats pdf+tiff, files under {base}/")
        first10, last10 = "median 1..10", f"median {PAGES - 9}..{PAGES}"
        print(f"{'write after page':18} {'1':>10} {PAGES:>10} {first10:>14} {last10:>16}")
        print(f"{'new: writer (ms)':18} {write_s[0] * ms:10.1f} {write_s[-1] * ms:10.1f} "
              f"{statistics.median(write_s[:10]) * ms:14.1f} {statistics.median(write_s[-10:]) * ms:16.1f}"
              "   writer thread: G4 code (libtiff) + journal append (2 fsyncs) + meta.json")
        print(f"{'new: call task (ms)':18} {task_s[0] * ms:10.1f} {task_s[-1] * ms:10.1f} "
              f"{statistics.median(task_s[:10]) * ms:14.1f} {statistics.median(task_s[-10:]) * ms:16.1f}"
              "   call task: SHA-256 of the rows, meta entry, snapshot")
        print(f"{'old: rewrite (ms)':18} {old_first * ms:10.1f} {old_last * ms:10.1f} {'':>12}   "
              f"pdf (pikepdf) + tiff rewritten whole (best of {ROUNDS})")
        print(f"ratio old/new at page {PAGES}: {old_last / write_s[-1]:.0f}x; new end-of-call cost (pdf streamed, "
              f"journal renamed to fax.tif): {finish_s * ms:.0f} ms once; fax.pdf {size_pdf / 1e6:.1f} MB, "
              f"fax.tif {size_tif / 1e6:.1f} MB")
        print(f"memory held by the record after page 1: {held[0] / 1024:.0f} KiB, after page {PAGES}: "
              f"{held[-1] / 1024:.0f} KiB, most after any page: {max(held) / 1024:.0f} KiB (tracemalloc, goal <= 2048); "
              f"end-of-call peak {traced['finish_peak'] / 1024:.0f} KiB")
        print(f"process RSS grew {(rss_after - rss_before) / 1024:.1f} MiB over the first {PAGES}-page call (the "
              f"allocator keeps freed page buffers for reuse) and {(rss_second - rss_after) / 1024:+.1f} MiB over a "
              f"second one (traced)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
