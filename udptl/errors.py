"""The two kinds of error the udptl package raises.

Following h11: ``LocalProtocolError`` means our own code misused an API (an IFP that
cannot be encoded, a datagram that cannot fit the peer's T38FaxMaxDatagram);
``RemoteProtocolError`` means the peer sent bytes we cannot accept.  The receiver never
lets a ``RemoteProtocolError`` escape: bad datagrams and bad IFPs become counters.
"""

from __future__ import annotations


class UdptlError(Exception):
    """Base class of every error raised by the udptl package."""


class LocalProtocolError(UdptlError):
    """Our own code asked for something the protocol cannot express."""


class RemoteProtocolError(UdptlError):
    """The peer sent something we cannot accept.

    ``hint`` says what a caller should do about it (for the receiver it is always
    "count it and drop it"); ``offset`` is the byte offset where decoding stopped, when
    known.
    """

    def __init__(self, message: str, *, offset: int | None = None, hint: str = "drop the datagram and count it") -> None:
        super().__init__(message)
        self.offset = offset
        self.hint = hint


class MalformedPacket(RemoteProtocolError):
    """An IFP or UDPTL packet that is not a valid ALIGNED PER encoding (X.691)."""
