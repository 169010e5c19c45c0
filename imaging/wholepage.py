"""Whole-page decoding of error-free coded pages through libtiff, proven, with a fallback.

An ECM page arrives whole and error-checked (every frame passed its FCS), so it need not be
decoded row by row as it arrives: libtiff (called through ctypes) decodes it several times
faster than ``StreamingDecoder``.  A non-ECM page is kept whole too (``imaging.nonecm``)
and comes here once it ended with RTC and no IFP was lost; it is not error-checked (a
noisy line on the far side leaves bad rows in the data), which the proof below catches.  Two obstacles: libtiff needs the page height in
advance, and its decoder passes silently over damage our decoder counts as bad rows (it
skips whatever follows a row that reached the width before the EOL; some broken MMR it
decodes on).  So libtiff's answer is only used where it is proven equal to what
``StreamingDecoder`` fed the whole data would give; everything else falls back to it
(these pages are medical records):

* Height, MH/MR: EOL never occurs inside valid line data (T.4 4.1.2), so the rows are
  the non-empty segments between EOLs up to the first empty one, which must begin the
  page's end (T.4 4.1.4 RTC; StreamingDecoder ends after EOLS_TO_END_T4_PAGE EOLs in a
  row).  Bits before the first EOL must be fill.
* Height, MMR (no EOLs): the EOFB (T.6 2.4.1) is replaced by three sentinel rows coded in
  horizontal mode (independent of the reference row) and a new EOFB; libtiff decodes at
  a height guess (doubled until it fits) and the height is where the sentinel rows sit,
  followed only by rows libtiff never reached.
* Proof: T.4/T.6 coding is deterministic (run codes, T.4 4.1.2; the 2-D mode choice,
  T.4 4.2.1.3.3 / T.6 2.2), so the data must be libtiff's own coding of the decoded rows,
  bit for bit (T.4: per row, fill zeros allowed before each EOL).  A sender that codes
  legally but differently only loses the fast path.  libtiff warnings also disqualify.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib
import threading
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

from . import syscalls, t4codes
from .decoder import EOLS_TO_END_T4_PAGE, StreamingDecoder
from .model import BitOrder, Coding, DecodedPage
from .tiff import (
    COMPRESSION_CCITT_T4,
    COMPRESSION_CCITT_T6,
    T4_OPTION_2D,
    TAG_BITS_PER_SAMPLE,
    TAG_COMPRESSION,
    TAG_FILL_ORDER,
    TAG_IMAGE_LENGTH,
    TAG_IMAGE_WIDTH,
    TAG_PHOTOMETRIC,
    TAG_RESOLUTION_UNIT,
    TAG_ROWS_PER_STRIP,
    TAG_SAMPLES_PER_PIXEL,
    TAG_T4_OPTIONS,
    TAG_T6_OPTIONS,
    TAG_Y_RESOLUTION,
    CodedPage,
    build_tiff,
    read_strips,
)

EOL = t4codes.EOL
EOFB = t4codes.EOFB
_REVERSED = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))
# The first MMR height tried (an A4 page at 196 lpi is 2376 rows); doubled until found.
_FIRST_MMR_HEIGHT = 4096
DEFAULT_MAX_ROWS = 32768


class _Libtiff:
    """libtiff called directly (ctypes), with its warnings and errors counted.

    Pillow would unpack the rows to a byte per pel and pack them again (more time than the
    decoding); here TIFFReadEncodedStrip writes packed rows, 1 = black (libtiff's fax
    decoder fills black runs with 1 bits whatever the photometric tag), into a zeroed
    buffer, so rows it never reached stay 0.  libtiff reports a damaged row (line length
    mismatch, premature EOL, bad code) only through its warning handler and decodes on, so
    a decode is trusted only when no warning or error came during it.  The system libtiff
    (the Dockerfile installs libtiff6) is preferred, apart from Pillow's copy; else Pillow's
    bundled one.  The handlers are per library copy: a process that also loads SpanDSP
    (which links the system libtiff) has its libtiff warnings counted here, not printed, and
    one coming during our decode only costs the fast path.

    libtiff keeps its codec state in each TIFF handle; only the handlers are one per
    process, and libtiff calls them on the thread that hit the problem.  So complaints are
    counted per thread and no lock is needed: ctypes lets go of the GIL during the coding
    calls, so a thread's coding runs beside the event loop, on another core.

    Only during those: every call that lets go of the GIL must take it back, and beside a
    busy event loop that waits up to the switch interval.  A page's decode and proof made
    ~25 such calls (opening the in-memory file, 11 TIFFSetField, closing, reading back):
    a page decoded on a thread beside a busy event loop took 15.7 ms instead of 4.3, and
    at 1,000 calls the page-decoding threads fell seconds behind (issue 14).  So the
    quick calls (libtiff's open, tags and close through ctypes.PyDLL; the memfd's system
    calls, microseconds on memory, through imaging.syscalls) keep the GIL, and only the
    decoding and coding let it go.
    """

    def __init__(self) -> None:
        self._counts = threading.local()
        self.library = self._load()
        if self.library is None:
            return
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

        def complained(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
            self._counts.complaints = self.complaints + 1

        self._handler = handler_type(complained)  # kept alive as long as libtiff holds it
        lib = self.library
        for name in ("TIFFSetWarningHandler", "TIFFSetErrorHandler"):
            function = getattr(lib, name)
            function.restype = ctypes.c_void_p
            function.argtypes = [handler_type]
            function(self._handler)
        lib.TIFFFdOpen.restype = ctypes.c_void_p
        lib.TIFFFdOpen.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
        lib.TIFFReadEncodedStrip.restype = ctypes.c_ssize_t
        lib.TIFFReadEncodedStrip.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_ssize_t]
        lib.TIFFClose.restype = None
        lib.TIFFClose.argtypes = [ctypes.c_void_p]
        lib.TIFFWriteEncodedStrip.restype = ctypes.c_ssize_t
        lib.TIFFWriteEncodedStrip.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_ssize_t]
        lib.TIFFSetField.restype = ctypes.c_int  # variadic: each call passes typed values
        # The same copy again, its calls holding the GIL (see the class docstring).
        quick = self.quick = ctypes.PyDLL(lib._name)
        quick.TIFFFdOpen.restype = ctypes.c_void_p
        quick.TIFFFdOpen.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
        quick.TIFFClose.restype = None
        quick.TIFFClose.argtypes = [ctypes.c_void_p]
        quick.TIFFSetField.restype = ctypes.c_int

    @property
    def complaints(self) -> int:
        """libtiff's warnings and errors so far on the calling thread."""
        count: int = getattr(self._counts, "complaints", 0)
        return count

    @staticmethod
    def _load() -> ctypes.CDLL | None:
        if not hasattr(os, "memfd_create"):
            return None
        candidates = []
        system = ctypes.util.find_library("tiff")
        if system:
            candidates.append(system)
        import PIL

        bundled = pathlib.Path(PIL.__file__).parent.parent / "pillow.libs"
        candidates += sorted(str(path) for path in bundled.glob("libtiff*.so*"))
        for candidate in candidates:
            try:
                return ctypes.CDLL(candidate)
            except OSError:
                continue
        return None

    def decode(self, tiff: bytes, size: int, *, complaints: int = 0) -> bytes | None:
        """The first strip of ``tiff`` decoded into ``size`` bytes.

        None when libtiff failed or complained more than ``complaints`` times.
        """
        lib = self.library
        if lib is None:  # no libtiff here: callers check ``library`` first
            return None
        buffer = ctypes.create_string_buffer(size)
        try:
            fd = syscalls.memory_file(tiff)
        except OSError:
            return None
        before = self.complaints
        handle = self.quick.TIFFFdOpen(fd, b"t38gw-page", b"r")
        if not handle:
            syscalls.close(fd)
            return None
        try:
            got = lib.TIFFReadEncodedStrip(handle, 0, buffer, size)
        finally:
            self.quick.TIFFClose(handle)  # closes fd too
        if got != size or self.complaints - before > complaints:
            return None
        return buffer.raw

    def encode(self, bitmap: bytes, width: int, height: int, coding: Coding, *, k: int = 4) -> bytes | None:
        """libtiff's coding of packed rows (1 = black), MSB first.  T.4: an EOL (and for MR
        a tag bit) before each row, no fill, no RTC; MR with K = ``k``, 2 or 4 (libtiff
        takes 4 above 150 lpi, else 2).  T.6: rows then EOFB.  None when libtiff failed
        or complained."""
        lib = self.library
        if lib is None:  # no libtiff here: callers check ``library`` first
            return None
        before = self.complaints
        quick = self.quick
        try:
            fd = syscalls.memory_file()
        except OSError:
            return None
        try:
            keep = syscalls.dup(fd)  # libtiff closes fd; the coding is read back through this
        except OSError:
            syscalls.close(fd)
            return None
        try:
            handle = quick.TIFFFdOpen(fd, b"t38gw-page", b"w")
            if not handle:
                syscalls.close(fd)
                return None
            try:
                u32, i32 = ctypes.c_uint32, ctypes.c_int
                if coding is Coding.MMR:
                    compression, options = COMPRESSION_CCITT_T6, (TAG_T6_OPTIONS, u32(0))
                else:
                    compression = COMPRESSION_CCITT_T4
                    options = (TAG_T4_OPTIONS, u32(T4_OPTION_2D if coding is Coding.MR else 0))
                for tag, value in ((TAG_IMAGE_WIDTH, u32(width)), (TAG_IMAGE_LENGTH, u32(height)),
                                   (TAG_BITS_PER_SAMPLE, i32(1)), (TAG_SAMPLES_PER_PIXEL, i32(1)),
                                   (TAG_COMPRESSION, i32(compression)), (TAG_PHOTOMETRIC, i32(0)),
                                   (TAG_FILL_ORDER, i32(1)), (TAG_ROWS_PER_STRIP, u32(height)),
                                   options,
                                   (TAG_Y_RESOLUTION, ctypes.c_double(196.0 if k == 4 else 98.0)),
                                   (TAG_RESOLUTION_UNIT, i32(2))):
                    if quick.TIFFSetField(ctypes.c_void_p(handle), ctypes.c_uint32(tag), value) != 1:
                        return None
                written = lib.TIFFWriteEncodedStrip(handle, 0, bitmap, len(bitmap))
            finally:
                quick.TIFFClose(handle)  # writes the directory; closes fd
            if written != len(bitmap) or self.complaints != before:
                return None
            tiff = syscalls.read_whole(keep)
        except OSError:
            return None
        finally:
            syscalls.close(keep)
        return read_strips(tiff)


