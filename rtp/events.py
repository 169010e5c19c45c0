"""RFC 4733 telephone-event payloads (DTMF and fax tones carried as named events).

RFC 4733 2.3::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Event codes 0-15 are DTMF; RFC 4734 3.2 gives the fax tones: 32 ANS (CED), 33 /ANS,
34 ANSam, 35 /ANSam, 36 CNG, 52 V.21 preamble flag.  All the packets of one event share
its start timestamp; the end packet (E bit) is sent three times (RFC 4733 2.5.1.4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rtp.errors import LocalProtocolError, RtpParseError

__all__ = ["TelephoneEvent", "build_telephone_event", "parse_telephone_event"]

_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 event report: ``volume`` is the power in -dBm0 (0-63), ``duration``
    in timestamp units since the event began."""

    event: int
    end: bool
    volume: int
    duration: int


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Parse an RFC 4733 payload (the first 4-octet report; the R bit is ignored, RFC
    4733 2.3.3).  Raises ``RtpParseError`` if it is shorter than 4 octets."""
    if len(payload) < 4:
        raise RtpParseError(f"telephone-event payload of {len(payload)} octets, need 4")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)


def build_telephone_event(event: TelephoneEvent) -> bytes:
    """The 4-octet payload of ``event``.  Raises ``LocalProtocolError`` for a field out of range."""
    if not 0 <= event.event <= 0xFF or not 0 <= event.volume <= 0x3F or not 0 <= event.duration <= 0xFFFF:
        raise LocalProtocolError(f"{event} has a field out of range")
    return _EVENT.pack(event.event, (0x80 if event.end else 0) | event.volume, event.duration)
