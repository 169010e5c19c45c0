"""Whole-page coding through libtiff (via Pillow), for work where a page is complete.

libtiff codes a page far faster than Python can, so outputs (G4 for TIFF-F and PDF) go
through it, and it is the test oracle for our codecs.

Pillow's bilevel defaults are wrong for fax (MinIsBlack, 303-row strips) and its MinIsWhite
path is ~40x slower (it inverts pel by pel). The CCITT coding itself does not depend on the
photometric tag — libtiff codes 0 bits as white runs — so we hand Pillow our bits as they
are (1 = black, which Pillow's mode "1" calls white), let it write its fast MinIsBlack TIFF
with one strip, and take the strip: the data is right for a MinIsWhite fax TIFF. Decoding
mirrors this. Files we write (imaging.tiff.build_tiff) say MinIsWhite.
"""

from __future__ import annotations

import io

from PIL import Image

from .model import BitOrder, Coding
from .tiff import CodedPage, build_tiff, read_strips

_COMPRESSION = {Coding.MH: "group3", Coding.MR: "group3", Coding.MMR: "group4"}
_MIN_IS_BLACK = 1


def image_from_bitmap(bitmap: bytes, width: int, height: int) -> Image.Image:
    """A Pillow mode-'1' image (black shown black) of packed rows with 1 = black."""
    return Image.frombytes("1", (width, height), bitmap, "raw", "1;I")


def bitmap_from_image(image: Image.Image) -> bytes:
    """Packed rows with 1 = black from a Pillow mode-'1' image."""
    return image.tobytes("raw", "1;I")


def encode_with_libtiff(bitmap: bytes, width: int, height: int, coding: Coding, *, bit_order: BitOrder) -> bytes:
    """libtiff's coding of a page (packed rows, 1 = black): the one strip it writes.

    libtiff's G3 strips carry an EOL before every line and no RTC; its G4 strips end with
    EOFB. MR uses libtiff's K (T4Options 2-D).
    """
    tiffinfo = {278: height, 266: 2 if bit_order is BitOrder.LSB_FIRST else 1}
    if coding is not Coding.MMR:
        tiffinfo[292] = 1 if coding is Coding.MR else 0
    buffer = io.BytesIO()
    # Our 1 (black) bits go in as they are: see the module docstring.
    image = Image.frombytes("1", (width, height), bitmap, "raw", "1")
    image.save(buffer, "TIFF", compression=_COMPRESSION[coding], tiffinfo=tiffinfo)
    return read_strips(buffer.getvalue())


def decode_with_libtiff(data: bytes, width: int, height: int, coding: Coding, *, bit_order: BitOrder) -> bytes:
    """Packed rows (1 = black) of ``height`` lines of coded ``data``, decoded by libtiff.

    Raises OSError (from Pillow) when libtiff cannot decode the data.
    """
    tiff = build_tiff([CodedPage(width, height, 204, 196, coding, bit_order, data)], photometric=_MIN_IS_BLACK)
    with Image.open(io.BytesIO(tiff)) as image:
        image.load()
        return image.tobytes("raw", "1")
