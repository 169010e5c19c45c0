"""Non-ECM (T.4 MH/MR) page reception: keep the data, decode the page once at its end.

``StreamingDecoder`` decodes each row as its data arrives; at load most of a non-ECM call's
CPU went there (t38gw issue #14).  Nothing needs the pels before the page ends: the T.30
receiver reads only ``page_ended`` (RTC: stop feeding; a loss after RTC lost no row),
``rows`` (a page has begun; the MAX_PAGE_ROWS bound; the rows intact before a loss) and,
at the page's end, the finished page (bad rows and longest bad run decide MCF/RTP/RTN).

``NonEcmPageDecoder`` keeps the octets as they arrive and gives ``page_ended`` and ``rows``
exactly as ``StreamingDecoder`` would after every ``feed``, without decoding a row:
StreamingDecoder's T.4 path cuts the bit string at EOLs with ``str.find`` (EOL never
occurs inside valid line data, T.4 4.1.2), counts every segment holding a 1 bit (after
MR's tag bit, T.4 4.2.1.3.4) as one row, good or bad, and ends the page after
EOLS_TO_END_T4_PAGE EOLs in a row (RTC, T.4 4.1.4).  That needs only the EOL positions
and whether a segment holds a 1, which ``str.find`` answers at C speed.  The one rule it
does not follow is the cut of an over-long line (MAX_LINE_BITS without an EOL, which
depends on where the pieces were cut): there it hands over to a real StreamingDecoder,
fed every piece kept so far, as they came.

At ``finish`` a page that ended with RTC, with no loss noted, goes whole through
``wholepage.try_libtiff_decode``, which answers only where it proves its page equal to
StreamingDecoder's (every row segment libtiff's own canonical coding of the decoded row,
so no bad row; RTC where StreamingDecoder ends).  Anything else - damaged data, a page
without RTC, IFPs lost (``note_loss``), a page over ``max_rows`` - is fed to
StreamingDecoder piece by piece exactly as it arrived, so bad rows, longest bad run and
bitmap are what they always were.
"""

from __future__ import annotations

from .bits import to_bits
from .decoder import EOL, EOLS_TO_END_T4_PAGE, MAX_LINE_BITS, StreamingDecoder
from .model import BitOrder, Coding, DecodedPage
from .wholepage import DEFAULT_MAX_ROWS, LibtiffAttempt


class NonEcmPageDecoder:
    """A T.4 page kept as it arrives and decoded at its end (see the module docstring).

    Same interface as ``StreamingDecoder`` (``feed``, ``page_ended``, ``rows``, ``finish``)
    and the same answers.  MMR is refused: T.30 allows T.6 only with ECM (T.30 Table 2,
    DIS/DCS bit 31), where ``EcmPageDecoder`` keeps the blocks instead.
    """

    def __init__(self, coding: Coding, width: int, *, bit_order: BitOrder, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if coding is Coding.MMR:
            raise ValueError("NonEcmPageDecoder takes T.4 (MH or MR) only")
        # Validates coding, width and bit order as it always did.
        self._streaming: StreamingDecoder | None = StreamingDecoder(coding, width, bit_order=bit_order)
        self.coding = coding
        self.width = width
        self.bit_order = bit_order
        self.max_rows = max_rows
        self._handed_over = False  # True once _streaming has been fed (it decodes from then on)
        self._pieces: list[bytes] = []
        self._bits = ""  # bits after the last EOL found (or, before the first, its last 11)
        self._tag_bit = 1 if coding is Coding.MR else 0
        self._synced = False
        self._consecutive_eols = 0
        self._rows = 0
        self._ended = False
        self._loss_noted = False
        self._finished: DecodedPage | None = None
        #: How the finished page was decoded: "libtiff", "streaming" or None (not yet).
        self.path: str | None = None
        #: ``attempt()`` and its result, run elsewhere before ``finish`` (see LibtiffAttempt).
        self.ahead: tuple[LibtiffAttempt, DecodedPage | None] | None = None

    @property
    def page_ended(self) -> bool:
        """True once RTC has been seen (as StreamingDecoder.page_ended)."""
        if self._handed_over:
            assert self._streaming is not None
            return self._streaming.page_ended
        return self._ended

    @property
    def rows(self) -> int:
        """Rows so far, bad ones included (as StreamingDecoder.rows)."""
        if self._handed_over:
            assert self._streaming is not None
            return self._streaming.rows
        return self._rows

    def note_loss(self) -> None:
        """Image data of this page was lost (UDPTL could not recover IFPs): no fast path.

        Rows in lost data leave no trace the proof could see; StreamingDecoder decodes the
        page as it did before, so the copy kept is the same.
        """
        self._loss_noted = True

    def feed(self, data: bytes) -> None:
        """Keep ``data``, the next octets of the page as received."""
        if self._handed_over:
            assert self._streaming is not None
            self._streaming.feed(data)
            return
        if self._ended or not data or self._finished is not None:
            return  # after RTC: not this page (StreamingDecoder ignores it too)
        piece = bytes(data)
        self._pieces.append(piece)
        # StreamingDecoder._decode_t4's segmentation, without decoding the segments.
        bits = self._bits + to_bits(piece, self.bit_order)
        position = 0
        if not self._synced:
            # T.4 4.1.3: the first EOL marks the start of the page.
            eol = bits.find(EOL)
            if eol < 0:
                self._bits = bits[-11:]
                return
            self._synced = True
            self._consecutive_eols = 1
            position = eol + 12
        find = bits.find
        eol = find(EOL, position)
        if eol >= 0:
            tag_bit = self._tag_bit
            rows = self._rows
            consecutive = self._consecutive_eols
            while eol >= 0:
                # A segment with a 1 bit (after MR's tag bit) is a row, decodable or not.
                if find("1", position + tag_bit, eol) >= 0:
                    rows += 1
                    consecutive = 1
                else:
                    consecutive += 1
                    if consecutive >= EOLS_TO_END_T4_PAGE:
                        self._ended = True
                        self._rows = rows
                        self._bits = ""
                        return
                position = eol + 12
                eol = find(EOL, position)
            self._rows = rows
            self._consecutive_eols = consecutive
        bits = bits[position:]
        if len(bits) > MAX_LINE_BITS:
            # StreamingDecoder cuts such a line where this piece ended and counts a bad row
            # before the next: let it decode from here on, fed everything as it came.
            self._hand_over()
            return
        self._bits = bits

    def _hand_over(self) -> None:
        streaming = self._streaming
        assert streaming is not None
        self._handed_over = True
        for piece in self._pieces:
            streaming.feed(piece)
        self._pieces = []
        self._bits = ""

    def attempt(self) -> LibtiffAttempt | None:
        """The libtiff decode ``finish`` would try now (None: it would not try one)."""
        if not self._handed_over and self._ended and not self._loss_noted and self._rows <= self.max_rows:
            return LibtiffAttempt(b"".join(self._pieces), self.coding, self.width, self.bit_order, self.max_rows,
                                  self._rows)
        return None

    def finish(self) -> DecodedPage:
        """End the page and return it, as StreamingDecoder fed the same pieces would."""
        if self._finished is not None:
            return self._finished
        attempt = self.attempt()
        if attempt is not None:
            page = attempt.result(self.ahead)
            # Its height is the rows counted as the data came (one more guard, at no cost).
            if page is not None and page.height == self._rows:
                self._finished = page
                self.path = "libtiff"
                self._pieces = []
                self._streaming = None
                return page
        if not self._handed_over:
            self._hand_over()
        streaming = self._streaming
        assert streaming is not None
        self._finished = streaming.finish()
        self.path = "streaming"
        return self._finished
