"""Documents to send (PDF, TIFF, PNG, JPEG) -> the fax pages that go on the line.

``pages_for_fax`` is the sending side's loader: where ``documents.load_document`` keeps each
page's own length (what the receive side and the archive want), a page to send is laid on the
sheet the far end prints on. How each page is made:

* **Pass-through.** A bilevel TIFF page already ``width_px`` pels wide at the target
  resolution (within 2 %, so R8's 203.2 x 97.8 matches 204 x 98) is sent pel for pel, at
  its own length: it was made for fax, and touching it could only lose something.
* **Width.** Anything else is scaled to fit the line (``width_px / x_dpi`` inches: 1728 pels
  at 204 dpi is 215 mm, so an A4 page fits as it is and US Letter shrinks by 0.3 %), never
  enlarged (an image without a resolution spans the line), and centred. Both axes get the
  same scale in inches, then each axis its own pel pitch, so a circle stays a circle at
  204 x 98 as at 408 x 391 (T.4 2.2: the pel pitch of each resolution).
* **Landscape.** A page wider than it is tall that would have to shrink to fit the line is
  turned a quarter (counter-clockwise: its top to the left edge, as printers turn landscape
  pages) so it is sent at full size; ``turn_landscape=False`` keeps it as it is, shrunk.
* **Length.** ``page_length`` names the sheet (A4 297 mm, Letter 11 in, ...). A shorter page
  is padded with white to the full sheet, as a scanner feeding that sheet would send it. A
  longer page whose extra rows are blank is cropped; one with ink below the sheet's end is
  scaled down as a whole (both axes, never squashed) until it fits, so nothing is lost.
  ``"unlimited"`` keeps each page's own length.
* **Grey and colour.** ``halftone="threshold"`` cuts at mid-grey: text and line art stay
  crisp, and clinical documents are mostly text. Where a page is drawn finer than the rows
  it is sent in (204 x 98), the cut is at light grey instead, so strokes thinner than a row
  are not lost. ``"dither"`` uses Floyd-Steinberg error
  diffusion, which keeps photographs recognisable. ``"auto"`` (the default) thresholds
  unless the page is photograph-like: more than ``PHOTO_FRACTION`` of its pels are mid-tones
  outside the page's most common grey level band (a scan on grey paper is one tall peak in
  its histogram and is thresholded; a photograph spreads across the tones and is dithered).

Every problem is a DocumentError naming the file; pages are returned only when all were
made (never a half-made fax), and the total is bounded by ``max_pages`` before anything is
drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

from PIL import Image, ImageSequence

from .documents import (
    MAX_PAGE_INCHES,
    MAX_SOURCE_PIXELS,
    _grey,
    _image_dpi,
    check_geometry,
    pdf_page_count,
    reading,
    render_pdf_page,
    sniff,
)
from .libtiff import bitmap_from_image
from .model import DocumentError, Page

Halftone = Literal["auto", "threshold", "dither"]

# Sheet lengths in inches (ISO 216 / ANSI); T.30 DIS bits 19-20 name A4, B4 and unlimited.
PAGE_LENGTHS: dict[str, float | None] = {
    "a4": 297 / 25.4,
    "letter": 11.0,
    "legal": 14.0,
    "b4": 353 / 25.4,
    "a3": 420 / 25.4,
    "unlimited": None,
}
DEFAULT_MAX_PAGES = 200
PASS_THROUGH_TOLERANCE = 0.02
PHOTO_FRACTION = 0.10
_MIDTONES = range(32, 224)
# Pillow's "1" mode calls 255 white; marking ink 255 instead lets the packed rows come out
# with 1 = black as they are (tobytes "1"), a fifth faster than inverting them ("1;I").
_INK_BELOW_MID_GREY = [255] * 128 + [0] * 128
# Where rows are merged (98 lpi from a page drawn at 204), a thin horizontal stroke (the foot
# of an "L", a table rule) becomes a half-grey row that a mid-grey cut drops ("mmol/L" read
# as "mmol/I"): cut lighter there, so any row a stroke crosses keeps it.
_INK_BELOW_LIGHT_GREY = [255] * 192 + [0] * 64


def pages_for_fax(
    documents: Sequence[str | os.PathLike[str]],
    *,
    x_dpi: float,
    y_dpi: float,
    width_px: int,
    page_length: str = "a4",
    max_pages: int = DEFAULT_MAX_PAGES,
    halftone: Halftone = "auto",
    turn_landscape: bool = True,
) -> list[Page]:
    """The fax pages of ``documents`` (files, in order) at ``x_dpi`` x ``y_dpi``, ``width_px`` wide.

    Pages are packed 1-bit rows, MSB first, 1 = black (``imaging.Page``). See the module
    docstring for how pages are scaled, laid on the ``page_length`` sheet and halftoned.
    Raises DocumentError (a sentence for the user naming the file) for no documents, a file
    that is missing, not a PDF/TIFF/PNG/JPEG, encrypted, damaged or without pages, or more
    than ``max_pages`` pages in all; ValueError for a bad geometry, sheet or halftone name.
    """
    check_geometry(x_dpi, y_dpi, width_px)
    if page_length not in PAGE_LENGTHS:
        raise ValueError(f"page_length must be one of {sorted(PAGE_LENGTHS)}, not {page_length!r}")
    if halftone not in ("auto", "threshold", "dither"):
        raise ValueError(f"halftone must be auto, threshold or dither, not {halftone!r}")
    if max_pages < 1:
        raise ValueError(f"max_pages must be at least 1, not {max_pages}")
    if not documents:
        raise DocumentError("there is no document to send.")
    length_in = PAGE_LENGTHS[page_length]
    sheet = _Sheet(x_dpi, y_dpi, width_px, None if length_in is None else round(length_in * y_dpi), halftone, turn_landscape)
    sources = [sniff(document) for document in documents]
    counts = []
    for path, name, kind in sources:
        with reading(name, kind):
            count = pdf_page_count(path, name) if kind == "pdf" else _frame_count(path)
        if count == 0:
            raise DocumentError(f"{name}: the document has no pages.")
        counts.append(count)
        if sum(counts) > max_pages:
            raise DocumentError(f"the documents have more than {max_pages} pages, the most one fax may carry.")
    pages: list[Page] = []
    for (path, name, kind), count in zip(sources, counts, strict=True):
        with reading(name, kind):
            made = _pdf_pages(path, name, sheet) if kind == "pdf" else _image_pages(path, name, sheet)
        if len(made) != count:
            raise DocumentError(f"{name}: the document is damaged (its page count is unclear).")
        pages += made
    return pages


class _Sheet:
    """The target: resolution, line width, sheet length in rows (None: unlimited), halftone."""

    def __init__(self, x_dpi: float, y_dpi: float, width: int, rows: int | None, halftone: Halftone, turn: bool) -> None:
        self.x_dpi, self.y_dpi, self.width, self.rows, self.halftone, self.turn = x_dpi, y_dpi, width, rows, halftone, turn

    def lay(self, name: str, index: int, width_in: float, height_in: float, draw_as: Any) -> Page:
        """The page of a source ``width_in`` x ``height_in`` inches; ``draw_as(columns, rows,
        turned)`` draws it in grey, turned a quarter counter-clockwise if ``turned``."""
        line_in = self.width / self.x_dpi
        turned = self.turn and width_in > height_in and width_in > line_in
        if turned:
            width_in, height_in = height_in, width_in

        def draw(columns: int, rows: int) -> Image.Image:
            return cast(Image.Image, draw_as(columns, rows, turned))

        fit = min(1.0, line_in / width_in)
        if height_in * fit > MAX_PAGE_INCHES:
            raise DocumentError(f"{name}: page {index + 1} is {height_in * fit:.0f} inches long, too long to fax.")
        page = self._page(draw, width_in * fit, height_in * fit)
        if self.rows is None:
            return page
        if page.height > self.rows:
            stride = self.width // 8
            if any(page.bitmap[self.rows * stride :]):
                # Ink below the sheet's end: shrink the whole page (both axes) to the sheet.
                fit *= self.rows / self.y_dpi / (height_in * fit)
                page = self._page(draw, width_in * fit, height_in * fit)
            bitmap = page.bitmap[: min(page.height, self.rows) * stride]
        else:
            bitmap = page.bitmap
        padding = bytes(self.width // 8 * self.rows - len(bitmap))
        return Page(self.width, self.rows, self.x_dpi, self.y_dpi, bitmap + padding)

    def _page(self, draw: Any, width_in: float, height_in: float) -> Page:
        columns = min(self.width, max(1, round(width_in * self.x_dpi)))
        rows = max(1, round(height_in * self.y_dpi))
        grey: Image.Image = draw(columns, rows)
        merged = grey.height > rows * 1.3
        if grey.size != (columns, rows):
            if abs(grey.width - columns) <= 1 and abs(grey.height - rows) <= 1:
                grey = grey.crop((0, 0, columns, rows))  # rounding, not scaling: keep pels sharp
            else:
                shrinking = grey.width >= columns and grey.height >= rows
                grey = grey.resize((columns, rows), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
        canvas = Image.new("L", (self.width, rows), 255)
        canvas.paste(grey, ((self.width - columns) // 2, 0))
        if self.halftone == "dither" or (self.halftone == "auto" and photo_like(grey)):
            bitmap = bitmap_from_image(canvas.convert("1", dither=Image.Dither.FLOYDSTEINBERG))
        else:
            bitmap = canvas.point(_INK_BELOW_LIGHT_GREY if merged else _INK_BELOW_MID_GREY, "1").tobytes("raw", "1")
        return Page(self.width, rows, self.x_dpi, self.y_dpi, bitmap)

    def passes_through(self, frame: Image.Image) -> bool:
        dpi = _image_dpi(frame)
        return (
            frame.mode == "1"
            and frame.width == self.width
            and dpi is not None
            and abs(dpi[0] / self.x_dpi - 1) <= PASS_THROUGH_TOLERANCE
            and abs(dpi[1] / self.y_dpi - 1) <= PASS_THROUGH_TOLERANCE
        )


def photo_like(grey: Image.Image) -> bool:
    """Whether a grey page is photograph-like: its mid-tones, less its one most common band of
    16 grey levels (the paper of a scan), cover more than PHOTO_FRACTION of it."""
    histogram = grey.histogram()  # at full size: averaging a sample would turn text into mid-grey
    bands = [sum(histogram[start : start + 16]) for start in range(0, 256, 16)]
    peak = max(range(16), key=bands.__getitem__)
    midtones = sum(histogram[level] for level in _MIDTONES if level // 16 != peak)
    return midtones > PHOTO_FRACTION * grey.width * grey.height


def _frame_count(path: Path) -> int:
    with Image.open(path) as image:
        return int(getattr(image, "n_frames", 1))


def _pdf_pages(path: Path, name: str, sheet: _Sheet) -> list[Page]:
    import pypdfium2 as pdfium  # type: ignore[import-untyped]  # pypdfium2 ships no type information

    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        raise DocumentError(f"{name}: the PDF is damaged and cannot be opened ({error}).") from None
    try:
        pages = []
        for index in range(len(document)):
            page = document[index]
            try:
                width_pt, height_pt = page.get_size()
                if width_pt <= 0 or height_pt <= 0:
                    raise DocumentError(f"{name}: page {index + 1} has no size.")

                def draw(columns: int, rows: int, turned: bool, page: Any = page, index: int = index) -> Image.Image:
                    try:
                        return render_pdf_page(page, columns, rows, sheet.x_dpi, sheet.y_dpi, turned=turned)
                    except pdfium.PdfiumError as error:
                        raise DocumentError(f"{name}: page {index + 1} cannot be drawn ({error}).") from None

                pages.append(sheet.lay(name, index, width_pt / 72, height_pt / 72, draw))
            finally:
                page.close()
        return pages
    finally:
        document.close()


def _image_pages(path: Path, name: str, sheet: _Sheet) -> list[Page]:
    pages = []
    with Image.open(path) as image:
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            if frame.width * frame.height > MAX_SOURCE_PIXELS or frame.width == 0 or frame.height == 0:
                raise DocumentError(f"{name}: page {index + 1} is {frame.width}x{frame.height} pixels, which cannot be faxed.")
            if sheet.passes_through(frame):
                pages.append(Page(sheet.width, frame.height, sheet.x_dpi, sheet.y_dpi, bitmap_from_image(frame)))
                continue
            source_dpi = _image_dpi(frame)
            if source_dpi is None:
                width_in = sheet.width / sheet.x_dpi  # no resolution: the image spans the line
                height_in = width_in * frame.height / frame.width
            else:
                width_in, height_in = frame.width / source_dpi[0], frame.height / source_dpi[1]
            grey = _grey(frame)

            def draw(columns: int, rows: int, turned: bool, grey: Image.Image = grey) -> Image.Image:
                return grey.transpose(Image.Transpose.ROTATE_90) if turned else grey

            pages.append(sheet.lay(name, index, width_in, height_in, draw))
    return pages
