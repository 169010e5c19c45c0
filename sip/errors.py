"""Errors raised by the SIP core.

Following h11: ``LocalProtocolError`` means our own code misused the API (a bug here);
``RemoteProtocolError`` means the peer sent something we cannot accept, and carries the SIP
status we should answer it with (when it is a request we can still answer).
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every error the ``sip`` package raises on purpose."""


class LocalProtocolError(SipError):
    """Our own code asked for something impossible (e.g. a CR/LF inside a header value)."""


class RemoteProtocolError(SipError):
    """The peer sent something bad. ``status_hint`` is the SIP status to answer with."""

    def __init__(self, msg: str, status_hint: int = 400) -> None:
        super().__init__(msg)
        self.status_hint = status_hint


class SipParseError(RemoteProtocolError):
    """Bytes that are not a well-formed SIP message, header value, URI, SDP or challenge.

    ``partial`` is set when framing and the header section were understood but a header
    value was not (e.g. a duplicate CSeq): the caller may still answer it with
    ``status_hint`` (RFC 3261 8.2: a UAS answers a malformed request with 400 when it can).
    """

    def __init__(self, msg: str, status_hint: int = 400, partial: object | None = None) -> None:
        super().__init__(msg, status_hint)
        self.partial = partial
