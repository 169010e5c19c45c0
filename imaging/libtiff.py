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

from .bits import from_bits
from .model import BitOrder, Coding
from .t4codes import EOL
from .tiff import CodedPage, build_tiff, read_strips

_COMPRESSION = {Coding.MH: "group3", Coding.MR: "group3", Coding.MMR: "group4"}
_MIN_IS_BLACK = 1
_RESUNIT_INCH = 2

#: The MR K values libtiff can code with: tif_fax3.c Fax3PreEncode takes K (its "maxk") 4
#: when the YResolution is over 150 lines per inch, else 2 (T.4 4.2.1.3.4 gives 2 at
#: 3.85 l/mm, 4 at 7.7 l/mm; ``imaging.mr_k``).  Finer resolutions want K 6 and up.
LIBTIFF_MR_K = (2, 4)
_Y_DPI_FOR_K = {2: 98.0, 4: 196.0}

_RTC_BITS = {Coding.MH: EOL * 6, Coding.MR: (EOL + "1") * 6}


def image_from_bitmap(bitmap: bytes, width: int, height: int) -> Image.Image:
    """A Pillow mode-'1' image (black shown black) of packed rows with 1 = black."""
    return Image.frombytes("1", (width, height), bitmap, "raw", "1;I")


def bitmap_from_image(image: Image.Image) -> bytes:
    """Packed rows with 1 = black from a Pillow mode-'1' image."""
    return image.tobytes("raw", "1;I")


def encode_with_libtiff(bitmap: bytes, width: int, height: int, coding: Coding, *, bit_order: BitOrder,
                        k: int = 2) -> bytes:
    """libtiff's coding of a page (packed rows, 1 = black): the one strip it writes.

    libtiff's G3 strips carry an EOL before every line (MR: EOL + tag bit, 1 before a 1-D
    line) and no RTC (``rtc_after_strip`` gives it), without fill: T4Options bit 2
    (EOL byte alignment) stays off, so only the strip's last octet is padded with zeros.
    Its G4 strips end with EOFB.  MR codes at most ``k`` - 1 2-D lines after each 1-D
    line (T.4 4.2.1.3.4); libtiff can do only ``k`` in ``LIBTIFF_MR_K``, else ValueError.
    """
    tiffinfo: dict[int, int | float] = {278: height, 266: 2 if bit_order is BitOrder.LSB_FIRST else 1}
    if coding is not Coding.MMR:
        tiffinfo[292] = 1 if coding is Coding.MR else 0
    if coding is Coding.MR:
        if k not in LIBTIFF_MR_K:
            raise ValueError(f"libtiff codes MR with K {LIBTIFF_MR_K}, not {k}")
        # libtiff takes K from the YResolution (see LIBTIFF_MR_K); the TIFF is thrown away.
        tiffinfo[283] = _Y_DPI_FOR_K[k]
        tiffinfo[296] = _RESUNIT_INCH
    buffer = io.BytesIO()
    # Our 1 (black) bits go in as they are: see the module docstring.
    image = Image.frombytes("1", (width, height), bitmap, "raw", "1")
    image.save(buffer, "TIFF", compression=_COMPRESSION[coding], tiffinfo=tiffinfo)
    return read_strips(buffer.getvalue())


def rtc_after_strip(coding: Coding, *, bit_order: BitOrder) -> bytes:
    """RTC to append to a libtiff MH or MR strip for transmission (T.4 4.1.4: six EOLs,
    in MR each with tag bit 1), from the byte boundary where the strip ends: the zeros
    padding the strip's last octet, and those before RTC here, are fill (T.4 4.1.3)."""
    rtc = _RTC_BITS[coding]
    octets = -(-len(rtc) // 8)
    return from_bits(rtc.rjust(octets * 8, "0"), bit_order)


def decode_with_libtiff(data: bytes, width: int, height: int, coding: Coding, *, bit_order: BitOrder) -> bytes:
    """Packed rows (1 = black) of ``height`` lines of coded ``data``, decoded by libtiff.

    Raises OSError (from Pillow) when libtiff cannot decode the data.
    """
    tiff = build_tiff([CodedPage(width, height, 204, 196, coding, bit_order, data)], photometric=_MIN_IS_BLACK)
    with Image.open(io.BytesIO(tiff)) as image:
        image.load()
        return image.tobytes("raw", "1")
