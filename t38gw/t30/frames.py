"""T.30 HDLC frames: address, control, FCF and FIF, as octets in transmission order.

Bit order.  T.30 numbers the bits of a frame in the order they are transmitted; HDLC
sends each octet least significant bit first.  We therefore hold frames with bit 1 of
each octet as its LSB (the order T.30 Table 2 and SpanDSP's ``t30_fcf.h`` use), so an FCF
written in T.30 as ``[0000 0001]`` (DIS, first transmitted bit on the left) is 0x80.
T.38 carries HDLC octets the other way round, first transmitted bit as the MSB (T.38
clause 7.3 sends the bit stream "in the order received", most significant bit first);
SpanDSP's ``t38_terminal.c`` bit-reverses every HDLC octet on the way in and out for this
reason, and our interop tests check the same against it.  ``from_wire``/``to_wire``
convert at the T.38 edge.

Over T.38 a frame carries no FCS: the emitting gateway checks it and reports
``hdlc-fcs-OK`` or ``hdlc-fcs-BAD`` instead (T.38 clause 7.4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from t38gw.t30.errors import RemoteProtocolError

#: bytes.translate table reversing the bit order of every octet.
REVERSE_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))

ADDRESS = 0xFF
# T.30 5.3.5: control field [1100 X000], X (here bit 5, 0x10 in LSB-first order) = 1 on
# the final frame of a sequence.
CONTROL_NON_FINAL = 0x03
CONTROL_FINAL = 0x13

# T.30 5.3.6.1: the X bit (first transmitted bit of the FCF, our LSB) tells which station
# sent the frame; receivers match on the other seven bits.
FCF_X_BIT = 0x01
#: T.30 bits 2-4 of the FCF (our bits 1-3) are 000 only for the identification group.
_GROUP_1_MASK = 0x0E


class Fcf(enum.IntEnum):
    """T.30 facsimile control fields (5.3.6.1, Table 1 area), X bit cleared.

    Values are in transmission order with bit 1 as the LSB; the T.30 notation is in the
    comment.  A few codes are shared by two signals in different directions (DIS/SPT,
    ISP/DTR); the engine tells them apart by context.
    """

    DIS = 0x80  # [0000 0001]
    CSI = 0x40  # [0000 0010]
    NSF = 0x20  # [0000 0100]
    DTC = 0x81  # [1000 0001]
    CIG = 0x41  # [1000 0010]
    NSC = 0x21  # [1000 0100]
    PWD = 0xC1  # [1000 0011]
    SEP = 0xA1  # [1000 0101]
    PSA = 0x61  # [1000 0110]
    CIA = 0xE1  # [1000 0111]
    ISP = 0x11  # [1000 1000]
    DCS = 0x82  # [X100 0001]
    TSI = 0x42  # [X100 0010]
    NSS = 0x22  # [X100 0100]
    SUB = 0xC2  # [X100 0011]
    SID = 0xA2  # [X100 0101]
    CTC = 0x12  # [X100 1000]
    TSA = 0x62  # [X100 0110]
    IRA = 0xE2  # [X100 0111]
    CFR = 0x84  # [X010 0001]
    FTT = 0x44  # [X010 0010]
    CTR = 0xC4  # [X010 0011]
    CSA = 0x24  # [X010 0100]
    EOM = 0x8E  # [X111 0001]
    MPS = 0x4E  # [X111 0010]
    EOP = 0x2E  # [X111 0100]
    PRI_EOM = 0x9E  # [X111 1001]
    PRI_MPS = 0x5E  # [X111 1010]
    PRI_EOP = 0x3E  # [X111 1100]
    EOS = 0x1E  # [X111 1000]
    PPS = 0xBE  # [X111 1101]
    EOR = 0xCE  # [X111 0011]
    RR = 0x6E  # [X111 0110]
    MCF = 0x8C  # [X011 0001]
    RTP = 0xCC  # [X011 0011]
    RTN = 0x4C  # [X011 0010]
    PIP = 0xAC  # [X011 0101]
    PIN = 0x2C  # [X011 0100]
    PPR = 0xBC  # [X011 1101]
    RNR = 0xEC  # [X011 0111]
    ERR = 0x1C  # [X011 1000]
    FDM = 0xFC  # [X011 1111]
    DCN = 0xFA  # [X101 1111]
    CRP = 0x1A  # [X101 1000]
    FNV = 0xCA  # [X101 0011]
    TNR = 0xEA  # [X101 0111]
    TR = 0x6A  # [X101 0110]
    PID = 0x6C  # [X011 0110]
    # T.4 Annex A.3.6.1: the information frames of ECM, sent on the image modem.
    FCD = 0x06  # [0110 0000]
    CCD = 0x46  # [0110 0010]
    RCP = 0x86  # [0110 0001]


#: T.30 A.4: the second FCF of PPS / EOR is a post-message command, or NULL between
#: partial pages of one page.
PPS_NULL = 0x00

#: The post-message commands (T.30 5.3.6.1.6) by FCF, as the command they stand for: PRI-Q
#: asks for operator intervention, which an unattended terminal answers as the plain Q
#: (PIP/PIN are optional).  Also the valid second FCFs of PPS/EOR besides PPS_NULL.
POST_PAGE_COMMANDS: dict[int, Fcf] = {
    Fcf.MPS: Fcf.MPS, Fcf.EOP: Fcf.EOP, Fcf.EOM: Fcf.EOM,
    Fcf.PRI_MPS: Fcf.MPS, Fcf.PRI_EOP: Fcf.EOP, Fcf.PRI_EOM: Fcf.EOM,
}


@dataclass(frozen=True, slots=True)
class T30Frame:
    """One HDLC frame of T.30 without its FCS.

    ``fcf`` has the X bit cleared (compare it with ``Fcf``); ``x_bit`` keeps it.
    ``fif`` is the facsimile information field, transmission order, bit 1 = LSB.
    """

    fcf: int
    fif: bytes = b""
    final: bool = True
    x_bit: bool = False

    @property
    def name(self) -> str:
        """The FCF's T.30 name, or its hex value if it has none."""
        try:
            return Fcf(self.fcf).name
        except ValueError:
            return f"0x{self.fcf:02X}"

    @classmethod
    def from_octets(cls, octets: bytes) -> T30Frame:
        """Parse a frame held LSB-first (T.30 order).

        Raises RemoteProtocolError if it is shorter than address+control+FCF or the
        address or control field is not the one T.30 5.3.4/5.3.5 allows.
        """
        if len(octets) < 3:
            raise RemoteProtocolError(f"HDLC frame of {len(octets)} octets is too short")
        if octets[0] != ADDRESS:
            raise RemoteProtocolError(f"HDLC address 0x{octets[0]:02X} is not 0xFF")
        if octets[1] not in (CONTROL_FINAL, CONTROL_NON_FINAL):
            raise RemoteProtocolError(f"HDLC control 0x{octets[1]:02X} is not a T.30 control field")
        raw = octets[2]
        if raw & _GROUP_1_MASK == 0:
            # T.30 5.3.6.1: the identification signals [d000 xxxx] (DIS/DTC, CSI/CIG,
            # NSF/NSC, PWD, SEP, ...) use their first bit to tell DIS from DTC: no X bit.
            fcf, x_bit = raw, False
        else:
            fcf, x_bit = raw & ~FCF_X_BIT & 0xFF, bool(raw & FCF_X_BIT)
        return cls(fcf=fcf, fif=bytes(octets[3:]), final=octets[1] == CONTROL_FINAL, x_bit=x_bit)

    @classmethod
    def from_wire(cls, wire: bytes) -> T30Frame:
        """Parse a frame as T.38 carries it (each octet MSB-first)."""
        return cls.from_octets(wire.translate(REVERSE_BITS))

    def to_octets(self) -> bytes:
        """Serialise LSB-first (T.30 order)."""
        control = CONTROL_FINAL if self.final else CONTROL_NON_FINAL
        return bytes((ADDRESS, control, self.fcf | (FCF_X_BIT if self.x_bit else 0))) + self.fif

    def to_wire(self) -> bytes:
        """Serialise as T.38 carries it (each octet MSB-first)."""
        return self.to_octets().translate(REVERSE_BITS)


