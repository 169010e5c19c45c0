"""Octets <-> strings of line bits ('0'/'1' in transmission order).

The codecs work on bit strings because CPython can search, slice and tokenise them with
C-speed str/re operations, which beats bit arithmetic done one code at a time in Python.
"""

from __future__ import annotations

from .model import BitOrder

_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def reverse_bits(data: bytes) -> bytes:
    """Each octet with its bit order reversed."""
    return data.translate(_REVERSED)


def to_bits(data: bytes, bit_order: BitOrder) -> str:
    """The line bits carried by ``data``, first bit first."""
    if not data:
        return ""
    if bit_order is BitOrder.LSB_FIRST:
        data = data.translate(_REVERSED)
    return format(int.from_bytes(data, "big"), f"0{len(data) * 8}b")


def from_bits(bits: str, bit_order: BitOrder) -> bytes:
    """Octets carrying ``bits``, zero-padded to a whole octet."""
    pad = -len(bits) % 8
    if pad:
        bits += "0" * pad
    if not bits:
        return b""
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    if bit_order is BitOrder.LSB_FIRST:
        data = data.translate(_REVERSED)
    return data


def pack_pixels(pixels: str) -> bytes:
    """Pack a string of pixels ('1' = black) MSB first; its length must be a multiple of 8."""
    if not pixels:
        return b""
    return int(pixels, 2).to_bytes(len(pixels) // 8, "big")


def unpack_pixels(bitmap: bytes) -> str:
    """The pixels of a packed bitmap as '0'/'1' characters."""
    if not bitmap:
        return ""
    return format(int.from_bytes(bitmap, "big"), f"0{len(bitmap) * 8}b")
