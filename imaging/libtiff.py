"""Whole-page coding through libtiff (via Pillow), for work where a page is complete.

libtiff decodes a page some hundred times faster than Python can, so outputs (G4 for TIFF-F
and PDF) and error-free whole pages (ECM) go through it. Pillow's bilevel defaults are wrong
for fax (MinIsBlack, 303-row strips); every call here sets photometric and one strip.
"""

from __future__ import annotations

import io

from PIL import Image

from .model import BitOrder, Coding
from .tiff import CodedPage, build_tiff, read_strips

_PHOTOMETRIC_MIN_IS_WHITE = 0
_COMPRESSION = {Coding.MH: "group3", Coding.MR: "group3", Coding.MMR: "group4"}


def image_from_bitmap(bitmap: bytes, width: int, height: int) -> Image.Image:
    """A Pillow mode-'1' image of packed rows with 1 = black."""
    return Image.frombytes("1", (width, height), bitmap, "raw", "1;I")


def bitmap_from_image(image: Image.Image) -> bytes:
    """Packed rows with 1 = black from a Pillow mode-'1' image."""
    return image.tobytes("raw", "1;I")


def encode_with_libtiff(bitmap: bytes, width: int, height: int, coding: Coding, *, bit_order: BitOrder) -> bytes:
    """libtiff's coding of a page, as the one strip libtiff writes into a TIFF.

    libtiff's G3 strips carry an EOL before every line and no RTC; its G4 strips end with
    EOFB.
    """
    tiffinfo = {262: _PHOTOMETRIC_MIN_IS_WHITE, 278: height, 266: 2 if bit_order is BitOrder.LSB_FIRST else 1}
    if coding is not Coding.MMR:
        tiffinfo[292] = 1 if coding is Coding.MR else 0
    buffer = io.BytesIO()
    image_from_bitmap(bitmap, width, height).save(
        buffer, "TIFF", compression=_COMPRESSION[coding], tiffinfo=tiffinfo
    )
    return read_strips(buffer.getvalue())


def decode_with_libtiff(data: bytes, width: int, height: int, coding: Coding, *, bit_order: BitOrder) -> bytes:
    """Packed rows (1 = black) of ``height`` lines of coded ``data``, decoded by libtiff.

    Raises OSError (from Pillow) when libtiff cannot decode the data.
    """
    tiff = build_tiff([CodedPage(width, height, 204, 196, coding, bit_order, data)])
    with Image.open(io.BytesIO(tiff)) as image:
        image.load()
        return bitmap_from_image(image.convert("1") if image.mode != "1" else image)
