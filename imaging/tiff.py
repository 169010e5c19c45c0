"""A small TIFF writer (Class F pages carrying CCITT data as it is) and a strip reader.

TIFF 6.0 with the Class F conventions of RFC 2306: one strip per page, PhotometricInterpretation
MinIsWhite, true X/Y resolution, NewSubfileType "page" and PageNumber on every page.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from .model import BitOrder, Coding

_SHORT, _LONG, _RATIONAL, _ASCII = 3, 4, 5, 2
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 16: 8}

TAG_NEW_SUBFILE_TYPE = 254
TAG_IMAGE_WIDTH = 256
TAG_IMAGE_LENGTH = 257
TAG_BITS_PER_SAMPLE = 258
TAG_COMPRESSION = 259
TAG_PHOTOMETRIC = 262
TAG_FILL_ORDER = 266
TAG_STRIP_OFFSETS = 273
TAG_SAMPLES_PER_PIXEL = 277
TAG_ROWS_PER_STRIP = 278
TAG_STRIP_BYTE_COUNTS = 279
TAG_X_RESOLUTION = 282
TAG_Y_RESOLUTION = 283
TAG_T4_OPTIONS = 292
TAG_T6_OPTIONS = 293
TAG_RESOLUTION_UNIT = 296
TAG_PAGE_NUMBER = 297
TAG_SOFTWARE = 305
TAG_BAD_FAX_LINES = 326
TAG_CLEAN_FAX_DATA = 327
TAG_CONSECUTIVE_BAD_FAX_LINES = 328

COMPRESSION_CCITT_T4 = 3
COMPRESSION_CCITT_T6 = 4
T4_OPTION_2D = 1
T4_OPTION_FILL_BITS = 4


@dataclass(frozen=True)
class CodedPage:
    """One page of CCITT coded data as it is to be stored."""

    width: int
    height: int
    x_dpi: float
    y_dpi: float
    coding: Coding
    bit_order: BitOrder
    data: bytes
    bad_rows: int = 0
    longest_bad_run: int = 0


def _rational(value: float) -> tuple[int, int]:
    denominator = 1
    while value * denominator != int(value * denominator) and denominator < 10_000:
        denominator *= 10
    return int(round(value * denominator)), denominator


def build_tiff(pages: Sequence[CodedPage], *, software: str = "t38gw", photometric: int = 0) -> bytes:
    """A little-endian multi-page TIFF holding each page's coded data as one strip.

    ``photometric`` 0 (MinIsWhite) is right for fax; 1 only serves ``imaging.libtiff``,
    where it makes libtiff's decoded bits read as 1 = black without inversion.
    """
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    first_ifd_pointer = 4
    count = len(pages)
    for number, page in enumerate(pages):
        data_offset = len(out)
        out += page.data
        if len(out) % 2:
            out += b"\x00"
        if page.coding is Coding.MMR:
            compression = COMPRESSION_CCITT_T6
            options = (TAG_T6_OPTIONS, _LONG, [0])
        else:
            compression = COMPRESSION_CCITT_T4
            options = (TAG_T4_OPTIONS, _LONG, [T4_OPTION_2D if page.coding is Coding.MR else 0])
        entries = [
            (TAG_NEW_SUBFILE_TYPE, _LONG, [2]),
            (TAG_IMAGE_WIDTH, _LONG, [page.width]),
            (TAG_IMAGE_LENGTH, _LONG, [page.height]),
            (TAG_BITS_PER_SAMPLE, _SHORT, [1]),
            (TAG_COMPRESSION, _SHORT, [compression]),
            (TAG_PHOTOMETRIC, _SHORT, [photometric]),  # MinIsWhite: CCITT white runs are 0 bits
            (TAG_FILL_ORDER, _SHORT, [2 if page.bit_order is BitOrder.LSB_FIRST else 1]),
            (TAG_STRIP_OFFSETS, _LONG, [data_offset]),
            (TAG_SAMPLES_PER_PIXEL, _SHORT, [1]),
            (TAG_ROWS_PER_STRIP, _LONG, [page.height]),
            (TAG_STRIP_BYTE_COUNTS, _LONG, [len(page.data)]),
            (TAG_X_RESOLUTION, _RATIONAL, [_rational(page.x_dpi)]),
            (TAG_Y_RESOLUTION, _RATIONAL, [_rational(page.y_dpi)]),
            options,
            (TAG_RESOLUTION_UNIT, _SHORT, [2]),  # inch
            (TAG_PAGE_NUMBER, _SHORT, [number, count]),
            (TAG_SOFTWARE, _ASCII, software.encode() + b"\x00"),
            (TAG_BAD_FAX_LINES, _LONG, [page.bad_rows]),
            # RFC 2306 CleanFaxData: 0 clean, 1 regenerated (our bad rows are replaced by the
            # previous good row), 2 unclean.
            (TAG_CLEAN_FAX_DATA, _SHORT, [0 if page.bad_rows == 0 else 1]),
            (TAG_CONSECUTIVE_BAD_FAX_LINES, _LONG, [page.longest_bad_run]),
        ]
        entries.sort(key=lambda entry: entry[0])
        ifd_offset = len(out)
        struct.pack_into("<I", out, first_ifd_pointer, ifd_offset)
        extra_offset = ifd_offset + 2 + 12 * len(entries) + 4
        ifd = bytearray(struct.pack("<H", len(entries)))
        extra = bytearray()
        for tag, kind, values in entries:
            if kind == _ASCII:
                payload = bytes(values)
                n = len(payload)
            elif kind == _RATIONAL:
                payload = b"".join(struct.pack("<II", *v) for v in values)
                n = len(values)
            else:
                payload = struct.pack("<" + ("H" if kind == _SHORT else "I") * len(values), *values)
                n = len(values)
            if len(payload) <= 4:
                ifd += struct.pack("<HHI", tag, kind, n) + payload.ljust(4, b"\x00")
            else:
                ifd += struct.pack("<HHII", tag, kind, n, extra_offset + len(extra))
                extra += payload
                if len(extra) % 2:
                    extra += b"\x00"
        first_ifd_pointer = ifd_offset + len(ifd)
        ifd += b"\x00\x00\x00\x00"
        out += ifd + extra
    return bytes(out)


def read_tags(tiff: bytes, ifd_index: int = 0) -> dict[int, tuple]:
    """The tags of one IFD of a TIFF (either byte order) as {tag: values}; ASCII as bytes."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or struct.unpack(order + "H", tiff[2:4])[0] != 42:
        raise ValueError("not a TIFF")
    (offset,) = struct.unpack(order + "I", tiff[4:8])
    for _ in range(ifd_index):
        (n,) = struct.unpack_from(order + "H", tiff, offset)
        (offset,) = struct.unpack_from(order + "I", tiff, offset + 2 + 12 * n)
        if offset == 0:
            raise ValueError("no such IFD")
    (n,) = struct.unpack_from(order + "H", tiff, offset)
    tags: dict[int, tuple] = {}
    for index in range(n):
        tag, kind, count, value = struct.unpack_from(order + "HHI4s", tiff, offset + 2 + 12 * index)
        size = _TYPE_SIZES.get(kind, 1) * count
        raw = value if size <= 4 else tiff[struct.unpack(order + "I", value)[0] :][:size]
        if kind == _SHORT:
            tags[tag] = struct.unpack(order + "H" * count, raw[: 2 * count])
        elif kind == _LONG:
            tags[tag] = struct.unpack(order + "I" * count, raw[: 4 * count])
        elif kind == _RATIONAL:
            numbers = struct.unpack(order + "I" * (2 * count), raw[: 8 * count])
            tags[tag] = tuple(zip(numbers[::2], numbers[1::2]))
        else:
            tags[tag] = (raw[:size],)
    return tags


def read_strips(tiff: bytes, ifd_index: int = 0) -> bytes:
    """The concatenated strip data of one IFD (the coded page, for a one-strip page)."""
    tags = read_tags(tiff, ifd_index)
    offsets = tags[TAG_STRIP_OFFSETS]
    counts = tags[TAG_STRIP_BYTE_COUNTS]
    return b"".join(tiff[o : o + c] for o, c in zip(offsets, counts))
