"""Document -> fax pages: rasterisation speed of a 10-page PDF, beside pdfium's bare render.

Builds a 10-page A4 PDF of text (60 lines of Helvetica a page, a ruled table, a grey box),
then times, per CPU-second (process time, best of BENCH_ROUNDS):
  * ours: ``imaging.sendpages.pages_for_fax`` — open and check the file (qpdf), draw each page
    (pdfium), resample to the pel pitch, halftone, pack to 1-bit rows, lay on the A4 sheet;
  * reference: pypdfium2 alone drawing the same pages in grey at the same scale (the floor:
    what any PDF-to-fax path pays), and the ratio ours/reference;
at 204 x 196 and 204 x 98 dpi, 1728 pels. Then the cover page and the header line, per page.
Run: .venv/bin/python bench/documents.py   (BENCH_ROUNDS to vary)
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pikepdf  # noqa: E402
import pypdfium2 as pdfium  # noqa: E402

from imaging.sendpages import pages_for_fax  # noqa: E402
from t38gw.cover import CoverFields, add_header_line, cover_page  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PAGES = 10
WIDTH = 1728
A4_PT = (595.28, 841.89)


def text_pdf(path: Path) -> None:
    pdf = pikepdf.new()
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
    for number in range(PAGES):
        page = pdf.add_blank_page(page_size=A4_PT)
        page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
        lines = [b"BT /F1 10 Tf 12 TL 56 780 Td"]
        for line in range(60):
            lines.append(b"(Page %d line %d: Patient J. Doe, lab result 4.%d mmol/L, reference 3.5-5.1, reviewed.) '" % (number + 1, line, line % 10))
        lines.append(b"ET")
        lines.append(b"0.5 w 56 40 m 540 40 l S 56 60 m 540 60 l S 0.6 g 400 600 120 80 re f 0 g")
        page.Contents = pdf.make_stream(b"\n".join(lines))
    pdf.save(path)


def best_rate(work, pages: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return pages / best


def pdfium_render(path: Path, x_dpi: float) -> None:
    document = pdfium.PdfDocument(str(path))
    try:
        for index in range(len(document)):
            page = document[index]
            scale = (WIDTH - 0.01) / (WIDTH / x_dpi * 72)  # the same finer-axis scale as ours
            page.render(scale=scale, grayscale=True, fill_color=(255, 255, 255, 255), no_smoothimage=True).to_pil()
            page.close()
    finally:
        document.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ten.pdf"
        text_pdf(path)
        print(f"{PAGES}-page A4 text PDF ({path.stat().st_size} bytes) -> {WIDTH}-pel fax pages, best of {ROUNDS} rounds, pages per CPU-second")
        print(f"{'resolution':10} {'ours pages_for_fax':>19} {'pdfium render only':>19} {'time ours/ref':>14}")
        for x_dpi, y_dpi in ((204, 196), (204, 98)):
            pages = pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=WIDTH)
            assert len(pages) == PAGES and all(any(page.bitmap) for page in pages)
            ours = best_rate(lambda x_dpi=x_dpi, y_dpi=y_dpi: pages_for_fax([path], x_dpi=x_dpi, y_dpi=y_dpi, width_px=WIDTH), PAGES)
            reference = best_rate(lambda x_dpi=x_dpi: pdfium_render(path, x_dpi), PAGES)
            print(f"{x_dpi}x{y_dpi:<6} {ours:19.1f} {reference:19.1f} {reference / ours:13.2f}x")
        when = datetime.datetime(2026, 12, 6, 14, 5, tzinfo=datetime.UTC)
        fields = CoverFields(when=when, pages=PAGES + 1, sender="St Elsewhere Hospital", sender_number="+44 20 7946 0000",
                             recipient="Dr A. Example", recipient_number="+44 161 496 0000", note="Lab results.")
        page = pages_for_fax([path], x_dpi=204, y_dpi=196, width_px=WIDTH)[0]
        covers = best_rate(lambda: [cover_page(fields, x_dpi=204, y_dpi=196) for _ in range(PAGES)], PAGES)
        headers = best_rate(
            lambda: [add_header_line(page, ident="+44 20 7946 0000", when=when, page_no=n, pages=PAGES) for n in range(PAGES)], PAGES
        )
        print(f"204x196: cover page {covers:.1f} pages/s, header line {headers:.1f} pages/s (beside ours above)")


if __name__ == "__main__":
    main()
