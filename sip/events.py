"""What the UA tells the TU (the gateway service): frozen dataclasses named in the past
tense (STYLE.md 7), returned by ``UserAgent.events()``. See ``sip.ua`` for when each comes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sip.address import Address
from sip.call import Call


@dataclass(frozen=True)
class InviteReceived:
    """A new INVITE passed the source check: answer, reject or ring ``call``."""

    call: Call
    offer: bytes
    from_: str
    to: str
    request_uri: str
    source: Address
    transport: str


@dataclass(frozen=True)
class CallEstablished:
    call: Call


@dataclass(frozen=True)
class CallProgressed:
    call: Call
    status: int
    reason: str
    sdp: bytes = b""  # early-media SDP of a 183 (informational; no early dialog is kept)


@dataclass(frozen=True)
class CallAnswered:
    call: Call
    answer: bytes


@dataclass(frozen=True)
class MediaChanged:
    call: Call
    remote_sdp: bytes
    needs_answer: bool


@dataclass(frozen=True)
class SessionRefreshed:
    call: Call


@dataclass(frozen=True)
class ReinviteFailed:
    call: Call
    status: int
    reason: str




@dataclass(frozen=True)
class CallTerminated:
    """The call is over (BYE either way, CANCEL, rejection, timeout, session expiry, no
    ACK). Named for RFC 3261's "terminate a session"; not a dialog event, since a call
    rejected or cancelled before its 2xx never had a dialog."""

    call: Call
    reason: str
    status: int | None = None


@dataclass(frozen=True)
class RegistrationSucceeded:
    trunk: str
    expires: int


@dataclass(frozen=True)
class RegistrationFailed:
    trunk: str
    status: int | None
    reason: str
    retry_in: float


REFUSAL_REASONS = (
    "not_allowed",  # 403: INVITE from outside allow_from and no auth_users configured
    "auth_required",  # 401: INVITE from outside allow_from without (or with stale) credentials: challenged
    "auth_failed",  # 403: credentials present but wrong (unknown user, bad response, replayed nc ...)
    "rate_limited",  # dropped unanswered: the source's or the global token bucket was empty
    "connection_limit",  # TCP/TLS connection closed at once: per-source or global connection cap
    "stream_timeout",  # TCP/TLS connection closed: no TLS handshake / no complete message in time
)


@dataclass(frozen=True)
class RequestRefused:
    """A request (or a TCP/TLS connection) the UA turned away by itself.

    ``source``: where it came from; ``method``: the SIP method ("" when it was dropped
    before being parsed, or for a connection); ``status``: the response we sent (401,
    403), None when nothing was sent; ``reason``: one of :data:`REFUSAL_REASONS`.

    Rate-limited so that a flood cannot flood the log: at most one event per (source
    host, reason) per ``UAConfig.refused_event_interval`` and a global cap.  Each event
    stands for ``1 + suppressed`` refusals: itself and ``suppressed`` earlier refusals
    with the same ``reason`` (from any source) that were not reported.  Refusals still
    unreported are flushed by a timer within about one interval, so summing
    ``1 + suppressed`` over the events gives the exact count (the metric
    ``t38gw_sip_refused_total{reason}``).
    """

    source: Address
    method: str
    status: int | None
    reason: str
    suppressed: int = 0


Event = (
    InviteReceived | CallEstablished | CallProgressed | CallAnswered | MediaChanged | SessionRefreshed
    | ReinviteFailed | CallTerminated | RegistrationSucceeded | RegistrationFailed | RequestRefused
)
