"""DIS/DTC/DCS facsimile information fields (T.30 5.3.6.2.1-2 and Table 2).

Bit ``n`` of Table 2 is bit ``(n-1) % 8`` (LSB = bit 1) of octet ``(n-1) // 8`` of the FIF,
as frames are held in transmission order (see ``frames``).  Bits 24, 32, 40, ... are
extend bits: octet ``k+1`` exists only when the last bit of octet ``k`` is 1, and a
receiver ignores octets beyond the last one announced (T.30 Table 2 note 1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from udptl.ifp import T30Data, T30Indicator

from t38gw.t30.errors import RemoteProtocolError

# Table 2 bit numbers we read or write.  Names follow the DCS meaning.
BIT_T38 = 3
BIT_READY_TO_TRANSMIT = 9  # DIS: a document is ready to be polled
BIT_RECEIVE = 10  # DIS: can receive; DCS: "set yourself to receive"
BITS_MODEM = (11, 12, 13, 14)
BIT_FINE = 15  # R8 x 7.7 l/mm, or 200x200 with bit 44
BIT_2D = 16  # MR
BIT_WIDTH_B4 = 17  # 255 mm
BIT_WIDTH_A3 = 18  # 303 mm
BIT_LENGTH_B4 = 19
BIT_LENGTH_UNLIMITED = 20
BITS_SCAN_TIME = (21, 22, 23)
BIT_UNCOMPRESSED = 26
BIT_ECM = 27
BIT_ECM_64 = 28  # DCS: 64-octet frames (only valid with ECM)
BIT_T6 = 31  # MMR (only valid with ECM)
BIT_SUPERFINE = 41  # R8 x 15.4 l/mm, or 200x400 with bit 44
BIT_300_300 = 42
BIT_400_400 = 43  # R16 x 15.4 l/mm, or 400x400 with bit 44
BIT_INCH = 44
BIT_METRIC_PREFERRED = 45
BIT_SUBADDRESS = 49
BIT_PASSWORD = 50  # DIS: password capable; DCS: sender identification follows
BIT_LETTER = 76
BIT_LEGAL = 77
BIT_600_600 = 105
BIT_1200_1200 = 106
BIT_300_600 = 107
BIT_400_800 = 108
BIT_600_1200 = 109
BIT_T38_FAX_MODE = 123

#: Bits that, set in a DCS, ask for a mode we cannot receive (T.30 Table 2: JPEG, T.43,
#: BFT, character mode, colour, JBIG, T.44 ...); we answer them with DCN/incompatible.
UNSUPPORTED_DCS_BITS = (36, 53, 54, 55, 57, 60, 62, 68, 69, 78, 79, 116, 127)


class Modulation(enum.Enum):
    """Image modems. Over T.38 only the label travels: the indicator and data type."""

    V27TER_2400 = ("V.27ter", 2400, (0, 0, 0, 0), T30Indicator.V27_2400_TRAINING, T30Data.V27_2400)
    V27TER_4800 = ("V.27ter", 4800, (0, 1, 0, 0), T30Indicator.V27_4800_TRAINING, T30Data.V27_4800)
    V29_7200 = ("V.29", 7200, (1, 1, 0, 0), T30Indicator.V29_7200_TRAINING, T30Data.V29_7200)
    V29_9600 = ("V.29", 9600, (1, 0, 0, 0), T30Indicator.V29_9600_TRAINING, T30Data.V29_9600)
    V17_7200 = ("V.17", 7200, (1, 1, 0, 1), T30Indicator.V17_7200_LONG_TRAINING, T30Data.V17_7200)
    V17_9600 = ("V.17", 9600, (1, 0, 0, 1), T30Indicator.V17_9600_LONG_TRAINING, T30Data.V17_9600)
    V17_12000 = ("V.17", 12000, (0, 1, 0, 1), T30Indicator.V17_12000_LONG_TRAINING, T30Data.V17_12000)
    V17_14400 = ("V.17", 14400, (0, 0, 0, 1), T30Indicator.V17_14400_LONG_TRAINING, T30Data.V17_14400)

    def __init__(self, family: str, bit_rate: int, dcs_code: tuple[int, int, int, int],
                 indicator: T30Indicator, data_type: T30Data) -> None:
        self.family = family
        self.bit_rate = bit_rate
        self.dcs_code = dcs_code  # T.30 Table 2 bits 11, 12, 13, 14 of a DCS
        self.indicator = indicator
        self.data_type = data_type

    @classmethod
    def for_data_type(cls, data_type: object) -> Modulation | None:
        """The modem a T.38 t30-data value names (None for V.21/V.8/V.34/V.33...)."""
        return _BY_DATA_TYPE.get(data_type)


_BY_DCS_CODE: dict[tuple[int, ...], Modulation] = {m.dcs_code: m for m in Modulation}
_BY_DATA_TYPE: dict[object, Modulation] = {m.data_type: m for m in Modulation}


class Compression(enum.Enum):
    """One-dimensional MH (T.4), two-dimensional MR (T.4) or MMR (T.6, ECM only)."""

    MH = "mh"
    MR = "mr"
    MMR = "mmr"


class Resolution(enum.Enum):
    """Resolutions we receive: (name, x dpi, y dpi, pixels across A4 / B4 / A3)."""

    R8_STANDARD = ("204x98", 204, 98, (1728, 2048, 2432))
    R8_FINE = ("204x196", 204, 196, (1728, 2048, 2432))
    R8_SUPERFINE = ("204x391", 204, 391, (1728, 2048, 2432))
    R16_SUPERFINE = ("408x391", 408, 391, (3456, 4096, 4864))
    INCH_200_100 = ("200x100", 200, 100, (1728, 2048, 2432))
    INCH_200_200 = ("200x200", 200, 200, (1728, 2048, 2432))
    INCH_200_400 = ("200x400", 200, 400, (1728, 2048, 2432))
    INCH_300_300 = ("300x300", 300, 300, (2592, 3072, 3648))
    INCH_400_400 = ("400x400", 400, 400, (3456, 4096, 4864))

    def __init__(self, label: str, x_dpi: int, y_dpi: int, widths: tuple[int, int, int]) -> None:
        self.label = label
        self.x_dpi = x_dpi
        self.y_dpi = y_dpi
        self.widths = widths


class PaperWidth(enum.IntEnum):
    """T.30 Table 2 bits 17-18 (DCS): index into ``Resolution.widths``."""

    A4 = 0
    B4 = 1
    A3 = 2


def get_bit(fif: bytes, bit: int) -> bool:
    """Table 2 bit ``bit`` (1-based) of a FIF; bits past the end read as 0."""
    index = (bit - 1) >> 3
    return index < len(fif) and bool(fif[index] & (1 << ((bit - 1) & 7)))


def announced_length(fif: bytes) -> int:
    """How many octets the extend bits (24, 32, ...) announce, capped at len(fif)."""
    length = min(3, len(fif))
    while length < len(fif) and length >= 3 and fif[length - 1] & 0x80:
        length += 1
    return length


def _build(bits: set[int]) -> bytes:
    """A FIF with ``bits`` set and the extend bits needed to reach the highest one."""
    octets = max(3, (max(bits, default=1) - 1) // 8 + 1)
    fif = bytearray(octets)
    for bit in bits:
        fif[(bit - 1) >> 3] |= 1 << ((bit - 1) & 7)
    for k in range(3, octets):
        fif[k - 1] |= 0x80  # T.30 Table 2: bit 8k is "extend field"
    return bytes(fif)


@dataclass(frozen=True)
class ReceiveCapabilities:
    """What our DIS offers (T.30 5.3.6.2.1)."""

    modems: frozenset[str] = frozenset({"V.27ter", "V.29", "V.17"})
    ecm: bool = True
    compressions: frozenset[Compression] = frozenset(Compression)
    resolutions: frozenset[Resolution] = frozenset(Resolution)
    widths: frozenset[PaperWidth] = frozenset(PaperWidth)
    #: False sends a DIS without bit 10 (e.g. the archive is full): senders hang up.
    ready_to_receive: bool = True

    def dis_fif(self) -> bytes:
        """The DIS FIF for these capabilities."""
        # Table 2 bits 19-20 in a DIS: 01 = unlimited length (which covers A4 and B4);
        # 11 is invalid.
        bits = {BIT_LENGTH_UNLIMITED, *BITS_SCAN_TIME}
        if self.ready_to_receive:
            bits.add(BIT_RECEIVE)
        # T.30 Table 2 bits 11-14 in a DIS: 0100 V.27ter, 1100 V.27ter+V.29, 1101 +V.17.
        if "V.17" in self.modems:
            bits |= {11, 12, 14}
        elif "V.29" in self.modems:
            bits |= {11, 12}
        else:
            bits |= {12}
        if Compression.MR in self.compressions:
            bits.add(BIT_2D)
        if self.ecm:
            bits.add(BIT_ECM)
            if Compression.MMR in self.compressions:
                bits.add(BIT_T6)
        # Table 2 bits 17-18 in a DIS: 00 = 215 mm, 10 = up to 255 mm, 01 = up to 303 mm,
        # 11 invalid.
        if PaperWidth.A3 in self.widths:
            bits.add(BIT_WIDTH_A3)
        elif PaperWidth.B4 in self.widths:
            bits.add(BIT_WIDTH_B4)
        res = self.resolutions
        if res & {Resolution.R8_FINE, Resolution.INCH_200_200}:
            bits.add(BIT_FINE)
        if res & {Resolution.R8_SUPERFINE, Resolution.INCH_200_400}:
            bits.add(BIT_SUPERFINE)
        if Resolution.INCH_300_300 in res:
            bits.add(BIT_300_300)
        if res & {Resolution.R16_SUPERFINE, Resolution.INCH_400_400}:
            bits.add(BIT_400_400)
        # Bits 44/45: we take inch- and metric-based pages alike (Table 2 note on 44/45).
        bits |= {BIT_INCH, BIT_METRIC_PREFERRED}
        bits |= {BIT_SUBADDRESS, BIT_PASSWORD}
        return _build(bits)


@dataclass(frozen=True)
class DcsParameters:
    """A parsed DCS (or the DTC/DIS capability view of the same bits)."""

    modulation: Modulation
    resolution: Resolution
    paper_width: PaperWidth
    compression: Compression
    ecm: bool
    ecm_frame_size: int
    min_scan_time_ms: int | None
    t38_mode: bool
    receive: bool
    unsupported_bits: tuple[int, ...] = field(default=())
    fif: bytes = b""

    @property
    def width_px(self) -> int:
        return self.resolution.widths[self.paper_width]


_SCAN_TIMES: dict[tuple[int, ...], int] = {(0, 0, 0): 20, (0, 0, 1): 40, (0, 1, 0): 10, (1, 0, 0): 5, (1, 1, 1): 0}


def parse_dcs(fif: bytes) -> DcsParameters:
    """Parse a DCS FIF (T.30 Table 2, DCS column).

    Raises RemoteProtocolError when the FIF is shorter than three octets or names a
    modem code or width that Table 2 reserves; unsupported but valid modes (colour,
    JBIG, BFT ...) come back in ``unsupported_bits`` for the engine to refuse politely.
    """
    if len(fif) < 3:
        raise RemoteProtocolError(f"DCS FIF of {len(fif)} octets (need at least 3)")
    fif = fif[: announced_length(fif)]
    code = tuple(int(get_bit(fif, b)) for b in BITS_MODEM)
    modulation = _BY_DCS_CODE.get(code)
    if modulation is None:
        raise RemoteProtocolError(f"DCS modem code {code} is reserved or not a supported modem")
    inch = get_bit(fif, BIT_INCH)
    if get_bit(fif, BIT_300_300):
        resolution = Resolution.INCH_300_300
    elif get_bit(fif, BIT_400_400):
        resolution = Resolution.INCH_400_400 if inch else Resolution.R16_SUPERFINE
    elif get_bit(fif, BIT_SUPERFINE):
        resolution = Resolution.INCH_200_400 if inch else Resolution.R8_SUPERFINE
    elif get_bit(fif, BIT_FINE):
        resolution = Resolution.INCH_200_200 if inch else Resolution.R8_FINE
    else:
        resolution = Resolution.INCH_200_100 if inch else Resolution.R8_STANDARD
    width_bits = (get_bit(fif, BIT_WIDTH_B4), get_bit(fif, BIT_WIDTH_A3))
    if width_bits == (True, True):
        raise RemoteProtocolError("DCS width bits 17-18 = 11 are invalid (T.30 Table 2)")
    paper_width = PaperWidth.A3 if width_bits[1] else PaperWidth.B4 if width_bits[0] else PaperWidth.A4
    ecm = get_bit(fif, BIT_ECM)
    # T.30 Table 2 notes 7 and 9: bits 28 and 31 of a DCS only count with ECM.
    if ecm and get_bit(fif, BIT_T6):
        compression = Compression.MMR
    elif get_bit(fif, BIT_2D):
        compression = Compression.MR
    else:
        compression = Compression.MH
    unsupported = [b for b in UNSUPPORTED_DCS_BITS if get_bit(fif, b)]
    unsupported += [b for b in (BIT_600_600, BIT_1200_1200, BIT_300_600, BIT_400_800, BIT_600_1200) if get_bit(fif, b)]
    if get_bit(fif, BIT_UNCOMPRESSED):
        unsupported.append(BIT_UNCOMPRESSED)
    if get_bit(fif, BIT_T6) and not ecm:
        unsupported.append(BIT_T6)
    return DcsParameters(
        modulation=modulation,
        resolution=resolution,
        paper_width=paper_width,
        compression=compression,
        ecm=ecm,
        ecm_frame_size=64 if ecm and get_bit(fif, BIT_ECM_64) else 256,
        min_scan_time_ms=_SCAN_TIMES.get(tuple(int(get_bit(fif, b)) for b in BITS_SCAN_TIME)),
        t38_mode=get_bit(fif, BIT_T38_FAX_MODE),
        receive=get_bit(fif, BIT_RECEIVE),
        unsupported_bits=tuple(sorted(unsupported)),
        fif=bytes(fif),
    )


def build_dcs(
    modulation: Modulation,
    resolution: Resolution = Resolution.R8_STANDARD,
    paper_width: PaperWidth = PaperWidth.A4,
    compression: Compression = Compression.MH,
    ecm: bool = False,
    ecm_frame_size: int = 256,
    min_scan_time_ms: int = 0,
) -> bytes:
    """Build a DCS FIF (used by tests and by the send engine).  ``min_scan_time_ms`` is
    one of 0, 5, 10, 20, 40 (T.30 Table 2 bits 21-23 of a DCS)."""
    scan_code = {ms: code for code, ms in _SCAN_TIMES.items()}[min_scan_time_ms]
    bits = {BIT_RECEIVE} | {b for b, on in zip(BITS_SCAN_TIME, scan_code) if on}
    bits |= {b for b, on in zip(BITS_MODEM, modulation.dcs_code) if on}
    bits |= {
        Resolution.R8_FINE: {BIT_FINE},
        Resolution.R8_SUPERFINE: {BIT_SUPERFINE},
        Resolution.R16_SUPERFINE: {BIT_400_400},
        Resolution.INCH_200_100: {BIT_INCH},
        Resolution.INCH_200_200: {BIT_FINE, BIT_INCH},
        Resolution.INCH_200_400: {BIT_SUPERFINE, BIT_INCH},
        Resolution.INCH_300_300: {BIT_300_300, BIT_INCH},
        Resolution.INCH_400_400: {BIT_400_400, BIT_INCH},
    }.get(resolution, set())
    if paper_width is PaperWidth.B4:
        bits.add(BIT_WIDTH_B4)
    elif paper_width is PaperWidth.A3:
        bits.add(BIT_WIDTH_A3)
    if compression is Compression.MR:
        bits.add(BIT_2D)
    if ecm:
        bits.add(BIT_ECM)
        if ecm_frame_size == 64:
            bits.add(BIT_ECM_64)
        if compression is Compression.MMR:
            bits.add(BIT_T6)
    return _build(bits)


#: T.30 Table 2 bits 21-23 of a DIS: the receiver's minimum scan-line time in ms, as
#: (at standard resolution, at fine and finer) - codes 011/110/101 halve it at fine.
_DIS_SCAN_TIMES: dict[tuple[int, ...], tuple[int, int]] = {
    (0, 0, 0): (20, 20), (0, 0, 1): (40, 40), (0, 1, 0): (10, 10), (1, 0, 0): (5, 5),
    (1, 1, 0): (10, 5), (0, 1, 1): (20, 10), (1, 0, 1): (40, 20), (1, 1, 1): (0, 0),
}


@dataclass(frozen=True)
class RemoteCapabilities:
    """A parsed DIS (T.30 5.3.6.2.1): what the called terminal can receive."""

    capabilities: ReceiveCapabilities
    #: Minimum scan-line time in ms at standard resolution and at fine or finer.
    scan_time_ms: tuple[int, int]
    fif: bytes = b""


def parse_dis(fif: bytes) -> RemoteCapabilities:
    """Parse a DIS FIF (T.30 Table 2, DIS column) into the ``ReceiveCapabilities`` it offers.

    Raises RemoteProtocolError when the FIF is shorter than three octets.
    """
    if len(fif) < 3:
        raise RemoteProtocolError(f"DIS FIF of {len(fif)} octets (need at least 3)")
    fif = fif[: announced_length(fif)]
    # Table 2 bits 11-14 of a DIS: 0000 V.27ter fall-back only, 0100 V.27ter, 1100 V.27ter and
    # V.29, 1101 V.27ter, V.29 and V.17 (other codes: V.33 or reserved, read as V.27ter+V.29).
    b11, b12, b14 = get_bit(fif, 11), get_bit(fif, 12), get_bit(fif, 14)
    modems = {"V.27ter"}
    if b11:
        modems.add("V.29")
        if b12 and b14:
            modems.add("V.17")
    compressions = {Compression.MH}
    if get_bit(fif, BIT_2D):
        compressions.add(Compression.MR)
    ecm = get_bit(fif, BIT_ECM)
    if ecm and get_bit(fif, BIT_T6):
        compressions.add(Compression.MMR)
    widths = {PaperWidth.A4}
    if get_bit(fif, BIT_WIDTH_A3):
        widths |= {PaperWidth.B4, PaperWidth.A3}
    elif get_bit(fif, BIT_WIDTH_B4):
        widths.add(PaperWidth.B4)
    inch, metric = get_bit(fif, BIT_INCH), get_bit(fif, BIT_METRIC_PREFERRED)
    metric = metric or not inch  # Table 2 note: without bit 44 the receiver is metric
    resolutions = set()
    if metric:
        resolutions.add(Resolution.R8_STANDARD)
        if get_bit(fif, BIT_FINE):
            resolutions.add(Resolution.R8_FINE)
        if get_bit(fif, BIT_SUPERFINE):
            resolutions.add(Resolution.R8_SUPERFINE)
        if get_bit(fif, BIT_400_400):
            resolutions.add(Resolution.R16_SUPERFINE)
    if inch:
        resolutions.add(Resolution.INCH_200_100)
        if get_bit(fif, BIT_FINE):
            resolutions.add(Resolution.INCH_200_200)
        if get_bit(fif, BIT_SUPERFINE):
            resolutions.add(Resolution.INCH_200_400)
        if get_bit(fif, BIT_400_400):
            resolutions.add(Resolution.INCH_400_400)
    if get_bit(fif, BIT_300_300):
        resolutions.add(Resolution.INCH_300_300)
    scan = _DIS_SCAN_TIMES[tuple(int(get_bit(fif, b)) for b in BITS_SCAN_TIME)]
    capabilities = ReceiveCapabilities(
        modems=frozenset(modems), ecm=ecm, compressions=frozenset(compressions),
        resolutions=frozenset(resolutions), widths=frozenset(widths),
        ready_to_receive=get_bit(fif, BIT_RECEIVE),
    )
    return RemoteCapabilities(capabilities, scan, bytes(fif))
