"""T.4 (MH, MR) and T.6 (MMR) page encoder."""

from __future__ import annotations

import re
from bisect import bisect_right

from . import t4codes
from .bits import from_bits, unpack_pixels
from .model import BitOrder, Coding

_RUN = re.compile("0+|1+")
_WHITE = t4codes.WHITE_RUN_CODE
_BLACK = t4codes.BLACK_RUN_CODE
_VERTICAL = t4codes.VERTICAL
_EOL = t4codes.EOL
# T.4 4.1.4: return to control is six consecutive EOLs (in MR each followed by tag bit 1).
_RTC_MH = _EOL * 6
_RTC_MR = (_EOL + "1") * 6


def _changes(pixels: str) -> list[int]:
    ends = [m.end() for m in _RUN.finditer(pixels)]
    ends.pop()
    if pixels[:1] == "1":
        ends.insert(0, 0)
    return ends


def _code_1d(changes: list[int], width: int) -> str:
    parts = []
    position = 0
    it = iter(changes)
    for start in it:
        end = next(it, width)
        parts.append(_WHITE[start - position])
        parts.append(_BLACK[end - start])
        position = end
    if position < width or not parts:
        parts.append(_WHITE[width - position])
    return "".join(parts)


def _code_2d(changes: list[int], reference: list[int], width: int) -> str:
    # T.4 4.2.1.3.2, Figure 7: choose pass, vertical or horizontal mode for each a1.
    coding = changes + [width, width]
    reference = reference + [width, width, width]
    parts = []
    a0 = -1
    color = 0
    while a0 < width:
        j = bisect_right(coding, a0)
        a1 = coding[j]
        a2 = coding[j + 1]
        i = bisect_right(reference, a0)
        if (i & 1) != color:
            i += 1
        b1 = reference[i]
        b2 = reference[i + 1]
        if b2 < a1:
            parts.append(t4codes.PASS)
            a0 = b2
        elif -3 <= a1 - b1 <= 3:
            parts.append(_VERTICAL[a1 - b1])
            a0 = a1
            color ^= 1
        else:
            first, second = (_WHITE, _BLACK) if color == 0 else (_BLACK, _WHITE)
            parts.append(t4codes.HORIZONTAL)
            parts.append(first[a1 - (a0 if a0 > 0 else 0)])
            parts.append(second[a2 - a1])
            a0 = a2
    return "".join(parts)


# T.4 4.2.1.3.4: K grows with the vertical resolution (2 at 3.85 l/mm, 4 at 7.7 l/mm, ...);
# the same steps as SpanDSP's t4_t6_encode y_res_table, by lines per inch.
_K_BY_RESOLUTION = ((100, 2), (200, 4), (300, 6), (400, 8), (600, 12), (800, 16))


def mr_k(y_dpi: float) -> int:
    """The K (at most K-1 2-D lines after each 1-D line) for MR at ``y_dpi`` lines per inch."""
    for limit, k in _K_BY_RESOLUTION:
        if y_dpi <= limit + 1:
            return k
    return 24


def min_row_bits(bit_rate: int, scan_line_ms: float) -> int:
    """Bits a coded line (EOL, data and fill) must take at ``bit_rate`` to last at least
    the minimum scan-line time negotiated in DIS/DCS (T.30 Table 2: 0, 5, 10, 20 or 40 ms)."""
    return -(-int(bit_rate * scan_line_ms) // 1000)


def encode_page(
    bitmap: bytes,
    width: int,
    coding: Coding,
    *,
    k: int = 2,
    min_row_bits: int = 0,
    bit_order: BitOrder,
) -> bytes:
    """Encode a page of packed rows (MSB first, 1 = black, stride width//8) for the line.

    MH and MR pages start with an EOL, give every line its EOL (MR: plus the tag bit; every
    ``k``-th line one-dimensional, T.4 4.2.1.3.4) and end with RTC; ``min_row_bits`` pads each
    line with fill zeros so that EOL + line + fill takes at least that many bits (T.4 4.1.3,
    the negotiated minimum scan-line time times the bit rate). MMR pages (T.6) end with EOFB
    and carry no fill. Raises ValueError for a bitmap that does not fit ``width``.
    """
    if width <= 0 or width % 8 or width > t4codes.MAX_WIDTH:
        raise ValueError(f"width must be a multiple of 8 from 8 to {t4codes.MAX_WIDTH}, got {width}")
    stride = width // 8
    if len(bitmap) % stride:
        raise ValueError(f"bitmap of {len(bitmap)} bytes is not whole rows of {stride} bytes")
    if coding is Coding.MR and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    pixels = unpack_pixels(bitmap)
    height = len(bitmap) // stride
    out = []
    reference: list[int] = []
    if coding is Coding.MMR:
        for row in range(height):
            changes = _changes(pixels[row * width : (row + 1) * width])
            out.append(_code_2d(changes, reference, width))
            reference = changes
        out.append(t4codes.EOFB)
    else:
        two_d_allowed = coding is Coding.MR
        for row in range(height):
            changes = _changes(pixels[row * width : (row + 1) * width])
            if not two_d_allowed:
                line = _EOL + _code_1d(changes, width)
            elif row % k == 0:
                line = _EOL + "1" + _code_1d(changes, width)
            else:
                line = _EOL + "0" + _code_2d(changes, reference, width)
            if len(line) < min_row_bits:
                line += "0" * (min_row_bits - len(line))
            out.append(line)
            reference = changes
        out.append(_RTC_MR if two_d_allowed else _RTC_MH)
    return from_bits("".join(out), bit_order)
