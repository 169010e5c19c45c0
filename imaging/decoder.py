"""Streaming T.4 (MH, MR) and T.6 (MMR) page decoder.

How it works: octets are turned into a string of line bits as they arrive (``bits.to_bits``).

* T.4 (MH and MR): every coded line is preceded by an EOL (T.4 4.1.3), so the decoder cuts
  the bit string at EOLs with ``str.find`` and decodes a line once the EOL after it has
  arrived. Fill bits (zeros before an EOL, including byte-aligning fill) are simply trailing
  zeros of the line. A line that does not decode to exactly ``width`` pels is a bad row: it is
  counted, replaced by the previous good row (which also becomes the reference for a following
  2-D line) and decoding resumes at the next EOL. One-dimensional lines are tokenised in one
  ``re.findall`` over a trie-shaped expression of (white run, black run) pairs, each distinct
  pair being decoded once (``_TOKEN_PIXELS``, ``_TOKEN_RUNS``); identical lines (blank ones
  above all) are decoded once per page (the line cache). Two-dimensional lines run a Python
  loop over mode codes in which a run of V0 codes (the commonest) is copied from the
  reference line as one slice.
* Rows are kept packed. A row is built from its changing elements as the XOR of one
  precomputed "black from here to the line end" integer per change (``_row_from_padded``),
  all in C, with no string of pels; MH pages join pre-made pel strings per token instead.
* T.6 (MMR): lines follow each other with no EOL, so lines are decoded from a running bit
  position; a line whose codes run past the bits received so far is retried when more arrive.
  A code error cannot be resynchronised (there is no EOL), so the page ends there, with the
  damage counted and flagged.

End of page: RTC is six EOLs (T.4 4.1.4); like SpanDSP (t4_t6_decode.c, EOLS_TO_END_T4_RX_PAGE)
we accept five consecutive EOLs so a page whose RTC lost one EOL still ends. EOFB (T.6
2.4.1) is two EOLs.
"""

from __future__ import annotations

import re
from itertools import accumulate, chain
from functools import reduce
from operator import xor

from . import t4codes
from .bits import to_bits, unpack_pixels
from .model import BitOrder, Coding, DecodedPage

EOL = t4codes.EOL
EOFB = t4codes.EOFB
EOLS_TO_END_T4_PAGE = 5
# A line longer than this without an EOL is garbage (the widest line of single-pel runs
# codes to under 20k bits; fill before an EOL is bounded by the minimum scan-line time).
MAX_LINE_BITS = 200_000
# No page has more rows (T.30's [limits] max_page_rows is at most 65535; TIFF strips count
# rows in 32 bits but no fax page is 20 m long).  In MMR a single bit can be a whole row
# (V0 on a blank reference), so without a bound 64 KiB of data made 524,288 rows, 113 MB
# and 2.6 s in one feed() (bench/fuzz.py).  Decoding stops there; the page is that tall.
MAX_ROWS = 65536


class _RowLimit(Exception):
    """The page reached its ``max_rows``: stop decoding."""
# Zeros appended while decoding so that look-ups near the end of the data never run short.
_PAD = "0" * 32
_RUN = re.compile("0+|1+")
_CACHE_LIMIT = 20_000
_CACHED_LINE_BITS = 4096
_RETRY_BITS = 256


_find_tokens = t4codes.MH_PAIR_TOKEN.findall
# Stands for a token that is no code: bigger than any line, so a line holding one never
# adds up to its width.
_BAD_RUN = 1 << 20


class _TokenRuns(dict[str, tuple[int, ...]]):
    """MH pair token -> its run lengths as coded, computed on first sight: (white, black),
    (white,) (a line's last run) or () (fill); a non-code maps to (_BAD_RUN,)."""

    def __missing__(self, token: str) -> tuple[int, ...]:
        runs = t4codes.decode_mh_token_runs(token)
        if runs is None:
            runs = (_BAD_RUN,)
        if len(self) >= _CACHE_LIMIT:
            self.clear()  # garbage can make endless distinct tokens; real pages few
        self[token] = runs
        return runs


_TOKEN_RUNS = _TokenRuns()


class _TokenPixels(dict[str, str]):
    """MH pair token -> its pels ('1' black), computed on first sight; a non-code maps to 'X'."""

    def __missing__(self, token: str) -> str:
        pixels = t4codes.decode_mh_token(token)
        if pixels is None:
            pixels = "X"
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[token] = pixels
        return pixels


_TOKEN_PIXELS = _TokenPixels()


