"""The sending side of one RTP stream (RFC 3550 5.1), sans-IO: payloads in, packets out."""

from __future__ import annotations

import random

from rtp.errors import LocalProtocolError
from rtp.packet import build_rtp

__all__ = ["RtpSender"]


class RtpSender:
    """Numbers the packets of one RTP stream.

    Each ``packet()`` takes the next sequence number (mod 2**16) and advances the timestamp
    by the samples the payload holds: for G.711 (PCMU 0, PCMA 8; RFC 3551 4.5.14) one
    octet is one sample.  RFC 3550 5.1 wants the initial sequence number, timestamp and
    SSRC random; ``RtpSender.random`` draws them from the caller's ``random.Random``
    (STYLE.md 4: a failing test replays).  Raises ``LocalProtocolError`` for a field out of range.
    """

    def __init__(self, payload_type: int, ssrc: int, *, sequence: int, timestamp: int, samples_per_octet: int = 1) -> None:
        if not 0 <= payload_type <= 0x7F or not 0 <= ssrc <= 0xFFFFFFFF:
            raise LocalProtocolError("payload type is 0-127 and SSRC 32-bit unsigned")
        if not 0 <= sequence <= 0xFFFF or not 0 <= timestamp <= 0xFFFFFFFF or samples_per_octet < 1:
            raise LocalProtocolError("sequence is 16-bit, timestamp 32-bit, samples_per_octet >= 1")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.sequence = sequence  # of the next packet
        self.timestamp = timestamp  # of the next packet
        self.samples_per_octet = samples_per_octet
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, as an RTCP sender report counts them (RFC 3550 6.4.1)

    @classmethod
    def random(cls, payload_type: int, rng: random.Random) -> RtpSender:
        """A sender with random SSRC, initial sequence number and timestamp (RFC 3550 5.1)."""
        ssrc = rng.getrandbits(32)
        return cls(payload_type, ssrc, sequence=rng.getrandbits(16), timestamp=rng.getrandbits(32))

    def packet(self, payload: bytes, *, marker: bool = False) -> bytes:
        """The next packet, carrying ``payload``; advances sequence and timestamp."""
        data = build_rtp(self.payload_type, self.sequence, self.timestamp, self.ssrc, payload, marker=marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload) * self.samples_per_octet) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data

    def skip(self, samples: int) -> None:
        """Advance the timestamp over ``samples`` not sent (silence suppression, RFC 3551 4.1)."""
        if samples < 0:
            raise LocalProtocolError("cannot skip a negative number of samples")
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