_libtiff: _Libtiff | None = None
_libtiff_loading = threading.Lock()


def _library() -> _Libtiff:
    global _libtiff
    if _libtiff is None:
        # One copy only, even when two threads come first at once: the handlers the second
        # would install replace the first's, whose complaints would then go uncounted.
        with _libtiff_loading:
            if _libtiff is None:
                _libtiff = _Libtiff()
    return _libtiff


def _to_bits(data: bytes) -> str:
    """MSB-first data as a string of '0'/'1' (C speed: one int conversion)."""
    return bin(int.from_bytes(b"\x01" + data, "big"))[3:]


def _from_bits(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int("1" + bits, 2).to_bytes(len(bits) // 8 + 1, "big")[1:]


def _libtiff_rows(data: bytes, coding: Coding, width: int, height: int, *, complaints: int = 0) -> bytes | None:
    """``height`` rows of MSB-first ``data`` decoded by libtiff, or None if it complained
    (more than ``complaints`` times)."""
    library = _library()
    if library.library is None:
        return None
    tiff = build_tiff([CodedPage(width, height, 204, 196, coding, BitOrder.MSB_FIRST, data)])
    return library.decode(tiff, width // 8 * height, complaints=complaints)


def _t4_rows(bits: str, coding: Coding) -> list[str] | None:
    """The row segments (between EOLs) StreamingDecoder would decode in whole, clean MH/MR
    data, or None if unsure."""
    first = bits.find(EOL)
    if first < 0 or "1" in bits[:first]:
        return None  # no EOL, or something before the first one (our decoder skips it)
    # The segment after each EOL, as StreamingDecoder cuts them (str.find from the left,
    # like split); the last one is not closed by an EOL.
    segments = bits[first + 12 :].split(EOL)
    closed = len(segments) - 1
    # An empty segment (no 1 bit after MR's tag bit) is no row: the first closed one must
    # begin the page's end.  One str.find per segment, looped in C.
    tag_bit = 1 if coding is Coding.MR else 0
    ones = list(map(str.find, segments, repeat("1", closed), repeat(tag_bit, closed)))
    try:
        rows = ones.index(-1)
    except ValueError:
        return None  # no closed empty segment: no page end
    # StreamingDecoder ends the page once EOLS_TO_END_T4_PAGE EOLs came in a row: the last
    # row's own EOL, then that many less one empty segments, each closed by an EOL.
    if rows <= 0 or ones[rows : rows + EOLS_TO_END_T4_PAGE - 1] != [-1] * (EOLS_TO_END_T4_PAGE - 1):
        return None
    del segments[rows:]
    return segments


def _canonical_segments(
    bitmap: bytes, width: int, height: int, *, two_d: bool, shift: int = 0, k: int = 4
) -> list[str] | None:
    """libtiff's coding of each row (after its EOL), ``shift`` white rows put first."""
    stride = width // 8
    # A white row after the last one ends it with an EOL: no strip padding in its segment.
    padded = bytes(stride * shift) + bitmap + bytes(stride)
    coded = _library().encode(padded, width, height + shift + 1, Coding.MR if two_d else Coding.MH, k=k)
    if coded is None:
        return None
    segments = _to_bits(coded).split(EOL)
    if len(segments) != height + shift + 2 or "1" in segments[0]:
        return None
    return segments[1 + shift : 1 + shift + height]


def _coded_canonically(segments: list[str], bitmap: bytes, width: int, height: int, coding: Coding) -> bool:
    """Whether each row segment is exactly the T.4 coding of libtiff's decoded row (then
    fill zeros): the proof that StreamingDecoder decodes the same rows, none bad.

    libtiff's decoder skips silently whatever follows a row that reached the width before
    the next EOL, where StreamingDecoder calls the row bad; damaged data does that.  T.4
    coding is deterministic (4.1.2 run codes; 4.2.1.3.3 picks the 2-D mode), so libtiff's
    own coding of the rows is the one clean data must hold.  A sender coding differently
    (legal but unusual makeup choices) only costs the fast path.
    """
    if coding is Coding.MR:
        # Senders code rows 0, K, 2K, ... one-dimensionally (T.4 4.2.1.3.4), K 2 or 4 as
        # libtiff does: then one libtiff coding has every row as the sender has it.
        # Each row's tag bit (a row segment holds a 1 after it, so it has one), in C.
        tags = "".join(map(itemgetter(0), segments))
        for k in (4, 2):
            if tags == ("1" + "0" * (k - 1)) * (height // k) + ("1" + "0" * (k - 1))[: height % k]:
                codes = _canonical_segments(bitmap, width, height, two_d=True, k=k)
                return codes is not None and _same_codes(segments, codes)
    one_d = _canonical_segments(bitmap, width, height, two_d=False)
    if one_d is None:
        return False
    if coding is Coding.MH:
        return _same_codes(segments, one_d)
    # Another 1-D/2-D pattern: libtiff codes 1 row in 4 one-dimensionally; shifted by a
    # row, those are coded 2-D.
    two_d = [_canonical_segments(bitmap, width, height, two_d=True, shift=shift) for shift in (0, 1)]
    if two_d[0] is None or two_d[1] is None:
        return False
    codes = []
    for index, row in enumerate(segments):
        if row[:1] == "1":
            codes.append("1" + one_d[index])
        elif two_d[0][index][:1] == "0":
            codes.append(two_d[0][index])
        elif two_d[1][index][:1] == "0":
            codes.append(two_d[1][index])
        else:
            return False
    return _same_codes(segments, codes)


def _same_codes(segments: list[str], codes: list[str]) -> bool:
    """Whether each segment is its code followed by nothing but fill zeros."""
    if segments == codes:
        return True  # no fill at all: the usual case
    return all(len(row) >= len(code) and row.rstrip("0") == code.rstrip("0") for row, code in zip(segments, codes))


def _sentinel_rows(width: int) -> tuple[str, list[bytes]]:
    """Three rows coded in T.6 horizontal mode only, and their packed pixels (1 = black)."""
    half = width // 2
    runs = [[(half, width - half)], [(0, width)], [(0, half), (width - half, 0)]]
    code = ""
    rows = []
    for pairs in runs:
        pixels = ""
        for white, black in pairs:
            code += t4codes.HORIZONTAL + t4codes.WHITE_RUN_CODE[white] + t4codes.BLACK_RUN_CODE[black]
            pixels += "0" * white + "1" * black
        rows.append(int("1" + pixels, 2).to_bytes(width // 8 + 1, "big")[1:])
    return code, rows


def _eol_ends(value: int, size: int) -> int:
    """Where EOLs end in ``size`` bits of MSB-first data read as the integer ``value``: bit
    k is set when the data's bit size-1-k is a 1 with eleven 0 bits ahead of it (an EOL,
    T.4 4.1.2, ends there).  Big-integer arithmetic, ~20 us a page: a character search
    over a page's bits as text held the GIL of a page-decoding thread ~0.3 ms, with the
    event loop waiting for it (issue 14)."""
    if size < 12:
        return 0
    # ``before`` has bit k set when one of the 11 bits ahead of it (k+1 .. k+11) is a 1.
    before = value >> 1
    before |= before >> 1
    before |= before >> 2
    before |= before >> 4
    before |= before >> 3
    # The data's first 11 bits have fewer than eleven ahead of them.
    return value & ~before & ((1 << (size - 11)) - 1)


def _clean_start(value: int, size: int) -> tuple[int, int] | None:
    """(the EOL mask of ``_eol_ends``, the first EOL's bit offset) of data that holds nothing
    but 0 bits before its first EOL (as StreamingDecoder syncs on it), else None."""
    ends = _eol_ends(value, size)
    if not ends:
        return None
    first = size - ends.bit_length() - 11
    # The first 1 bit is the first EOL's own.
    return (ends, first) if value.bit_length() == size - first - 11 else None


def first_eol(data: bytes) -> int:
    """Bit offset of the first EOL (eleven 0 bits, then a 1: T.4 4.1.2) in MSB-first
    ``data``, or -1.  Equal to ``_to_bits(data).find(EOL)``."""
    size = len(data) * 8
    ends = _eol_ends(int.from_bytes(data, "big"), size)
    if not ends:
        return -1
    return size - ends.bit_length() - 11


# T.4 4.1.4: RTC is six EOLs (a height guess only; the proof checks what ends the page).
_RTC_EOLS = 6
# The first rows' tag bits are read from this much data after the first EOL (an MR row
# coded one-dimensionally at its worst is ~9,000 bits at 1728 pels).
_TAG_WINDOW_OCTETS = 4096
# RTC and the fill before its EOLs are looked for in this much data after the last row.
_TAIL_OCTETS = 512


def _t4_exact(msb_first: bytes, bitmap: bytes, coding: Coding, width: int, height: int) -> bool:
    """Whether MSB-first MH/MR data is, from its first EOL, exactly libtiff's coding of
    ``height`` rows (``bitmap``) with no fill, followed by the page's end: the proof of
    ``_coded_canonically`` for the usual page (no fill anywhere), compared as integers.

    Splitting the page's bits as text into row segments, twice (the data's and libtiff's
    coding), held a page-decoding thread's GIL ~1.3 ms a page beside the event loop
    (issue 14); this compares two big integers and reads text only at the page's two
    ends.  A page it does not prove (fill, another 1-D/2-D pattern, damage) goes to
    ``_t4_rows`` and ``_coded_canonically`` as before.
    """
    size = len(msb_first) * 8
    value = int.from_bytes(msb_first, "big")
    start = _clean_start(value, size)
    if start is None or height < 1:
        return False  # no EOL, or a 1 before the first (StreamingDecoder skips it; the text path judges)
    first = start[1]
    k = 4
    tag_bit = 0
    if coding is Coding.MR:
        tag_bit = 1
        # The K libtiff must code with: rows 0, K, 2K ... one-dimensional (T.4 4.2.1.3.4).
        if height < 3:
            return False
        head = _to_bits(msb_first[first // 8 : first // 8 + _TAG_WINDOW_OCTETS])[first % 8 :]
        segments = head[12:].split(EOL, 3)
        if len(segments) < 4:
            return False
        pattern = "".join(segment[:1] for segment in segments[:3])
        if pattern == "101":
            k = 2
        elif pattern != "100":
            return False
    stride = width // 8
    # A white row after the last one: libtiff's coding then has an EOL closing the last row.
    coded = _library().encode(bitmap + bytes(stride), width, height + 1, coding, k=k)
    if coded is None:
        return False
    coded_size = len(coded) * 8
    coded_value = int.from_bytes(coded, "big")
    coded_start = _clean_start(coded_value, coded_size)
    # Nothing but zeros before the first EOL, one EOL per row.
    if coded_start is None or coded_start[0].bit_count() != height + 1:
        return False
    coded_ends, coded_first = coded_start
    closing = coded_size - (coded_ends & -coded_ends).bit_length() - 11  # the white row's EOL
    span = closing - coded_first
    if first + span + 12 > size:
        return False
    mask = (1 << span) - 1
    if (value >> (size - first - span)) & mask != (coded_value >> (coded_size - coded_first - span)) & mask:
        return False
    # Then the page's end where StreamingDecoder ends it (as _t4_rows): the last row's EOL
    # and EOLS_TO_END_T4_PAGE - 1 empty segments (MR: the tag bit only), each closed by an EOL.
    end = first + span
    tail = _to_bits(msb_first[end // 8 : end // 8 + _TAIL_OCTETS])[end % 8 :]
    if not tail.startswith(EOL):
        return False
    closed = tail[12:].split(EOL, EOLS_TO_END_T4_PAGE - 1)
    return len(closed) == EOLS_TO_END_T4_PAGE and all(segment.find("1", tag_bit) < 0 for segment in closed[:-1])


def _mmr_rows(msb_first: bytes, width: int, max_rows: int) -> tuple[int, bytes, bytes] | None:
    """(height, packed rows, libtiff's T.6 coding of them) of clean MMR data, or None.

    Runs on a page-decoding thread beside the event loop: the work in Python (holding the
    GIL) stays at a few scans of the coded data and of the decoded rows at C speed, no
    per-bit text and no byte-by-byte strip of the ~0.9 MB buffer (that alone held the GIL
    ~1.9 ms a page, t38gw issue 14).
    """
    eofb = first_eol(msb_first)
    cut = eofb // 8
    # The first EOL of clean T.6 data is its EOFB (what follows is ignored).
    if eofb < 0 or _to_bits(msb_first[cut : cut + 4])[eofb - cut * 8 :][: len(EOFB)] != EOFB:
        return None
    sentinel, sentinel_rows = _sentinel_rows(width)
    sentinel_block = b"".join(sentinel_rows)
    # Only the last octets change: the sentinel goes where EOFB began.
    data = msb_first[:cut] + _from_bits(_to_bits(msb_first[cut : cut + 1])[: eofb - cut * 8] + sentinel + EOFB)
    stride = width // 8
    # At least one MMR bit per row: the page cannot be taller than that.
    limit = min(max_rows, eofb) + 4
    guess = min(_FIRST_MMR_HEIGHT, limit)
    # Where the sentinel's black rows are found from the end: its all-black second row and
    # the black half of the third (a search for a pattern with a long white run would
    # compare that run at every offset of the blank rows after the page).
    black = sentinel_rows[1] + sentinel_rows[2][: width // 2 // 8]
    while True:
        # Reaching EOFB before ``guess`` rows, libtiff warns once about that short line.
        decoded = _libtiff_rows(data, Coding.MMR, width, guess, complaints=1)
        if decoded is None:
            return None
        # Rows after EOFB stay blank: a last row that is not, or no sentinel, means libtiff
        # may not have got to it (the page is taller than the guess).
        at = decoded.rfind(black) - stride
        if at >= 0 and decoded[(guess - 1) * stride :] == bytes(stride):
            break
        if guess >= limit:
            return None
        guess = min(guess * 2, limit)
    # The sentinel's rows must be the last that are not blank, right after the page's rows.
    end = at + len(sentinel_block)
    if at <= 0 or at % stride or decoded[at:end] != sentinel_block or decoded[end:] != bytes(len(decoded) - end):
        return None
    height = at // stride
    if height > max_rows:
        return None
    bitmap = decoded[:at]
    # The proof (libtiff's decoder accepts some damage StreamingDecoder stops at): the data
    # up to EOFB is exactly the T.6 coding of these rows (deterministic, T.6 2.2; see
    # _coded_canonically), which StreamingDecoder decodes to them and then ends at EOFB.
    canonical = _library().encode(bitmap, width, height, Coding.MMR)
    if canonical is None or first_eol(canonical) != eofb or canonical[:cut] != msb_first[:cut]:
        return None
    if eofb % 8 and (canonical[cut] ^ msb_first[cut]) >> (8 - eofb % 8):
        return None
    return height, bitmap, canonical


@dataclass(frozen=True)
class LibtiffAttempt:
    """``try_libtiff_decode`` of a page, as a value: a page decoder that holds the whole
    page before its end is signalled (the sender's post-page command comes ~1 s after its
    image carrier ends) hands it out to be run on another thread (``run`` is pure; libtiff
    lets go of the GIL), and takes its result back as ``ahead``: ``finish`` then uses the
    result if it would have made this very attempt, else makes its own."""

    data: bytes
    coding: Coding
    width: int
    bit_order: BitOrder
    max_rows: int
    rows: int | None = None  # MH/MR: the rows counted as the data came (a height to try first)

    def run(self) -> DecodedPage | None:
        return try_libtiff_decode(self.data, self.coding, self.width, bit_order=self.bit_order,
                                  max_rows=self.max_rows, rows=self.rows)

    def result(self, ahead: tuple[LibtiffAttempt, DecodedPage | None] | None) -> DecodedPage | None:
        """The attempt's result: the one run ahead if it was this same attempt, else now."""
        if ahead is not None and ahead[0] == self:
            return ahead[1]
        return self.run()


def try_libtiff_decode(
    data: bytes, coding: Coding, width: int, *, bit_order: BitOrder, max_rows: int = DEFAULT_MAX_ROWS,
    rows: int | None = None,
) -> DecodedPage | None:
    """The page libtiff decodes from whole coded ``data``, or None where it is not proven
    equal to what ``StreamingDecoder`` fed all of ``data`` would give (then use that).

    Pages taller than ``max_rows`` are left to the caller too.  ``rows``: MH/MR rows
    counted as the data came (``NonEcmPageDecoder``), tried first as the height.
    """
    msb_first = bytes(data) if bit_order is BitOrder.MSB_FIRST else bytes(data).translate(_REVERSED)
    bitmap: bytes | None
    if coding is Coding.MMR:
        found = _mmr_rows(msb_first, width, max_rows)
        if found is None:
            return None
        height, bitmap, g4 = found
        # The proof coded the rows as the archive stores them: it need not do it again.
        return DecodedPage(width=width, height=height, bitmap=bitmap, g4=g4)
    else:
        # The height: the rows counted as the data came, else the EOLs but RTC's (the
        # proof settles it either way).
        guess = rows if rows is not None else _eol_ends(int.from_bytes(msb_first, "big"),
                                                         len(msb_first) * 8).bit_count() - _RTC_EOLS
        bitmap = _libtiff_rows(msb_first, coding, width, guess) if 0 < guess <= max_rows else None
        if bitmap is not None and _t4_exact(msb_first, bitmap, coding, width, guess):
            return DecodedPage(width=width, height=guess, bitmap=bitmap)
        segments = _t4_rows(_to_bits(msb_first), coding)
        if segments is None or len(segments) > max_rows:
            return None
        height = len(segments)
        if bitmap is None or height != guess:
            bitmap = _libtiff_rows(msb_first, coding, width, height)
        if bitmap is None or not _coded_canonically(segments, bitmap, width, height, coding):
            return None
    return DecodedPage(width=width, height=height, bitmap=bitmap)


def decode_whole_page(
    data: bytes, coding: Coding, width: int, *, bit_order: BitOrder, max_rows: int = DEFAULT_MAX_ROWS
) -> DecodedPage:
    """Decode one complete page of coded data, as ``StreamingDecoder`` fed it all would.

    Fast (libtiff) where the result is proven the same, else ``StreamingDecoder`` decodes
    it; pages over ``max_rows`` rows also go to it.  Raises ValueError for a width, coding
    or bit order StreamingDecoder refuses.
    """
    fallback = StreamingDecoder(coding, width, bit_order=bit_order)  # validates the arguments
    page = try_libtiff_decode(data, coding, width, bit_order=bit_order, max_rows=max_rows)
    if page is not None:
        return page
    fallback.feed(data)
    return fallback.finish()
