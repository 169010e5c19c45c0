"""The value types shared by the codecs, the outputs and the document loader."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Coding(enum.Enum):
    """Page coding negotiated in T.30 DCS: T.4 1-D (MH), T.4 2-D (MR) or T.6 (MMR)."""

    MH = "mh"
    MR = "mr"
    MMR = "mmr"


class BitOrder(enum.Enum):
    """Which bit of each octet goes on the line first.

    ``LSB_FIRST``: the first line bit is bit 0 of the octet (TIFF FillOrder=2; how SpanDSP's
    t4_rx/t4_tx and fax modems hold image data). ``MSB_FIRST``: the first line bit is bit 7
    (TIFF FillOrder=1; PDF's CCITTFaxDecode). **T.38 carries MSB_FIRST**: SpanDSP's
    t38_terminal.c bit-reverses every T4_NON_ECM_DATA field before t30_non_ecm_put() and
    every outgoing chunk from t4_tx, because IFP data fields hold the line bits
    most-significant first.
    """

    LSB_FIRST = "lsb_first"
    MSB_FIRST = "msb_first"


@dataclass(frozen=True)
class DecodedPage:
    """One received page.

    ``bitmap`` holds ``height`` packed rows of ``width // 8`` bytes, most significant bit
    first, 1 = black (the PBM P4 convention). ``bad_rows`` rows could not be decoded and were
    replaced by the previous good row; ``longest_bad_run`` is the longest run of consecutive
    bad rows (the T.30 receiver's MCF/RTP/RTN input). ``damaged`` is set when the coded data
    could not be followed to its end (MMR has no EOL to resynchronise on, so the rows after
    the damage are lost); ``ended`` when RTC or EOFB was seen.  ``g4``, when known, is the
    page's T.6 coding as the archive stores it (libtiff's, MSB first, ending with EOFB):
    an MMR page proven to be exactly that coding (``imaging.wholepage``) brings it along,
    so it is not coded a second time.
    """

    width: int
    height: int
    bitmap: bytes
    bad_rows: int = 0
    longest_bad_run: int = 0
    damaged: bool = False
    ended: bool = True
    g4: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Page:
    """A bilevel page with its true resolution: packed rows as in DecodedPage."""

    width: int
    height: int
    x_dpi: float
    y_dpi: float
    bitmap: bytes

    def __post_init__(self) -> None:
        if self.width <= 0 or self.width % 8 or self.height < 0:
            raise ValueError(f"page width must be a positive multiple of 8, got {self.width}x{self.height}")
        if len(self.bitmap) != self.width // 8 * self.height:
            raise ValueError(f"bitmap is {len(self.bitmap)} bytes, expected {self.width // 8 * self.height}")


class DocumentError(Exception):
    """A file given to send is not a usable document; the message is meant for the user."""


# T.4 Table 1 / T.30 DIS bits: the pel counts per line at R8 (and R16, doubled).
STANDARD_WIDTHS = (1728, 2048, 2432, 3456, 4096, 4864)
# (x_dpi, y_dpi) pairs we support: metric ones in their customary dpi names and the inch-based
# ones SpanDSP supports.
RESOLUTIONS = (
    (204, 98), (204, 196), (204, 391), (408, 391), (300, 300), (200, 200),
    (300, 600), (400, 400), (400, 800), (600, 600), (600, 1200), (1200, 1200),
)