# T.30 5.3.6.2.4 / Table 3: identities are up to 20 characters from digits, "+" and
# space; the FIF carries them last character first (the least significant digit is sent
# first), then the space fill (TSB-85 MRGN01 checks exactly this CSI).
IDENT_LENGTH = 20
IDENT_ALPHABET = frozenset("0123456789+ ")


def encode_ident(ident: str) -> bytes:
    """Build the 20-octet FIF of CSI/TSI/CIG (T.30 5.3.6.2.4).

    Raises LocalProtocolError-worthy ValueError for identities T.30 Table 3 cannot carry.
    """
    if len(ident) > IDENT_LENGTH:
        raise ValueError(f"identity {ident!r} is longer than {IDENT_LENGTH} characters")
    if not set(ident) <= IDENT_ALPHABET:
        raise ValueError(f"identity {ident!r} has characters outside T.30 Table 3 (digits, '+', space)")
    return ident[::-1].ljust(IDENT_LENGTH).encode("ascii")


def decode_ident(fif: bytes) -> str:
    """Read an identity FIF (CSI/TSI/SUB/PWD/SID...): reverse it and strip the padding.

    Peers put any octet here; those outside printable ASCII are kept as ``?`` so the
    value is always a safe string for logs and routing.
    """
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in reversed(fif[:IDENT_LENGTH]))
    return text.strip()
