"""Pages out: multi-page TIFF Class F (G4), PDF at true physical size, PNG previews.

These write to the path given; writing to a temporary name and renaming (so a reader never
sees half a file) is the service's job.  ``TiffAppender`` grows a TIFF one page at a time
so that the file is a valid TIFF of the pages before after a crash at any point, and
``write_pdf_coded`` streams a PDF from coded pages (one page in memory at a time): a
long fax costs the same per page as a short one.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from collections.abc import Iterable, Sequence
from typing import BinaryIO

from PIL import Image

from . import syscalls
from .libtiff import encode_with_libtiff, image_from_bitmap
from .model import BitOrder, Coding, Page
from .wholepage import _library
from .tiff import FIRST_IFD_POINTER, HEADER, CodedPage, build_tiff, page_block

PathLike = str | os.PathLike[str]


def g4_coding(bitmap: bytes, width: int, height: int) -> bytes:
    """T.6 (G4) coding of packed rows, MSB first, ending with EOFB.

    libtiff called directly (``imaging.wholepage``: the same library and coder, so the same
    octets) costs ~2 ms a page, and lets go of the GIL while it codes; through Pillow,
    which builds and parses a whole TIFF around it, ~13 ms - the biggest part of archiving
    a received page.  Pillow codes the page only where libtiff cannot be loaded by name.
    """
    coded = _library().encode(bitmap, width, height, Coding.MMR)
    if coded is not None:
        return coded
    return encode_with_libtiff(bitmap, width, height, Coding.MMR, bit_order=BitOrder.MSB_FIRST)


@functools.lru_cache(maxsize=16)
def g4_stream(page: Page) -> bytes:
    """The page coded in T.6 (G4), MSB first, ending with EOFB: what TIFF-F and PDF embed.

    Cached, so an archive writing both a TIFF and a PDF of the same pages codes them once.
    """
    return g4_coding(page.bitmap, page.width, page.height)


def _check(pages: Sequence[Page]) -> None:
    if not pages:
        raise ValueError("no pages to write")
    for page in pages:
        if page.height == 0:
            raise ValueError("a page with no rows cannot be written")


def write_tiff(
    pages: Sequence[Page],
    path: PathLike,
    *,
    bad_rows: Sequence[int] | None = None,
    longest_bad_runs: Sequence[int] | None = None,
) -> None:
    """Write a multi-page TIFF Class F: G4, one strip per page, MinIsWhite, true resolution.

    ``bad_rows`` and ``longest_bad_runs`` (per page, from DecodedPage) fill the Class F
    BadFaxLines, CleanFaxData and ConsecutiveBadFaxLines tags.
    Raises ValueError for an empty page list or a page with no rows.
    """
    _check(pages)
    coded = [
        CodedPage(
            page.width, page.height, page.x_dpi, page.y_dpi, Coding.MMR, BitOrder.MSB_FIRST, g4_stream(page),
            bad_rows=bad_rows[index] if bad_rows else 0,
            longest_bad_run=longest_bad_runs[index] if longest_bad_runs else 0,
        )
        for index, page in enumerate(pages)
    ]
    with open(path, "wb") as file:
        file.write(build_tiff(coded))


def coded_page(page: Page, *, bad_rows: int = 0, longest_bad_run: int = 0, cached: bool = False) -> CodedPage:
    """The page as TIFF-F and PDF store it: G4 (T.6), MSB first.

    ``cached`` goes through g4_stream's cache (which keeps the page, bitmap and all); a
    caller that keeps pages compressed to save memory leaves it off.
    """
    if cached:
        data = g4_stream(page)
    else:
        data = g4_coding(page.bitmap, page.width, page.height)
    return CodedPage(page.width, page.height, page.x_dpi, page.y_dpi, Coding.MMR, BitOrder.MSB_FIRST, data,
                     bad_rows=bad_rows, longest_bad_run=longest_bad_run)


def write_pdf(pages: Sequence[Page], path: PathLike) -> None:
    """Write a PDF with one page per fax page at its true physical size (see write_pdf_coded).

    Raises ValueError for an empty page list or a page with no rows.
    """
    _check(pages)
    write_pdf_coded((coded_page(page, cached=True) for page in pages), path)


def write_pdf_coded(pages: Iterable[CodedPage], path: PathLike) -> int:
    """Stream a PDF of G4 (MSB-first) coded pages to ``path``; returns the page count.

    Each page is an image XObject holding the page's G4 stream as it is (/CCITTFaxDecode,
    /K -1), drawn over the whole page: a 1728-pel 204x98 dpi page is 8.47 in wide and
    rows/98 in tall.  Pages are written as they come, so memory holds one page.
    Raises ValueError for no pages, a page with no rows, or a page not coded G4 MSB-first.
    """
    with open(path, "wb") as file:
        return _pdf_coded(pages, file)


def pdf_coded_bytes(pages: Iterable[CodedPage]) -> bytes:
    """The PDF ``write_pdf_coded`` writes, in memory (a short fax's archive copy and
    webhook document, built once)."""
    buffer = io.BytesIO()
    _pdf_coded(pages, buffer)
    return buffer.getvalue()


def _pdf_coded(pages: Iterable[CodedPage], file: BinaryIO) -> int:
    offsets: list[int] = [0, 0]  # objects 1 (catalog) and 2 (page tree) are written last
    kids: list[str] = []
    position = 0

    def emit(chunk: bytes) -> None:
        nonlocal position
        file.write(chunk)
        position += len(chunk)

    def start_object() -> int:
        offsets.append(position)
        emit(f"{len(offsets)} 0 obj\n".encode())
        return len(offsets)

    emit(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    for page in pages:
        if page.height == 0:
            raise ValueError("a page with no rows cannot be written")
        if page.coding is not Coding.MMR or page.bit_order is not BitOrder.MSB_FIRST:
            raise ValueError("PDF pages must be G4 (T.6) coded most significant bit first")
        width_pt = page.width * 72 / page.x_dpi
        height_pt = page.height * 72 / page.y_dpi
        number = len(offsets) + 1
        image, contents = number + 1, number + 2
        start_object()
        emit((f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width_pt:.4f} {height_pt:.4f}] "
              f"/Resources << /XObject << /Im0 {image} 0 R >> >> /Contents {contents} 0 R >>\nendobj\n").encode())
        kids.append(f"{number} 0 R")
        start_object()
        # PDF 32000 7.4.6: K < 0 is pure 2-D (T.6); BlackIs1 false makes 0 pels black,
        # which is what DeviceGray 0 means.
        emit((f"<< /Type /XObject /Subtype /Image /Width {page.width} /Height {page.height} "
              f"/BitsPerComponent 1 /ColorSpace /DeviceGray /Filter /CCITTFaxDecode "
              f"/DecodeParms << /K -1 /Columns {page.width} /Rows {page.height} /BlackIs1 false >> "
              f"/Length {len(page.data)} >>\nstream\n").encode())
        emit(page.data)
        emit(b"\nendstream\nendobj\n")
        draw = f"q {width_pt:.4f} 0 0 {height_pt:.4f} 0 0 cm /Im0 Do Q".encode()
        start_object()
        emit(f"<< /Length {len(draw)} >>\nstream\n".encode() + draw + b"\nendstream\nendobj\n")
    if not kids:
        raise ValueError("no pages to write")
    offsets[1] = position
    emit(f"2 0 obj\n<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>\nendobj\n".encode())
    offsets[0] = position
    emit(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
    xref = position
    emit(f"xref\n0 {len(offsets) + 1}\n0000000000 65535 f\r\n".encode())
    emit(b"".join(f"{offset:010d} 00000 n\r\n".encode() for offset in offsets))
    emit(f"trailer\n<< /Size {len(offsets) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return len(kids)


class TiffAppender:
    """Grows a TIFF Class F file at ``path`` one page at a time (created empty, ``mode``).

    ``append`` writes the page's strip and IFD after the last page, fsyncs, and only then
    points the previous IFD's next-IFD offset (or the header) at it and fsyncs again: a
    crash at any moment leaves a valid TIFF of the pages appended before (TIFF 6.0 section 2:
    a reader follows the IFD chain and ignores bytes nothing points at).  PageNumber says
    "total unknown" (0) until ``finish`` fills in the count.  Each append costs the same,
    whatever the page count.  Raises OSError as the file system does; after a failed append
    the file still holds the earlier pages and ``append`` may be called again.
    """

    def __init__(self, path: PathLike, *, mode: int = 0o666, software: str = "t38gw") -> None:
        self.path = path
        self.software = software
        self.pages = 0
        self._end = len(HEADER)
        self._tail_dirty = False  # a failed append may have left bytes after _end
        self._pointer = FIRST_IFD_POINTER
        self._page_numbers: list[int] = []
        # Only the fsyncs let go of the GIL: see imaging.syscalls.
        fd = syscalls.open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            syscalls.fchmod(fd, mode)
            syscalls.pwrite_all(fd, HEADER, 0)
            os.fsync(fd)
        finally:
            syscalls.close(fd)

    def append(self, page: CodedPage) -> None:
        block = page_block(page, self._end, self.pages, 0, software=self.software)
        fd = syscalls.open_file(self.path, os.O_WRONLY)
        try:
            if self._tail_dirty:
                os.ftruncate(fd, self._end)  # drop what a failed append left
            self._tail_dirty = True
            syscalls.pwrite_all(fd, block.data, self._end)
            os.fsync(fd)  # the page is on disk before anything points at it
            syscalls.pwrite_all(fd, struct.pack("<I", block.ifd_offset), self._pointer)
            os.fsync(fd)
            self._tail_dirty = False
        finally:
            syscalls.close(fd)
        self._end += len(block.data)
        self._pointer = block.next_pointer_offset
        self._page_numbers.append(block.page_number_offset)
        self.pages += 1

    def finish(self) -> None:
        """Write the page count into every PageNumber tag (in place, one word each)."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for number, offset in enumerate(self._page_numbers):
                syscalls.pwrite_all(fd, struct.pack("<HH", number, self.pages), offset)
            os.fsync(fd)
        finally:
            os.close(fd)


def preview_image(page: Page) -> Image.Image:
    """The page scaled vertically to square pixels at its horizontal resolution."""
    image = image_from_bitmap(page.bitmap, page.width, page.height)
    height = max(1, round(page.height * page.x_dpi / page.y_dpi))
    if height > page.height:
        image = image.resize((page.width, height), Image.Resampling.NEAREST)
    elif height < page.height:  # e.g. 300x600: shrink rows, keep their grey
        image = image.convert("L").resize((page.width, height), Image.Resampling.BOX)
    return image


def write_png(page: Page, path: PathLike) -> None:
    """Write a PNG preview of one page with square pixels (see preview_image)."""
    preview_image(page).save(path, "PNG", dpi=(page.x_dpi, page.x_dpi))
