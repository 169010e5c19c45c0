"""A small TIFF writer (Class F pages carrying CCITT data as it is) and a strip reader.

TIFF 6.0 with the Class F conventions of RFC 2306: one strip per page, PhotometricInterpretation
MinIsWhite, true X/Y resolution, NewSubfileType "page" and PageNumber on every page.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

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


@dataclass(frozen=True)
class PageBlock:
    """One page as it is appended to a TIFF at ``offset``: its strip, then its IFD.

    ``ifd_offset`` is where the IFD starts (the value the previous next-IFD pointer, or the
    header, must hold), ``next_pointer_offset`` where this IFD's own next-IFD pointer (0)
    is, and ``page_number_offset`` where the PageNumber entry's two SHORTs are (patched
    once the total is known).  All three are absolute file offsets.
    """

    data: bytes
    ifd_offset: int
    next_pointer_offset: int
    page_number_offset: int


HEADER = b"II*\x00\x00\x00\x00\x00"  # little endian, first IFD offset 0 (no page yet)
FIRST_IFD_POINTER = 4


def page_block(page: CodedPage, offset: int, number: int, count: int, *, software: str = "t38gw",
               photometric: int = 0) -> PageBlock:
    """The bytes of one page (strip + IFD + out-of-line values) to be written at ``offset``.

    ``number`` is the 0-based page number and ``count`` the total, 0 when not yet known
    (TIFF 6.0 PageNumber: "0 if the total number of pages is unknown").  ``offset`` must be
    even (TIFF 6.0: an IFD begins on a word boundary).
    """
    if offset % 2:
        raise ValueError("a TIFF page block must start at an even offset")
    out = bytearray(page.data)
    if len(out) % 2:
        out += b"\x00"
    if page.coding is Coding.MMR:
        compression = COMPRESSION_CCITT_T6
        options = (TAG_T6_OPTIONS, _LONG, [0])
    else:
        compression = COMPRESSION_CCITT_T4
        options = (TAG_T4_OPTIONS, _LONG, [T4_OPTION_2D if page.coding is Coding.MR else 0])
    # (tag, TIFF type, values): values are ints, (numerator, denominator) pairs for a
    # RATIONAL, the octets for ASCII.
    entries: list[tuple[int, int, Any]] = [
        (TAG_NEW_SUBFILE_TYPE, _LONG, [2]),
        (TAG_IMAGE_WIDTH, _LONG, [page.width]),
        (TAG_IMAGE_LENGTH, _LONG, [page.height]),
        (TAG_BITS_PER_SAMPLE, _SHORT, [1]),
        (TAG_COMPRESSION, _SHORT, [compression]),
        (TAG_PHOTOMETRIC, _SHORT, [photometric]),  # MinIsWhite: CCITT white runs are 0 bits
        (TAG_FILL_ORDER, _SHORT, [2 if page.bit_order is BitOrder.LSB_FIRST else 1]),
        (TAG_STRIP_OFFSETS, _LONG, [offset]),
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
    ifd_offset = offset + len(out)
    extra_offset = ifd_offset + 2 + 12 * len(entries) + 4
    ifd = bytearray(struct.pack("<H", len(entries)))
    extra = bytearray()
    page_number_offset = 0
    for tag, kind, values in entries:
        if tag == TAG_PAGE_NUMBER:
            page_number_offset = ifd_offset + len(ifd) + 8
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
    next_pointer_offset = ifd_offset + len(ifd)
    ifd += b"\x00\x00\x00\x00"
    return PageBlock(bytes(out + ifd + extra), ifd_offset, next_pointer_offset, page_number_offset)


def build_tiff(pages: Sequence[CodedPage], *, software: str = "t38gw", photometric: int = 0) -> bytes:
    """A little-endian multi-page TIFF holding each page's coded data as one strip.

    ``photometric`` 0 (MinIsWhite) is right for fax; 1 only serves ``imaging.libtiff``,
    where it makes libtiff's decoded bits read as 1 = black without inversion.
    """
    out = bytearray(HEADER)
    pointer = FIRST_IFD_POINTER
    for number, page in enumerate(pages):
        block = page_block(page, len(out), number, len(pages), software=software, photometric=photometric)
        struct.pack_into("<I", out, pointer, block.ifd_offset)
        out += block.data
        pointer = block.next_pointer_offset
    return bytes(out)


def read_tags(tiff: bytes, ifd_index: int = 0) -> dict[int, tuple[Any, ...]]:
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
    tags, _ = _tags_in(lambda at, size: tiff[at : at + size], order, offset)
    return tags


def read_strips(tiff: bytes, ifd_index: int = 0) -> bytes:
    """The concatenated strip data of one IFD (the coded page, for a one-strip page)."""
    tags = read_tags(tiff, ifd_index)
    offsets = tags[TAG_STRIP_OFFSETS]
    counts = tags[TAG_STRIP_BYTE_COUNTS]
    return b"".join(tiff[o : o + c] for o, c in zip(offsets, counts))


def _tags_in(read_at: Callable[[int, int], bytes], order: str, offset: int) -> tuple[dict[int, tuple[Any, ...]], int]:
    """The tags of the IFD at ``offset`` and its next-IFD offset; ``read_at(offset, size)``."""
    (n,) = struct.unpack(order + "H", read_at(offset, 2))
    raw_entries = read_at(offset + 2, 12 * n + 4)
    if len(raw_entries) < 12 * n + 4:
        raise ValueError("TIFF IFD runs past the end of the file")
    tags: dict[int, tuple[Any, ...]] = {}
    for index in range(n):
        tag, kind, count, value = struct.unpack_from(order + "HHI4s", raw_entries, 12 * index)
        size = _TYPE_SIZES.get(kind, 1) * count
        raw = value if size <= 4 else read_at(struct.unpack(order + "I", value)[0], size)
        if len(raw) < min(size, 4):
            raise ValueError("TIFF tag value runs past the end of the file")
        if kind == _SHORT:
            tags[tag] = struct.unpack(order + "H" * count, raw[: 2 * count])
        elif kind == _LONG:
            tags[tag] = struct.unpack(order + "I" * count, raw[: 4 * count])
        elif kind == _RATIONAL:
            numbers = struct.unpack(order + "I" * (2 * count), raw[: 8 * count])
            tags[tag] = tuple(zip(numbers[::2], numbers[1::2]))
        else:
            tags[tag] = (raw[:size],)
    (next_offset,) = struct.unpack_from(order + "I", raw_entries, 12 * n)
    return tags, next_offset


def iter_coded_pages(file: BinaryIO, limit: int | None = None) -> Iterator[CodedPage]:
    """Yield the pages of a CCITT TIFF (an open binary file) as CodedPage, one at a time.

    Reads only the IFDs and one strip at a time, so a long fax costs the memory of a
    page.  Stops after ``limit`` pages, at the end of the IFD chain, or at an IFD that
    points outside the file.  Raises ValueError if the file is not a TIFF or a page is
    not a one-strip CCITT page.
    """

    def read_at(offset: int, size: int) -> bytes:
        file.seek(offset)
        return file.read(size)

    header = read_at(0, 8)
    order = {b"II": "<", b"MM": ">"}.get(header[:2])
    if len(header) < 8 or order is None or struct.unpack(order + "H", header[2:4])[0] != 42:
        raise ValueError("not a TIFF")
    (offset,) = struct.unpack(order + "I", header[4:8])
    seen = 0
    while offset and (limit is None or seen < limit):
        tags, offset = _tags_in(read_at, order, offset)
        compression = tags.get(TAG_COMPRESSION, (1,))[0]
        if compression == COMPRESSION_CCITT_T6:
            coding = Coding.MMR
        elif compression == COMPRESSION_CCITT_T4:
            coding = Coding.MR if tags.get(TAG_T4_OPTIONS, (0,))[0] & T4_OPTION_2D else Coding.MH
        else:
            raise ValueError(f"TIFF page {seen + 1} is not CCITT coded (compression {compression})")
        offsets, counts = tags[TAG_STRIP_OFFSETS], tags[TAG_STRIP_BYTE_COUNTS]
        if len(offsets) != 1:
            raise ValueError(f"TIFF page {seen + 1} has {len(offsets)} strips, expected one")
        data = read_at(offsets[0], counts[0])
        if len(data) != counts[0]:
            raise ValueError(f"TIFF page {seen + 1}'s strip runs past the end of the file")
        (xn, xd), (yn, yd) = tags[TAG_X_RESOLUTION][0], tags[TAG_Y_RESOLUTION][0]
        yield CodedPage(
            tags[TAG_IMAGE_WIDTH][0], tags[TAG_IMAGE_LENGTH][0], xn / xd, yn / yd, coding,
            BitOrder.LSB_FIRST if tags.get(TAG_FILL_ORDER, (1,))[0] == 2 else BitOrder.MSB_FIRST, data,
            bad_rows=tags.get(TAG_BAD_FAX_LINES, (0,))[0],
            longest_bad_run=tags.get(TAG_CONSECUTIVE_BAD_FAX_LINES, (0,))[0],
        )
        seen += 1