def _decode_1d_row(line: str, width: int, octets: int) -> tuple[bytes | None, None]:
    """Like _decode_1d_line without the changing elements (MH pages need none): joining
    each token's pels and packing them is quicker than the running sums."""
    pixels = "".join(map(_TOKEN_PIXELS.__getitem__, _find_tokens(line)))
    if len(pixels) != width or "X" in pixels:
        return None, None
    return int(pixels, 2).to_bytes(octets, "big"), None


def _decode_1d_line(line: str, masks: list[int], octets: int) -> tuple[bytes | None, list[int] | None]:
    """A one-dimensionally coded line (T.4 4.1) without its EOL: (packed row or None if it
    is bad, its changing elements padded with three widths or None if they are to be found
    from the row)."""
    # The running sums of the run lengths are the changing elements, the last one the line
    # end; the row is the XOR of their suffix masks (see _row_from_padded), all C-level.
    runs = list(chain.from_iterable(map(_TOKEN_RUNS.__getitem__, _find_tokens(line))))
    changes = list(accumulate(runs))
    width = len(masks) - 1
    if not changes or changes[-1] != width:
        return None, None  # not exactly width pels, or a non-code
    row = reduce(xor, map(masks.__getitem__, changes), 0).to_bytes(octets, "big")
    if runs.count(0) > (runs[0] == 0):
        return row, None  # a zero-length run inside: changes repeat, find them from the row
    changes += (width, width)
    return row, changes


class _Undecodable(Exception):
    def __init__(self, position: int) -> None:
        self.position = position


def decode_2d_line(bits: str, position: int, reference: list[int], width: int) -> tuple[list[int] | None, int]:
    """Decode one two-dimensionally coded line (T.4 4.2.1.3, T.6 2.2) starting at ``position``.

    ``reference`` is the changing elements of the reference line followed by three copies of
    ``width`` (so b1/b2 always exist). ``bits`` must end with at least 32 padding zeros.
    Returns the changing elements of the decoded line (strictly increasing, < width; None
    when the line is all V0 codes, i.e. equals its reference) and the position after its last
    code; raises _Undecodable(position of the bad code).
    """
    real = len(reference) - 3
    p = position
    if bits[p] == "1" and bits.find("0", p) - p > real:
        # All V0 codes: the line repeats its reference (blank after blank, the commonest
        # line of a page), so there is nothing to build.
        return None, p + real + 1
    changes: list[int] = []
    append = changes.append
    modes = _MODES
    a0 = -1  # T.4 4.2.1.3.1: an imaginary white element just before the first pel
    # a0's colour is the parity of len(changes): every change flips it (a zero-length run's
    # two changes on one pel included).
    # i indexes b1: the first changing element of the reference line right of a0 whose
    # colour is opposite to a0's (even indexes turn to black, so i's parity is the colour).
    # It is carried from code to code and only searched for again after horizontal mode;
    # b1 > a0 always holds, so only a VL code can put a1 at or left of a0 and only a VR
    # code right of the line end.
    i = 0
    zero_run = False
    try:
        while True:
            length, offset = modes[bits[p : p + 7]]
            if not offset:
                # A run of k V0 codes (the table gives k for up to six; seven ones may
                # continue) takes the next k reference changes as they are.
                if length == 1 and i < real:  # a single V0, the commonest code
                    a0 = reference[i]
                    append(a0)
                    i += 1
                    p += 1
                    continue
                q = bits.find("0", p) if length == 7 else p + length
                end = i + (q - p)
                if end > real:
                    if i <= real:
                        changes.extend(reference[i:real])
                        p += real - i + 1
                    else:
                        p += 1
                    break
                changes.extend(reference[i:end])
                a0 = reference[end - 1]
                i = end
                p = q
                continue
            if offset < 0:  # VL: a1 is b1 moved left
                a1 = reference[i] + offset
                if a1 <= a0:
                    raise _Undecodable(p)
                p += length
                append(a1)
                a0 = a1
                # Next b1 has the other parity: reference[i - 1] if it is right of a1,
                # else the first of i+1, i+3, ... beyond a1.
                if i and reference[i - 1] > a1:
                    i -= 1
                else:
                    i += 1
                    while reference[i] <= a1:
                        i += 2
            elif offset < 4:  # VR: a1 is b1 moved right
                a1 = reference[i] + offset
                if a1 >= width:
                    if a1 > width:
                        raise _Undecodable(p)
                    p += length
                    break
                p += length
                append(a1)
                a0 = a1
                i += 1
                while reference[i] <= a1:
                    i += 2
            elif offset == 4:  # horizontal: a0a1 and a1a2 as MH runs, a0's colour first
                if len(changes) & 1:
                    first, second = _BLACK, _WHITE
                else:
                    first, second = _WHITE, _BLACK
                q = p + length
                p = q
                run1, length = first[bits[q : q + 13]]
                q += length
                if run1 >= 64:  # make-up codes until a terminating one
                    while True:
                        p = q
                        run, length = first[bits[q : q + 13]]
                        q += length
                        run1 += run
                        if run < 64:
                            break
                p = q
                run2, length = second[bits[q : q + 13]]
                q += length
                if run2 >= 64:
                    while True:
                        p = q
                        run, length = second[bits[q : q + 13]]
                        q += length
                        run2 += run
                        if run < 64:
                            break
                a1 = (a0 if a0 > 0 else 0) + run1
                a2 = a1 + run2
                if a2 > width:
                    raise _Undecodable(p)
                if (run1 == 0 and a0 > 0) or run2 == 0:
                    zero_run = True
                append(a1)
                append(a2)
                a0 = a2
                p = q
                if a0 >= width:
                    break
                # b1 lies beyond reference[i - 2] (<= the old a0): step on from there.
                if i:
                    i -= 1
                while reference[i] <= a0:
                    i += 1
                if (i ^ len(changes)) & 1:
                    i += 1
            else:  # pass: a0 moves under b2, colour unchanged; the next b1 is two on
                a0 = reference[i + 1]
                p += length
                if a0 >= width:
                    break
                i += 2
    except (KeyError, IndexError):
        raise _Undecodable(p) from None
    if zero_run:  # zero-length runs put two changes on one pel; they cancel out
        merged: list[int] = []
        for change in changes:
            if merged and merged[-1] == change:
                merged.pop()
            else:
                merged.append(change)
        changes = merged
    while changes and changes[-1] >= width:
        changes.pop()
    return changes, p


