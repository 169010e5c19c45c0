"""Fax page imaging: T.4 MH/MR and T.6 MMR coding, page outputs, documents to send.

Public API (used by the T.30 engine and the service):

* ``Coding``, ``BitOrder`` — what was negotiated; T.38 carries ``BitOrder.MSB_FIRST``.
* ``StreamingDecoder(coding, width, bit_order=...)`` — ``feed(bytes)`` as data arrives,
  ``page_ended``, ``rows``, ``finish() -> DecodedPage`` (rows, bad rows, longest bad run).
* ``decode_whole_page(data, coding, width, bit_order=...) -> DecodedPage`` — the same
  answer for a whole, error-free page (ECM), through libtiff where proven equal (wholepage).
* ``encode_page(bitmap, width, coding, k=2, min_row_bits=0, bit_order=...) -> bytes``;
  ``mr_k(y_dpi)`` gives the K for MR at a resolution (2 at 98 lpi, 4 at 196, ...),
  ``min_row_bits(bit_rate, scan_line_ms)`` the fill target for the minimum scan-line time.
* ``Page`` (a bilevel page with its resolution); ``imaging.output`` writes TIFF-F, PDF and
  PNG, grows a TIFF page by page (``TiffAppender``, valid after a crash at any point) and
  streams a PDF from coded pages (``write_pdf_coded``; ``imaging.tiff.iter_coded_pages``
  reads them back one at a time); ``imaging.documents.load_document`` turns
  PDF/TIFF/PNG/JPEG into pages or raises ``DocumentError``.

Bitmaps everywhere are packed rows, most significant bit first, 1 = black (PBM P4), with a
stride of width // 8 bytes. This package imports nothing from t38gw, sip or udptl.
"""

from .decoder import StreamingDecoder
from .encoder import encode_page, min_row_bits, mr_k
from .model import RESOLUTIONS, STANDARD_WIDTHS, BitOrder, Coding, DecodedPage, DocumentError, Page
from .wholepage import decode_whole_page

__all__ = [
    "BitOrder",
    "Coding",
    "DecodedPage",
    "DocumentError",
    "Page",
    "RESOLUTIONS",
    "STANDARD_WIDTHS",
    "StreamingDecoder",
    "decode_whole_page",
    "encode_page",
    "min_row_bits",
    "mr_k",
]
