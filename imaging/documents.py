"""Documents in (PDF, TIFF, PNG, JPEG) -> bilevel fax pages at the chosen resolution and width.

Every page is scaled to fit the fax page width (never enlarged), keeps its aspect at the
target x/y resolution, is centred across the line and thresholded at mid-grey (text stays
crisp; clinical documents are mostly text). Any problem with the file becomes a
DocumentError with a sentence for the user; pages are returned only when all of them were
made, so there is never a half-made document.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from PIL import Image, ImageSequence

from .libtiff import bitmap_from_image
from .model import DocumentError, Page

MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_PAGES = 1000
MAX_PAGE_INCHES = 200.0  # an "unlimited length" page still ends somewhere: 5 m
MAX_SOURCE_PIXELS = 400_000_000
_THRESHOLD = [0] * 128 + [255] * 128
_KINDS = (
    (b"%PDF-", "pdf"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)


def load_document(path: str | os.PathLike[str], *, x_dpi: float, y_dpi: float, width: int) -> list[Page]:
    """Turn a PDF, TIFF (any), PNG or JPEG file into fax pages ``width`` pels wide.

    Raises DocumentError (message meant for the user) for a file that is missing, not one of
    those types, encrypted, empty, damaged or absurdly large; ValueError for a bad
    resolution or width (our own misuse).
    """
    check_geometry(x_dpi, y_dpi, width)
    path, name, kind = sniff(path)
    geometry = (x_dpi, y_dpi, width)
    with reading(name, kind):
        pages = _load_pdf(path, name, geometry) if kind == "pdf" else _load_image(path, name, geometry)
    if not pages:
        raise DocumentError(f"{name}: the document has no pages.")
    return pages


def check_geometry(x_dpi: float, y_dpi: float, width: int) -> None:
    """Raise ValueError for a resolution or line width no fax page can have (our own misuse)."""
    if width <= 0 or width % 8 or x_dpi <= 0 or y_dpi <= 0:
        raise ValueError(f"bad fax geometry: width {width}, {x_dpi}x{y_dpi} dpi")


def sniff(path: str | os.PathLike[str]) -> tuple[Path, str, str]:
    """``(path, name, kind)`` of a file to fax, kind "pdf" or an image type, by its magic bytes.

    Raises DocumentError for a missing, unreadable, empty, oversized or unknown file.
    """
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as error:
        raise DocumentError(f"{name}: the file cannot be read ({error.strerror or error}).") from None
    if size == 0:
        raise DocumentError(f"{name}: the file is empty.")
    if size > MAX_FILE_BYTES:
        raise DocumentError(f"{name}: the file is too large to fax ({size // (1024 * 1024)} MB).")
    kind = next((k for magic, k in _KINDS if head.startswith(magic)), None)
    if kind is None and b"%PDF-" in head:
        kind = "pdf"  # some PDFs have junk before the header; PDF readers accept it
    if kind is None:
        raise DocumentError(f"{name}: this is not a document we can fax; send a PDF, TIFF, PNG or JPEG file.")
    return path, name, kind


@contextmanager
def reading(name: str, kind: str) -> Iterator[None]:
    """Turn whatever a decoder library raises while reading the file into a DocumentError."""
    try:
        yield
    except DocumentError:
        raise
    except Image.DecompressionBombError:
        raise DocumentError(f"{name}: the image is too large to fax.") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as error:
        raise DocumentError(f"{name}: the file is damaged or not readable as {kind.upper()} ({error}).") from None
    except Exception as error:  # a decoder library tripping over odd input: still the file's fault
        raise DocumentError(f"{name}: the file could not be read as {kind.upper()}.") from error


def pdf_page_count(path: Path, name: str) -> int:
    """How many pages a PDF has, checked by qpdf; DocumentError if encrypted or damaged."""
    import pikepdf

    # qpdf (pikepdf) tells encryption and structure apart clearly; pdfium then draws.
    try:
        with pikepdf.open(path) as structure:
            return len(structure.pages)
    except pikepdf.PasswordError:
        raise DocumentError(f"{name}: the PDF is password-protected; send an unprotected copy.") from None
    except pikepdf.PdfError as error:
        raise DocumentError(f"{name}: the PDF is damaged and cannot be opened ({error}).") from None


def render_pdf_page(page: Any, columns: int, rows: int, x_dpi: float, y_dpi: float, *, turned: bool = False) -> Image.Image:
    """A pypdfium2 page drawn in grey, about ``columns`` x ``rows`` pels (the caller resamples);
    ``turned``: a quarter turn counter-clockwise (``columns`` then spans the page's height)."""
    width_pt, height_pt = page.get_size()
    if turned:
        width_pt, height_pt = height_pt, width_pt
    # pdfium scales both axes alike and rounds the bitmap size up: aim the finer
    # axis a hair under its pel count so it comes out exact, resample the other.
    if x_dpi >= y_dpi:
        scale = (columns - 0.01) / width_pt
    else:
        scale = (rows - 0.01) / height_pt
    rendered = page.render(
        scale=scale, rotation=270 if turned else 0, grayscale=True, fill_color=(255, 255, 255, 255), no_smoothimage=True
    ).to_pil()  # pdfium turns clockwise: 270 is a quarter counter-clockwise
    return cast(Image.Image, rendered).convert("L")


def _load_pdf(path: Path, name: str, geometry: tuple[float, float, int]) -> list[Page]:
    import pypdfium2 as pdfium  # type: ignore[import-untyped]  # pypdfium2 ships no type information

    count = pdf_page_count(path, name)
    if count == 0:
        raise DocumentError(f"{name}: the document has no pages.")
    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        raise DocumentError(f"{name}: the PDF is damaged and cannot be opened ({error}).") from None
    try:
        if len(document) != count:
            raise DocumentError(f"{name}: the PDF is damaged (its page count is unclear).")
        if count > MAX_PAGES:
            raise DocumentError(f"{name}: the PDF has {count} pages; at most {MAX_PAGES} can be faxed.")
        pages = []
        x_dpi, y_dpi, width = geometry
        for index in range(count):
            page = document[index]
            try:
                width_pt, height_pt = page.get_size()
                if width_pt <= 0 or height_pt <= 0:
                    raise DocumentError(f"{name}: page {index + 1} has no size.")
                fit = _fit(width_pt / 72, height_pt / 72, name, index, width / x_dpi)
                columns, rows = _target_size(width_pt / 72 * fit, height_pt / 72 * fit, geometry)
                try:
                    rendered = render_pdf_page(page, columns, rows, x_dpi, y_dpi)
                except pdfium.PdfiumError as error:
                    raise DocumentError(f"{name}: page {index + 1} cannot be drawn ({error}).") from None
                pages.append(_fax_page(rendered, columns, rows, geometry))
            finally:
                page.close()
        return pages
    finally:
        document.close()


def _load_image(path: Path, name: str, geometry: tuple[float, float, int]) -> list[Page]:
    x_dpi, y_dpi, width = geometry
    pages = []
    with Image.open(path) as image:
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            if index >= MAX_PAGES:
                raise DocumentError(f"{name}: the file has more than {MAX_PAGES} pages.")
            if frame.width * frame.height > MAX_SOURCE_PIXELS or frame.width == 0 or frame.height == 0:
                raise DocumentError(f"{name}: page {index + 1} is {frame.width}x{frame.height} pixels, which cannot be faxed.")
            source_dpi = _image_dpi(frame)
            if source_dpi is None:
                # No resolution: let the image span the fax line.
                width_in = width / x_dpi
                height_in = width_in * frame.height / frame.width
            else:
                width_in, height_in = frame.width / source_dpi[0], frame.height / source_dpi[1]
            fit = _fit(width_in, height_in, name, index, width / x_dpi)
            columns, rows = _target_size(width_in * fit, height_in * fit, geometry)
            pages.append(_fax_page(_grey(frame), columns, rows, geometry))
    return pages


def _image_dpi(frame: Image.Image) -> tuple[float, float] | None:
    dpi: Any = frame.info.get("dpi")  # whatever the file says
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    if not (10 <= x <= 10_000 and 10 <= y <= 10_000):
        return None
    return x, y


def _grey(frame: Image.Image) -> Image.Image:
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if frame.mode == "L":
        return frame.copy()
    if frame.mode.startswith("I") or frame.mode == "F":  # 16/32-bit grey: scale to 8 bits
        image = frame.convert("F")
        high = cast(float, image.getextrema()[1])  # one band: (min, max)
        top = 65535.0 if high > 255 else 255.0
        return image.point(lambda v: v * (255.0 / top)).convert("L")
    return frame.convert("L")


def _fit(width_in: float, height_in: float, name: str, index: int, line_in: float) -> float:
    fit = min(1.0, line_in / width_in)
    if height_in * fit > MAX_PAGE_INCHES:
        raise DocumentError(f"{name}: page {index + 1} is {height_in * fit:.0f} inches long, too long to fax.")
    return fit


def _target_size(width_in: float, height_in: float, geometry: tuple[float, float, int]) -> tuple[int, int]:
    x_dpi, y_dpi, width = geometry
    return min(width, max(1, round(width_in * x_dpi))), max(1, round(height_in * y_dpi))


def _fax_page(grey: Image.Image, columns: int, rows: int, geometry: tuple[float, float, int]) -> Page:
    x_dpi, y_dpi, width = geometry
    if grey.size != (columns, rows):
        if abs(grey.width - columns) <= 1 and abs(grey.height - rows) <= 1:
            grey = grey.crop((0, 0, columns, rows))  # rounding, not scaling: keep pels sharp
        else:
            shrinking = grey.width >= columns and grey.height >= rows
            grey = grey.resize((columns, rows), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
    canvas = Image.new("L", (width, rows), 255)
    canvas.paste(grey, ((width - columns) // 2, 0))
    bilevel = canvas.point(_THRESHOLD, "1")
    return Page(width, rows, x_dpi, y_dpi, bitmap_from_image(bilevel))
