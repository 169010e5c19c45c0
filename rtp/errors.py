"""The two kinds of error the rtp package raises.

Following h11 (STYLE.md 6): ``LocalProtocolError`` means our own code misused an API (a
payload type outside 0-127, a sequence number outside 16 bits); ``RtpParseError`` means
the peer sent bytes that are not an RTP packet.  The jitter buffer never raises for what
the peer sends: strays, duplicates and late packets are counters.
"""

from __future__ import annotations


class RtpError(Exception):
    """Base class of every error raised by the rtp package."""


class LocalProtocolError(RtpError, ValueError):
    """Our own code asked for something RTP cannot express."""


class RtpParseError(RtpError, ValueError):
    """Bytes that are not a valid RTP packet (RFC 3550 5.1); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
