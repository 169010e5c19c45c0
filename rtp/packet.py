"""The RTP fixed header (RFC 3550 5.1), parsed and built.

The header, as RFC 3550 5.1 draws it::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

``parse_rtp`` keeps the CSRC list, skips a header extension (RFC 3550 5.3.1: a 16-bit
profile word, a 16-bit length in 32-bit words, then that many words) and strips padding
(the last octet counts the padding octets, itself included).  It raises only
``RtpParseError``.

RTCP may share the RTP port (RFC 5761).  RFC 5761 4 keeps RTP payload types 64-95 free
so that the second octet of an RTCP packet (packet type 192-223: SR 200, RR 201, SDES
202, BYE 203, APP 204, the feedback types 205-206...) never reads as an RTP
marker + payload type in use; ``is_rtcp`` tells them apart on that octet, and the caller
asks it before ``parse_rtp``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rtp.errors import LocalProtocolError, RtpParseError

__all__ = ["HEADER_SIZE", "RtpPacket", "build_rtp", "is_rtcp", "parse_rtp"]

HEADER_SIZE = 12
_FIXED = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet as parsed: the fixed header fields, the CSRC list and the payload
    (header extension and padding removed; ``extension`` and ``padding`` say whether the
    X and P bits were set)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    padding: bool = False
    extension: bool = False
    version: int = 2


def is_rtcp(data: bytes) -> bool:
    """True if ``data`` looks like RTCP multiplexed on the RTP port (RFC 5761 4): version 2
    and a second octet (RTCP packet type) in 192-223."""
    return len(data) >= 2 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet.  Raises ``RtpParseError`` (with a reason) for anything that is
    not a version 2 packet whose CSRC list, extension and padding fit in ``data``."""
    size = len(data)
    if size < HEADER_SIZE:
        raise RtpParseError(f"{size} octets: shorter than the 12-octet fixed header")
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    if first >> 6 != 2:
        raise RtpParseError(f"version {first >> 6}, not 2")
    offset = HEADER_SIZE + 4 * (first & 0x0F)
    if offset > size:
        raise RtpParseError(f"CSRC count {first & 0x0F} runs past the end of {size} octets")
    csrcs = struct.unpack_from(f"!{first & 0x0F}I", data, HEADER_SIZE) if first & 0x0F else ()
    extension = bool(first & 0x10)
    if extension:
        # RFC 3550 5.3.1: profile-defined 16 bits, then the length in 32-bit words
        # (excluding this 4-octet extension header).
        if offset + 4 > size:
            raise RtpParseError("header extension header runs past the end")
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        if offset > size:
            raise RtpParseError("header extension runs past the end")
    end = size
    padding = bool(first & 0x20)
    if padding:
        # RFC 3550 5.1: the last octet counts the padding octets, itself included.
        count = data[-1]
        if count == 0 or count > size - offset:
            raise RtpParseError(f"padding count {count} is not within 1-{size - offset}")
        end -= count
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=csrcs,
        padding=padding,
        extension=extension,
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """Build one RTP packet (version 2).  ``extension`` is ``(profile, data)`` with ``data``
    a multiple of 4 octets (RFC 3550 5.3.1); ``padding`` the number of padding octets
    (0, or 1-255 including the count octet).  Raises ``LocalProtocolError`` for a field
    out of range."""
    if not 0 <= payload_type <= 0x7F:
        raise LocalProtocolError(f"payload type {payload_type} is not within 0-127")
    if not 0 <= sequence <= 0xFFFF:
        raise LocalProtocolError(f"sequence number {sequence} is not within 0-65535")
    if not 0 <= timestamp <= 0xFFFFFFFF or not 0 <= ssrc <= 0xFFFFFFFF:
        raise LocalProtocolError("timestamp and SSRC are 32-bit unsigned")
    if len(csrcs) > 15 or any(not 0 <= csrc <= 0xFFFFFFFF for csrc in csrcs):
        raise LocalProtocolError("at most 15 CSRCs, each 32-bit unsigned")
    if not 0 <= padding <= 0xFF:
        raise LocalProtocolError(f"padding {padding} is not within 0-255")
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    parts = [_FIXED.pack(first, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)]
    if csrcs:
        parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
    if extension is not None:
        profile, data = extension
        if not 0 <= profile <= 0xFFFF or len(data) % 4 or len(data) // 4 > 0xFFFF:
            raise LocalProtocolError("extension profile is 16 bits and its data whole 32-bit words")
        parts += [struct.pack("!HH", profile, len(data) // 4), data]
    parts.append(payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)