_WHITE = t4codes.WHITE_TABLE
_BLACK = t4codes.BLACK_TABLE

# Mode codes by their next 7 bits: (code length, vertical offset | 4 horizontal | 5 pass).
_MODES = {
    key: (length, offset if kind == t4codes.MODE_VERTICAL else (4 if kind == t4codes.MODE_HORIZONTAL else 5))
    for key, (kind, length, offset) in t4codes.MODE_TABLE.items()
}
# A window starting with V0 ('1') gives the number of V0 codes it starts with instead.
_MODES.update({key: (len(key) - len(key.lstrip("1")), 0) for key in _MODES if key[0] == "1"})


class _SuffixMasks(dict[int, list[int]]):
    """Line width -> for each pel c, the row as an int (pel 0 its top bit) with pels c.. black."""

    def __missing__(self, width: int) -> list[int]:
        if len(self) >= 8:
            self.clear()  # up to ~1.6 MB per width; pages come in a few standard widths
        masks = self[width] = [(1 << (width - c)) - 1 for c in range(width + 1)]
        return masks


_SUFFIX_MASKS = _SuffixMasks()


def _row_from_padded(padded: list[int], masks: list[int], octets: int) -> bytes:
    """The packed row with changing elements ``padded`` (padding included; masks[width] = 0)."""
    # Each changing element flips the colour of every pel from it to the line end, so the
    # row is the XOR of the suffix masks of its changes: one C-level reduce, no pel string.
    return reduce(xor, map(masks.__getitem__, padded), 0).to_bytes(octets, "big")


def changes_from_pixels(pixels: str) -> list[int]:
    """The changing elements of a line of pels."""
    ends = [m.end() for m in _RUN.finditer(pixels)]
    ends.pop()
    if pixels[:1] == "1":
        ends.insert(0, 0)
    return ends


