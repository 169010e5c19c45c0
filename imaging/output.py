"""Pages out: multi-page TIFF Class F (G4), PDF at true physical size, PNG previews.

These write to the path given; writing to a temporary name and renaming (so a reader never
sees half a file) is the service's job.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import pikepdf
from PIL import Image

from .libtiff import encode_with_libtiff, image_from_bitmap
from .model import BitOrder, Coding, Page
from .tiff import CodedPage, build_tiff

PathLike = str | os.PathLike


@functools.lru_cache(maxsize=16)
def g4_stream(page: Page) -> bytes:
    """The page coded in T.6 (G4), MSB first, ending with EOFB: what TIFF-F and PDF embed.

    Cached, so an archive writing both a TIFF and a PDF of the same pages codes them once.
    """
    return encode_with_libtiff(page.bitmap, page.width, page.height, Coding.MMR, bit_order=BitOrder.MSB_FIRST)


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


def write_pdf(pages: Sequence[Page], path: PathLike) -> None:
    """Write a PDF with one page per fax page at its true physical size.

    Each page is an image XObject holding the page's G4 stream as it is (/CCITTFaxDecode,
    /K -1), drawn over the whole page: a 1728-pel 204x98 dpi page is 8.47 in wide and
    rows/98 in tall. Raises ValueError for an empty page list or a page with no rows.
    """
    _check(pages)
    pdf = pikepdf.new()
    for page in pages:
        width_pt = page.width * 72 / page.x_dpi
        height_pt = page.height * 72 / page.y_dpi
        image = pikepdf.Stream(pdf, g4_stream(page))
        image.Type = pikepdf.Name.XObject
        image.Subtype = pikepdf.Name.Image
        image.Width = page.width
        image.Height = page.height
        image.BitsPerComponent = 1
        image.ColorSpace = pikepdf.Name.DeviceGray
        image.Filter = pikepdf.Name.CCITTFaxDecode
        # PDF 32000 7.4.6: K < 0 is pure 2-D (T.6); BlackIs1 false makes 0 pels black,
        # which is what DeviceGray 0 means.
        image.DecodeParms = pikepdf.Dictionary(K=-1, Columns=page.width, Rows=page.height, BlackIs1=False)
        pdf_page = pdf.add_blank_page(page_size=(width_pt, height_pt))
        pdf_page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        pdf_page.Contents = pdf.make_stream(f"q {width_pt:.4f} 0 0 {height_pt:.4f} 0 0 cm /Im0 Do Q".encode())
    pdf.save(path)


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