class StreamingDecoder:
    """Decodes one page of T.4 MH/MR or T.6 MMR data fed in pieces as it arrives.

    ``feed`` never raises on bad data; damage is counted in bad rows (see DecodedPage).
    Raises ValueError at construction for a width that is not a positive multiple of 8 up to
    4864 pels.
    """

    def __init__(self, coding: Coding, width: int, *, bit_order: BitOrder, max_rows: int = MAX_ROWS) -> None:
        if not isinstance(coding, Coding) or not isinstance(bit_order, BitOrder):
            raise ValueError("coding must be a Coding and bit_order a BitOrder")
        if width <= 0 or width % 8 or width > t4codes.MAX_WIDTH:
            raise ValueError(f"width must be a multiple of 8 from 8 to {t4codes.MAX_WIDTH}, got {width}")
        self.coding = coding
        self.width = width
        self.bit_order = bit_order
        self.max_rows = max(1, max_rows)
        self._full = False  # max_rows reached: nothing more is decoded
        self._bits = ""
        # Rows are kept packed (as DecodedPage.bitmap has them); the changing elements of a
        # row (needed when it is the reference of a 2-D line) are kept padded with three
        # copies of the width, or None until needed.
        self._lines: list[bytes] = []
        self._octets = width // 8
        self._white = bytes(self._octets)
        self._masks = _SUFFIX_MASKS[width]
        self._width_pad = [width, width, width]
        self._last_good = self._white
        self._last_good_changes: list[int] | None = list(self._width_pad)
        self._reference_row = self._white
        self._reference_changes: list[int] | None = self._last_good_changes
        self._bad_rows = 0
        self._bad_run = 0
        self._longest_bad_run = 0
        self._synced = coding is Coding.MMR
        self._consecutive_eols = 0
        self._garbage_pending = False
        self._ended = False
        self._damaged = False
        self._finished: DecodedPage | None = None
        # 1-D line bits -> _decode_1d_line's answer.
        self._line_cache: dict[str, tuple[bytes | None, list[int] | None]] = {}
        self._retry_at = 0

    @property
    def page_ended(self) -> bool:
        """True once RTC (T.4) or EOFB (T.6) has been seen."""
        return self._ended

    @property
    def rows(self) -> int:
        """Rows decoded so far, bad rows (replaced) included."""
        return len(self._lines)

    @property
    def bad_rows(self) -> int:
        return self._bad_rows

    @property
    def damaged(self) -> bool:
        """True once MMR data could not be decoded any further."""
        return self._damaged

    def feed(self, data: bytes) -> None:
        """Decode ``data``, the next octets of the page as received."""
        if self._finished is not None or not data:
            return
        if self._ended and not self._damaged:
            return  # after RTC/EOFB: whatever follows is not this page
        if self._full:
            return
        self._bits += to_bits(bytes(data), self.bit_order)
        try:
            if self.coding is Coding.MMR:
                self._decode_t6(final=False)
            else:
                self._decode_t4(final=False)
        except _RowLimit:
            self._full, self._bits = True, ""

    def finish(self) -> DecodedPage:
        """End the page (data may have stopped early) and return it."""
        if self._finished is None:
            if not self._ended and not self._full:
                try:
                    if self.coding is Coding.MMR:
                        self._decode_t6(final=True)
                    else:
                        self._decode_t4(final=True)
                except _RowLimit:
                    self._full, self._bits = True, ""
            self._close_bad_run()
            self._finished = DecodedPage(
                width=self.width,
                height=len(self._lines),
                bitmap=b"".join(self._lines),
                bad_rows=self._bad_rows,
                longest_bad_run=self._longest_bad_run,
                damaged=self._damaged,
                ended=self._ended,
            )
            self._lines = []
        return self._finished

    # --- rows ---

    def _emit(self, row: bytes | None, changes: list[int] | None) -> None:
        if row is None:
            self._bad_rows += 1
            self._bad_run += 1
            row, changes = self._last_good, self._last_good_changes
        else:
            if self._bad_run:
                self._close_bad_run()
            self._last_good, self._last_good_changes = row, changes
        self._lines.append(row)
        self._reference_row, self._reference_changes = row, changes
        if len(self._lines) >= self.max_rows:
            raise _RowLimit

    def _close_bad_run(self) -> None:
        if self._bad_run > self._longest_bad_run:
            self._longest_bad_run = self._bad_run
        self._bad_run = 0

    def _reference(self) -> list[int]:
        """The reference line's changing elements padded with three widths (do not modify)."""
        reference = self._reference_changes
        if reference is None:
            row = self._reference_row
            reference = changes_from_pixels(unpack_pixels(row))
            reference += self._width_pad
            self._reference_changes = reference
            if self._last_good is row:
                self._last_good_changes = reference
        return reference

    # --- T.4 ---

    def _decode_t4(self, *, final: bool) -> None:
        bits = self._bits
        position = 0
        if not self._synced:
            # T.4 4.1.3: the first EOL of the page marks its start; bits before it are not
            # image data.
            eol = bits.find(EOL)
            if eol < 0:
                self._bits = bits[-11:]
                return
            self._synced = True
            self._consecutive_eols = 1
            position = eol + 12
        find = bits.find
        while not self._ended:
            eol = find(EOL, position)
            if eol < 0:
                break
            self._t4_line(bits[position:eol])
            position = eol + 12
        rest = bits[position:]
        if self._ended:
            rest = ""
        elif final:
            if "1" in rest:
                self._t4_line(rest)  # the last line had no EOL after it (no RTC)
            rest = ""
        elif len(rest) > MAX_LINE_BITS:
            # No EOL was found, so a run of 11 or more zeros in ``rest`` is its end: fill
            # (T.4 4.1.2), which decodes the same however long.  Keep the zeros an EOL
            # needs; only a line whose code itself is this long is garbage.
            code = rest.rstrip("0")
            if len(code) <= MAX_LINE_BITS:
                rest = code + "0" * 11
            else:
                self._garbage_pending = True
                rest = rest[-11:]
        self._bits = rest

    def _t4_line(self, line: str) -> None:
        two_d = False
        if self.coding is Coding.MR:
            # T.4 4.2.1.3.4: each EOL is followed by a tag bit, 1 = next line is 1-D.
            two_d = line[:1] == "0"
            line = line[1:]
        if self._garbage_pending:
            # This is the tail of a line that grew past MAX_LINE_BITS (its head was dropped
            # in an earlier piece): the whole line is one bad row, as it is when it comes in
            # one piece (no row is that long), whatever its tail holds.
            self._garbage_pending = False
            self._consecutive_eols = 1
            self._emit(None, None)
            return
        if "1" not in line:
            self._consecutive_eols += 1
            if self._consecutive_eols >= EOLS_TO_END_T4_PAGE:
                self._ended = True
            return
        self._consecutive_eols = 1
        if two_d:
            self._t4_2d_line(line)
            return
        cache = self._line_cache
        try:
            row, changes = cache[line]
        except KeyError:
            if self.coding is Coding.MH:
                row, changes = _decode_1d_row(line, self.width, self._octets)
            else:
                row, changes = _decode_1d_line(line, self._masks, self._octets)
            if len(line) <= _CACHED_LINE_BITS:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[line] = row, changes
        self._emit(row, changes)

    def _t4_2d_line(self, line: str) -> None:
        reference = self._reference()
        try:
            changes, end = decode_2d_line(line + _PAD, 0, reference, self.width)
        except _Undecodable:
            self._emit(None, None)
            return
        if end > len(line) or "1" in line[end:]:
            self._emit(None, None)  # codes ran into the EOL, or more codes than pels
            return
        self._emit_changes(changes, reference)

    def _emit_changes(self, changes: list[int] | None, reference: list[int]) -> None:
        if changes is None:  # all V0: the reference line again
            self._emit(self._reference_row, reference)
            return
        changes += self._width_pad
        if len(changes) == len(reference) and changes == reference:
            self._emit(self._reference_row, reference)
        else:
            self._emit(_row_from_padded(changes, self._masks, self._octets), changes)

    # --- T.6 ---

    def _decode_t6(self, *, final: bool) -> None:
        bits = self._bits
        if self._damaged:
            # Nothing after the damage can be placed; only look for EOFB to end the page.
            if EOFB in bits:
                self._ended = True
                bits = ""
            self._bits = bits[-23:]
            return
        length = len(bits)
        if not final and length < self._retry_at and EOFB not in bits:
            return  # the line that did not fit last time is likely still incomplete
        padded = bits + _PAD
        width = self.width
        position = 0
        damaged_at = -1
        incomplete = False
        while True:
            if bits.find("1", position) < 0:
                if final:
                    position = length  # trailing zeros: pad after the last line
                break
            left = length - position
            if left < 24 and EOFB.startswith(bits[position:]):
                if not final:
                    break  # maybe the start of EOFB
                if left == 0 or "1" not in bits[position:]:
                    position = length
                    break  # trailing zeros or a cut EOFB
            if bits.startswith(EOL, position):
                if bits.startswith(EOFB, position):
                    self._ended = True
                    position = length
                    break
                if not final and left < 24:
                    break
                damaged_at = position
                self._damage()
                position = length
                break
            reference = self._reference()
            try:
                changes, end = decode_2d_line(padded, position, reference, width)
            except _Undecodable as error:
                if not final and error.position >= length - 13:
                    incomplete = True  # the line continues in data not yet received
                    break
                damaged_at = position
                self._damage()
                position = length
                break
            if end > length:
                if not final:
                    incomplete = True
                    break
                damaged_at = position
                self._damage()
                position = length
                break
            self._emit_changes(changes, reference)
            position = end
        if damaged_at >= 0:
            # What follows the damage in this same piece is looked at as later pieces would
            # be: only for EOFB (else the page's end depends on how the data was cut).
            self._bits = bits[damaged_at:]
            self._decode_t6(final=final)
            return
        self._bits = bits[position:]
        # Retrying a line on every small piece (T.38 carries ~40 octets per packet at
        # 14400 bit/s) would decode it many times: wait for a few more octets first.
        self._retry_at = len(self._bits) + _RETRY_BITS if incomplete else 0

    def _damage(self) -> None:
        self._damaged = True
        self._emit(None, None)
