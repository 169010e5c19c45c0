"""The SIP user agent core: calls, re-INVITEs, CANCEL, BYE, OPTIONS, session timers,
registration and digest auth on top of ``sip.transaction`` and ``sip.dialog``. Sans-IO.

Driving it (the trio edge in ``sip.transport`` does exactly this)
-----------------------------------------------------------------
::

    ua = UserAgent(UAConfig(...), rng=random.Random())
    ua.receive(datagram, Address("udp", host, port), now)   # or receive_message(msg, ...)
    for out in ua.messages_to_send(): send out.data to out.destination
    for event in ua.events(): hand to the TU (the gateway service)
    sleep until ua.next_deadline(), then ua.handle_timer(now)

``Address(transport, host, port, connection)`` names a peer; for TCP/TLS
``connection`` identifies the stream a request arrived on, so its responses go back over
it (RFC 3261 18.2.2).  If a message cannot be delivered, the edge calls
``ua.send_failed(outgoing, now)`` and the owning transaction reports a transport error.

Upward interface (for the gateway service, issue #6)
----------------------------------------------------
Events (frozen dataclasses, from ``events()``):

- :class:`IncomingCall` ``(call, offer, from_, to, request_uri, source, transport)`` - a
  new INVITE passed the source check.  Answer with ``answer(call, sdp, now)``, refuse
  with ``reject(call, status, now)``, or ``ring(call, now)`` first.  An empty ``offer``
  is a delayed offer: ``answer`` then carries *our* offer and the peer's answer arrives
  as ``MediaChanged(needs_answer=False)`` from the ACK.  A call left unanswered gets 480
  after ``UAConfig.offer_timeout`` (or the INVITE's Expires).
- :class:`CallEstablished` ``(call)`` - the ACK for our 2xx arrived (inbound calls).
- :class:`CallProgressed` ``(call, status, reason, sdp)`` / :class:`CallAnswered`
  ``(call, answer)`` - an outbound call rings / was answered (the ACK is already sent).
- :class:`MediaChanged` ``(call, remote_sdp, needs_answer)`` - the peer's session
  description changed: ``needs_answer=True`` for a peer's re-INVITE offer (answer it with
  ``answer(call, sdp, now)`` or refuse it with ``reject(call, 488, now)``); ``False``
  when it is the answer to our own ``reinvite``.
- :class:`SessionRefreshed` ``(call)`` - a re-INVITE/UPDATE repeated the session we
  already have (RFC 4028 refresh, or an unchanged SDP per RFC 3264 8: same ``o=``
  version): it was answered here with our current SDP and the media must not be touched.
- :class:`ReinviteFailed` ``(call, status, reason)`` - our re-INVITE got a final non-2xx
  (e.g. 488 for T.38); the previous media stays in force.  After a glare (491) the UA
  retries by itself after the RFC 3261 14.1 delay, unless the TU meanwhile accepted the
  peer's own re-INVITE: then ours is dropped with ``ReinviteFailed(call, 491, ...)``.
- :class:`CallEnded` ``(call, reason, status)`` - the call is over (BYE either way,
  CANCEL, rejection, timeout, session expiry, no ACK).
- :class:`RegistrationSucceeded` ``(trunk, expires)`` / :class:`RegistrationFailed`
  ``(trunk, status, reason, retry_in)``.
- :class:`RequestRefused` ``(source, method, status, reason, suppressed)`` - the UA (or
  the transport edge, through :meth:`UserAgent.report_refused`) turned a request or a
  connection away by itself: ``reason`` is one of :data:`REFUSAL_REASONS`.  These events
  are rate-limited so that a flood cannot flood the log: see :class:`RequestRefused`.

Commands (methods of :class:`UserAgent`, each taking ``now``): ``answer``, ``ring``,
``reject``, ``reinvite``, ``hangup``, ``invite(uri, sdp, ...)`` (returns the
:class:`Call`), ``register(trunk)``, ``unregister(name)``, ``options(uri)``.  Calling a command in a state
where it makes no sense raises :class:`LocalProtocolError`.

The UA carries SDP bodies as bytes and never decides T.38 parameters (``sip.sdp`` does).

Hostile input: unparseable datagrams get a 400 (or the parser's status hint) when the
request line and the headers needed to answer were understood, and are dropped
otherwise; a token bucket per source address plus one global bucket shared by all of
them (``sip.ratelimit``) drop floods from sources outside ``allow_from``, spoofed or not
(trusted trunks are never throttled: a dropped INVITE from the carrier is a lost fax);
nothing a peer sends raises out of ``receive``.  Counters are in ``ua.stats``; every
refusal is also reported as a (rate-limited) :class:`RequestRefused` event.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Hashable

from sip.dialog import Dialog, contact_uri
from sip.errors import LocalProtocolError, RemoteProtocolError, SipParseError
from sip.message import Headers, Request, Response, make_response, parse_name_addr
from sip.parser import parse_message
from sip.ratelimit import RateLimiter
from sip.timers import TimerTable
from sip.registration import Registration, Trunk
from sip.transaction import (
    AckReceived,
    ResponseReceived,
    SendMessage,
    State,
    TimerSettings,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from sip.uri import SipUri, parse_uri

_REFUSALS_TIMER = ("refusals", "flush")
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE")
SUPPORTED_OPTIONS = ("timer",)


# ----------------------------------------------------------------------------- plumbing


@dataclass(frozen=True)
class Address:
    """Where a message came from or goes to. ``connection`` names a TCP/TLS stream."""

    transport: str
    host: str
    port: int
    connection: Hashable | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True)
class Outgoing:
    """A message to send.  ``transaction`` (opaque) is given back in ``send_failed``."""

    destination: Address
    message: Any
    data: bytes
    transaction: Any = None


@dataclass
class UAConfig:
    """What the UA needs to know about itself.

    ``listen`` maps a transport ("udp", "tcp", "tls") to the (host, port) we are reachable
    at; ``public_host`` replaces the host in Via/Contact when behind NAT.  ``allow_from``
    lists the networks whose INVITEs are accepted without authentication; others are
    challenged when ``auth_users`` is set, refused with 403 otherwise.
    """

    listen: dict[str, tuple[str, int]] = field(default_factory=lambda: {"udp": ("127.0.0.1", 5060)})
    public_host: str = ""
    user: str = "t38gw"
    user_agent: str = "t38gw"
    allow_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    auth_realm: str = "t38gw"
    auth_users: dict[str, str] = field(default_factory=dict)
    # Challenges, most preferred first (RFC 8760 2.4: one WWW-Authenticate per algorithm).
    # A client must use the topmost it supports (2.5), but some (SIPp 3.6) read only the
    # first header and know only MD5: ("MD5",) serves those.
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    session_expires: int = 1800  # RFC 4028: what we ask for on outbound INVITEs (0 = none)
    min_se: int = 90  # RFC 4028 5: the smallest interval we accept
    timers: TimerSettings = TimerSettings()
    offer_timeout: float = 180.0  # an inbound INVITE the TU leaves unanswered gets 480 after this
    rate: float = 100.0  # messages per second per source address outside allow_from
    burst: float = 200.0
    # All sources outside allow_from together (spoofed UDP sources each get a fresh
    # per-source bucket; this one they share).
    global_rate: float = 500.0
    global_burst: float = 1000.0
    # RequestRefused events: at most one per (source host, reason) per this many seconds,
    # and at most refused_events_burst at once / refused_events_rate per second overall.
    refused_event_interval: float = 1.0
    refused_events_rate: float = 10.0
    refused_events_burst: float = 20.0


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class IncomingCall:
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
class CallEnded:
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


# ----------------------------------------------------------------------------- calls


class CallState(enum.Enum):
    OFFERED = "offered"  # inbound INVITE, not answered yet
    CALLING = "calling"  # outbound INVITE, no final response yet
    ANSWERED = "answered"  # inbound: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(eq=False)
class Call:
    """One call (one INVITE dialog).  The TU holds it as an opaque handle; ``id`` is unique."""

    id: str
    direction: str  # "inbound" | "outbound"
    state: CallState
    call_id: str
    invite: Any
    invite_tx: Transaction | None
    peer: Address
    local_tag: str
    dialog: Dialog | None = None
    local_sdp: bytes | None = None
    remote_sdp: bytes | None = None
    # a peer's re-INVITE waiting for the TU: (request, server transaction)
    pending_reinvite: tuple[Any, Transaction] | None = None
    # our re-INVITE in flight: (client transaction, offered sdp)
    out_reinvite: tuple[Transaction, bytes] | None = None
    glare_retry_sdp: bytes | None = None
    # UAS 2xx retransmission (RFC 3261 13.3.1.4): (server tx, response, interval)
    unacked: tuple[Transaction, Any, float] | None = None
    bye_after_ack: bool = False
    ack: Any = None  # UAC: the ACK we sent for the 2xx, resent on 2xx retransmissions
    session_interval: int | None = None
    we_refresh: bool = False
    peer_allows_update: bool = False
    provisional_seen: bool = False
    cancel_requested: bool = False
    cancel_sent: bool = False
    credentials: tuple[str, str] | None = None
    auth_tries: int = 0
    end_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.direction} {self.state.value}>"


# ----------------------------------------------------------------------------- helpers


def session_unchanged(old: bytes | None, new: bytes | None) -> bool:
    """RFC 3264 8: an offer whose ``o=`` line (hence version) is unchanged changes nothing.

    Also treats a byte-identical body (ignoring the ``o=`` line, since some peers bump
    the version on every refresh) as unchanged.
    """
    if old is None or new is None:
        return old == new
    old_lines = old.replace(b"\r\n", b"\n").split(b"\n")
    new_lines = new.replace(b"\r\n", b"\n").split(b"\n")
    old_origin = [line for line in old_lines if line.startswith(b"o=")]
    new_origin = [line for line in new_lines if line.startswith(b"o=")]
    if old_origin and old_origin == new_origin:
        return True
    def strip(lines: list[bytes]) -> list[bytes]:
        return [line.rstrip() for line in lines if not line.startswith(b"o=") and line.strip()]

    return strip(old_lines) == strip(new_lines)


def parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``Session-Expires: 1800;refresher=uac`` -> (1800, "uac") (RFC 4028 4)."""
    if not value:
        return None
    delta, _, params = value.partition(";")
    delta = delta.strip()
    if not delta.isdigit():
        raise SipParseError(f"bad Session-Expires {value!r}")
    refresher = None
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower() or None
            if refresher not in ("uac", "uas"):
                raise SipParseError(f"bad refresher in Session-Expires {value!r}")
    return int(delta), refresher


def option_tags(message: Any, name: str) -> set[str]:
    return {tag.strip().lower() for tag in message.headers.get_all(name) if tag.strip()}


def _tokens(message: Any, name: str) -> set[str]:
    return {tok.strip().upper() for tok in message.headers.get_all(name) if tok.strip()}


def _peek_method(data: bytes) -> str:
    """The method of a request's bytes without parsing them ("" for a response or junk)."""
    token = data[:16].split(b" ", 1)[0]
    if len(token) < 16 and token.isalpha() and token.isupper():
        return token.decode("ascii")
    return ""


def _salvage_answerable(data: bytes) -> list[tuple[str, str]] | None:
    """From bytes that failed to parse, the headers a 400 must copy, when they are there.

    Only requests other than ACK are answered (RFC 3261 8.2: never answer ACK or a
    response).  Returns None when the message cannot be answered.
    """
    head = data.split(b"\r\n\r\n", 1)[0][:8192]
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        return None
    start = lines[0].split(" ")
    if len(start) != 3 or start[2] != "SIP/2.0" or start[0] in ("ACK", "") or start[0].startswith("SIP/"):
        return None
    wanted = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
              "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        canonical = wanted.get(name.strip().lower())
        if colon and canonical and value.strip() and "\r" not in value and "\n" not in value:
            found.append((canonical, value.strip()))
    if {name for name, _ in found} != {"Via", "From", "To", "Call-ID", "CSeq"}:
        return None
    return found


# ----------------------------------------------------------------------------- the UA


class UserAgent:
    """The sans-IO user agent.  See the module docstring for the interface."""

    def __init__(self, config: UAConfig | None = None, *, rng: random.Random | None = None) -> None:
        self.config = config or UAConfig()
        self.rng = rng or random.Random()
        self.transactions = TransactionLayer(self.config.timers)
        self.limiter = RateLimiter(
            self.config.rate, self.config.burst,
            global_rate=self.config.global_rate, global_burst=self.config.global_burst,
        )
        # Throttle for the RequestRefused events themselves: per (source host, reason),
        # and all together.
        if self.config.refused_event_interval <= 0:
            raise ValueError("refused_event_interval must be > 0")
        self._refusal_events = RateLimiter(
            1.0 / self.config.refused_event_interval, 1.0, 4096,
            global_rate=self.config.refused_events_rate, global_burst=self.config.refused_events_burst,
        )
        # reason -> [suppressed count, the last suppressed (source, method, status)]
        self._refusals_pending: dict[str, list] = {}
        self.stats: Counter[str] = Counter()
        self.calls: dict[str, Call] = {}
        self._by_dialog: dict[tuple[str, str, str], Call] = {}
        self.registrations: dict[str, Registration] = {}
        self._allow_nets = [ipaddress.ip_network(net, strict=False) for net in self.config.allow_from]
        self._allowed_cache: dict[str, bool] = {}
        self._outgoing: list[Outgoing] = []
        self._events: list = []
        self._timers = TimerTable()  # (owner id, timer name) -> deadline
        self._owners: dict[Transaction, tuple[str, Any]] = {}
        self._auth_server = None
        if self.config.auth_users:
            from sip.auth import DigestServer

            self._auth_server = DigestServer(
                self.config.auth_realm, dict(self.config.auth_users), rng=self.rng,
                algorithms=self.config.auth_algorithms,
            )

    # -- output ---------------------------------------------------------------

    def messages_to_send(self) -> list[Outgoing]:
        """Messages produced since the last call, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> list:
        """Events for the TU produced since the last call, in order."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called (None: only on input)."""
        candidates = [d for d in (self._timers.next_deadline(), self.transactions.next_deadline()) if d is not None]
        return min(candidates) if candidates else None

    def handle_timer(self, now: float) -> None:
        """Fire everything due at ``now``.  Calling it early or twice does nothing."""
        self._process(self.transactions.handle_timer(now), now)
        while (key := self._timers.pop_due(now)) is not None:
            self._fire(key, now)
        self.transactions.collect()

    def send_failed(self, outgoing: Outgoing, now: float) -> None:
        """The edge could not deliver ``outgoing`` (RFC 3261 17.1.4, 17.2.4)."""
        tx = outgoing.transaction
        if isinstance(tx, Transaction):
            self._process(tx.transport_failed(now), now)
            self.transactions.collect()

    # -- input ----------------------------------------------------------------

    def set_listen(self, transport: str, host: str, port: int) -> None:
        """Record the address a transport is bound to (the edge calls it after binding)."""
        self.config.listen[transport] = (host, port)

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """Feed one datagram (or one framed stream message's bytes)."""
        if not self._source_allowed(source) and not self.limiter.allow(source.host, now):
            self.stats["rate_limited"] += 1
            self.report_refused(source, _peek_method(data), None, "rate_limited", now)
            return
        if not data.strip(b"\r\n"):
            self.stats["keepalives"] += 1  # RFC 5626 3.5.1 CRLF keep-alive
            return
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.stats["parse_errors"] += 1
            self._answer_unparseable(data, exc, source)
            return
        self._receive(message, source, now, rate_checked=True)

    def receive_message(self, message: Any, source: Address, now: float) -> None:
        """Feed a message a stream parser already framed."""
        self._receive(message, source, now, rate_checked=False)

    def source_trusted(self, host: str) -> bool:
        """Whether ``host`` is inside ``allow_from`` (never throttled, never challenged)."""
        return self._source_allowed(Address("", host, 0))

    def connection_in_use(self, connection: Hashable) -> bool:
        """Whether a call that is not over came in or went out over stream ``connection``
        (the edge keeps such a connection open however long it is silent)."""
        return any(call.peer.connection == connection and call.state is not CallState.ENDED
                   for call in self.calls.values())

    def report_refused(self, source: Address, method: str, status: int | None, reason: str, now: float) -> None:
        """Count a refusal and report it as a :class:`RequestRefused`, unless throttled.

        The UA calls it for what it refuses itself; the transport edge calls it for the
        connections it closes (``connection_limit``, ``stream_timeout``).  ``stats`` gets
        ``refused_<reason>`` for every refusal, reported or not.
        """
        if reason not in REFUSAL_REASONS:
            raise LocalProtocolError(f"unknown refusal reason {reason!r}")
        self.stats[f"refused_{reason}"] += 1
        pending = self._refusals_pending.get(reason)
        if self._refusal_events.allow((source.host, reason), now):
            self._refusals_pending.pop(reason, None)
            self._events.append(RequestRefused(source, method, status, reason, pending[0] if pending else 0))
            return
        if pending is None:
            self._refusals_pending[reason] = [1, (source, method, status)]
        else:
            pending[0] += 1
            pending[1] = (source, method, status)
        if _REFUSALS_TIMER not in self._timers:
            self._timers[_REFUSALS_TIMER] = now + self.config.refused_event_interval

    def _flush_refusals(self) -> None:
        # One event per reason for the refusals the throttle held back: it stands for the
        # last of them and carries the others in ``suppressed``.
        pending, self._refusals_pending = self._refusals_pending, {}
        for reason, (count, (source, method, status)) in pending.items():
            self._events.append(RequestRefused(source, method, status, reason, count - 1))

    def stream_error(self, error: SipParseError, partial: Any, source: Address) -> None:
        """A stream parser gave up: answer what can be answered (the edge then closes)."""
        self.stats["parse_errors"] += 1
        self._answer_partial(partial, error, source)

    def _receive(self, message: Any, source: Address, now: float, *, rate_checked: bool) -> None:
        if not rate_checked and not self._source_allowed(source) and not self.limiter.allow(source.host, now):
            self.stats["rate_limited"] += 1
            method = message.method if isinstance(message, Request) else ""
            self.report_refused(source, method, None, "rate_limited", now)
            return
        try:
            for name, value in message.headers:
                # A bare CR/LF/NUL inside a value would be copied into our own requests
                # (Call-ID, From, To); RFC 3261 25.1 allows none of them there.
                if "\r" in value or "\n" in value or "\x00" in value:
                    raise SipParseError(f"control character in {name}")
            if isinstance(message, Request):
                self._on_request(message, source, now)
            else:
                self._on_response(message, now)
        except SipParseError as exc:
            # A header the core needed turned out malformed (values parse lazily).
            self.stats["parse_errors"] += 1
            if isinstance(message, Request):
                self._answer_partial(message, exc, source)
        except RemoteProtocolError as exc:
            self.stats["protocol_errors"] += 1
            if isinstance(message, Request):
                self._answer_partial(message, exc, source)
        self.transactions.collect()

    def _answer_partial(self, message: Any, error: RemoteProtocolError, source: Address) -> None:
        if not isinstance(message, Request) or message.method == "ACK":
            return
        try:
            response = make_response(message, error.status_hint if 400 <= error.status_hint < 700 else 400)
            response.reason = _short_reason(response.reason, error)
            if any("\r" in value or "\n" in value for _, value in response.headers):
                self.stats["dropped"] += 1  # the headers a response must echo are unusable
                return
            self._queue(response, self._reply_address(message, source))
        except (SipParseError, LocalProtocolError):
            pass

    def _answer_unparseable(self, data: bytes, error: SipParseError, source: Address) -> None:
        if error.partial is not None and isinstance(error.partial, Request):
            self._answer_partial(error.partial, error, source)
            return
        headers = _salvage_answerable(data)
        if headers is None:
            self.stats["dropped"] += 1
            return
        status = error.status_hint if 400 <= error.status_hint < 700 else 400
        try:
            response = Response(status, None, Headers(headers))
            response.reason = _short_reason(response.reason, error)
        except LocalProtocolError:
            self.stats["dropped"] += 1
            return
        # The Via could not be trusted: answer where the bytes came from.
        self._queue(response, source)

    # -- requests -------------------------------------------------------------

    def _on_request(self, request: Any, source: Address, now: float) -> None:
        self._stamp_via(request, source)
        tx = self.transactions.match_request(request)
        if tx is not None:
            self._process(tx.receive_request(request, now), now)
            return
        if request.method == "ACK":
            self._on_ack(request, now)
            return
        reply_to = self._reply_address(request, source)
        tx = self.transactions.create_server(request, reply_to, reliable=source.reliable)
        try:
            self._on_new_request(request, tx, source, now)
        except RemoteProtocolError as exc:
            # A header needed on the way turned out malformed (values parse lazily):
            # answer through the transaction so it completes and is forgotten.
            self.stats["protocol_errors"] += 1
            if tx.final_response is not None:
                return
            status = exc.status_hint if 400 <= exc.status_hint < 700 else 400
            try:
                self._respond(tx, request, status, now, reason=_short_reason(None, exc))
            except (SipParseError, LocalProtocolError):
                self.transactions.discard(tx)

    def _on_new_request(self, request: Any, tx: Transaction, source: Address, now: float) -> None:
        method = request.method

        def reply(status: int, extra: list[tuple[str, str]] = ()) -> None:
            self._respond(tx, request, status, now, extra=extra)

        if not isinstance(request.uri, SipUri) and request.uri.scheme.lower() != "tel":
            reply(416)
            return
        if method not in ALLOWED_METHODS:
            reply(405, [("Allow", ", ".join(ALLOWED_METHODS))])
            return
        if method != "CANCEL":
            unsupported = option_tags(request, "Require") - set(SUPPORTED_OPTIONS)
            if unsupported:
                # RFC 3261 8.2.2.3
                reply(420, [("Unsupported", ", ".join(sorted(unsupported)))])
                return
        if method == "CANCEL":
            self._on_cancel(request, tx, now)
            return
        if request.to.tag is not None:
            self._on_in_dialog(request, tx, source, now)
            return
        if method == "INVITE":
            self._on_new_invite(request, tx, source, now)
        elif method == "OPTIONS":
            self._answer_options(request, tx, now)
        else:
            # BYE/UPDATE outside a dialog (RFC 3261 12.2.2 / 15.1.2).
            reply(481)

    def _answer_options(self, request: Any, tx: Transaction, now: float) -> None:
        # RFC 3261 11.2: Allow, Accept, Supported (and Accept-Encoding/Language).
        self._respond(
            tx,
            request,
            200,
            now,
            extra=[
                ("Allow", ", ".join(ALLOWED_METHODS)),
                ("Accept", "application/sdp"),
                ("Accept-Encoding", "identity"),
                ("Accept-Language", "en"),
                ("Supported", ", ".join(SUPPORTED_OPTIONS)),
            ],
            to_tag=self._new_tag() if request.to.tag is None else None,
        )

    def _source_allowed(self, source: Address) -> bool:
        """Whether ``source`` is inside ``allow_from`` (cached: asked for every message)."""
        verdict = self._allowed_cache.get(source.host)
        if verdict is None:
            try:
                address = ipaddress.ip_address(source.host)
                verdict = any(address in net for net in self._allow_nets)
            except ValueError:
                verdict = False
            if len(self._allowed_cache) >= 4096:
                self._allowed_cache.clear()
            self._allowed_cache[source.host] = verdict
        return verdict

    def _on_new_invite(self, request: Any, tx: Transaction, source: Address, now: float) -> None:
        if not self._source_allowed(source):
            if self._auth_server is None:
                self.stats["refused_source"] += 1
                self._respond(tx, request, 403, now)
                self.report_refused(source, request.method, 403, "not_allowed", now)
                return
            if not self._check_auth(request, tx, source, now):
                return
        if request.body and request.content_type not in (None, "application/sdp"):
            self._respond(tx, request, 415, now, extra=[("Accept", "application/sdp")])
            return
        try:
            timer = self._uas_session_timer(request)
        except _TooSmall:
            self._respond(tx, request, 422, now, extra=[("Min-SE", str(self.config.min_se))])
            return
        if contact_uri(request) is None:
            self._respond(tx, request, 400, now, reason="Missing Contact")
            return
        local_tag = self._new_tag()
        call = Call(
            id=f"{request.call_id}/{local_tag}",
            direction="inbound",
            state=CallState.OFFERED,
            call_id=request.call_id,
            invite=request,
            invite_tx=tx,
            peer=source,
            local_tag=local_tag,
            remote_sdp=request.body or None,
            peer_allows_update="UPDATE" in _tokens(request, "Allow"),
        )
        call.session_interval, call.we_refresh = timer
        self.calls[call.id] = call
        self._owners[tx] = ("invite-in", call)
        self._respond(tx, request, 100, now)
        # RFC 3261 13.3.1.1: an INVITE's Expires bounds how long it may stay unanswered;
        # our own bound keeps a TU that never answers from leaking the transaction.
        offer_for = self.config.offer_timeout
        if request.expires is not None:
            offer_for = min(offer_for, request.expires)
        self._timers[(call.id, "offer")] = now + offer_for
        self._events.append(
            IncomingCall(
                call=call,
                offer=request.body,
                from_=request.headers.get("From"),
                to=request.headers.get("To"),
                request_uri=str(request.uri),
                source=source,
                transport=source.transport,
            )
        )

    def _check_auth(self, request: Any, tx: Transaction, source: Address, now: float) -> bool:
        """Digest-check an INVITE from outside allow_from (RFC 3261 22.1, RFC 7616).

        No credentials: 401 with a challenge per algorithm (RFC 8760 2.4).  A stale
        nonce: 401 with ``stale=true``.  Wrong credentials: 403, never a call.
        """
        from sip.auth import AuthOutcome

        server = self._auth_server
        value = request.headers.get("Authorization")
        if value is None:
            self.stats["auth_challenges"] += 1
            self._respond(tx, request, 401, now, extra=[("WWW-Authenticate", c) for c in server.challenges(now)])
            self.report_refused(source, request.method, 401, "auth_required", now)
            return False
        verdict = server.verify(value, request.method, now, request_uri=str(request.uri), body=request.body)
        if verdict.outcome is AuthOutcome.ACCEPTED:
            return True
        if verdict.outcome is AuthOutcome.STALE:
            # RFC 7616 3.3: the credentials were right, the nonce too old: challenge again.
            self.stats["auth_challenges"] += 1
            self._respond(tx, request, 401, now, extra=[("WWW-Authenticate", c) for c in server.challenges(now, stale=True)])
            self.report_refused(source, request.method, 401, "auth_required", now)
            return False
        self.stats["auth_failures"] += 1
        self._respond(tx, request, 403, now)
        self.report_refused(source, request.method, 403, "auth_failed", now)
        return False

    def _uas_session_timer(self, request: Any) -> tuple[int | None, bool]:
        """RFC 4028 9: the interval and whether we (the UAS of ``request``) refresh."""
        se = parse_session_expires(request.headers.get("Session-Expires"))
        if se is None:
            return None, False
        interval, refresher = se
        if interval < self.config.min_se:
            raise _TooSmall()
        if refresher is None:
            refresher = "uac" if "timer" in option_tags(request, "Supported") else "uas"
        return interval, refresher == "uas"

    def _session_headers_as_uas(self, call: Call, request: Any) -> list[tuple[str, str]]:
        if call.session_interval is None:
            return []
        refresher = "uas" if call.we_refresh else "uac"
        headers = [("Session-Expires", f"{call.session_interval};refresher={refresher}")]
        if refresher == "uac":
            headers.append(("Require", "timer"))  # RFC 4028 9: the UAC must refresh
        return headers

    def _on_cancel(self, request: Any, tx: Transaction, now: float) -> None:
        invite_tx = self.transactions.find_server_invite(request)
        if invite_tx is None:
            self._respond(tx, request, 481, now)
            return
        # RFC 3261 9.2: 200 to the CANCEL; if the INVITE has no final response yet, 487.
        self._respond(tx, request, 200, now)
        if invite_tx.state is not State.PROCEEDING:
            return
        owner = self._owners.get(invite_tx)
        if owner is None:
            return
        role, call = owner
        if role == "invite-in" and call.state is CallState.OFFERED:
            self._respond(invite_tx, invite_tx.request, 487, now, to_tag=call.local_tag)
            self._end(call, "cancelled", 487)
        elif role == "reinvite-in" and call.pending_reinvite is not None:
            self._respond(invite_tx, invite_tx.request, 487, now)
            call.pending_reinvite = None

    def _find_dialog_call(self, message: Any, *, incoming: bool) -> Call | None:
        """The call whose dialog ``message`` belongs to (RFC 3261 12.2: Call-ID and tags)."""
        local_tag = message.to.tag if incoming else message.from_.tag
        remote_tag = message.from_.tag if incoming else message.to.tag
        return self._by_dialog.get((message.call_id, local_tag or "", remote_tag or ""))

    def _set_dialog(self, call: Call, dialog: Dialog) -> None:
        call.dialog = dialog
        self._by_dialog[dialog.id] = call

    def _drop_call(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        if call.dialog is not None and self._by_dialog.get(call.dialog.id) is call:
            del self._by_dialog[call.dialog.id]

    def _on_in_dialog(self, request: Any, tx: Transaction, source: Address, now: float) -> None:
        call = self._find_dialog_call(request, incoming=True)
        if call is None or call.state is CallState.ENDED:
            self._respond(tx, request, 481, now)
            return
        if request.method == "OPTIONS":
            self._answer_options(request, tx, now)
            return
        if not call.dialog.check_remote_cseq(request):
            # RFC 3261 12.2.2: a lower CSeq is out of order.
            self._respond(tx, request, 500, now, reason="CSeq Out of Order")
            return
        if request.method == "BYE":
            self._respond(tx, request, 200, now)
            self._end(call, "remote hangup")
        elif request.method == "INVITE":
            self._on_reinvite(call, request, tx, now)
        elif request.method == "UPDATE":
            self._on_update(call, request, tx, now)

    def _on_reinvite(self, call: Call, request: Any, tx: Transaction, now: float) -> None:
        if call.out_reinvite is not None and call.out_reinvite[0].final_response is None:
            # RFC 3261 14.2: glare with our own re-INVITE.
            self.stats["glare"] += 1
            self._respond(tx, request, 491, now)
            return
        if call.pending_reinvite is not None:
            # RFC 3261 14.2: an INVITE while we have not answered the previous one.
            self._respond(tx, request, 500, now, extra=[("Retry-After", str(self.rng.randint(0, 10)))])
            return
        if request.body and request.content_type not in (None, "application/sdp"):
            self._respond(tx, request, 415, now, extra=[("Accept", "application/sdp")])
            return
        try:
            timer = self._uas_session_timer(request)
        except _TooSmall:
            self._respond(tx, request, 422, now, extra=[("Min-SE", str(self.config.min_se))])
            return
        call.dialog.refresh_target(request)
        self._owners[tx] = ("reinvite-in", call)
        if timer[0] is not None:
            call.session_interval, call.we_refresh = timer
        if request.body and not session_unchanged(call.remote_sdp, request.body):
            call.pending_reinvite = (request, tx)
            self._events.append(MediaChanged(call, request.body, needs_answer=True))
            return
        # Same session (or no offer: RFC 3264 offer in our 2xx, we repeat our own):
        # a refresh.  Answer it here so the TU (and the fax) is not disturbed.
        self._answer_invite(call, request, tx, call.local_sdp or b"", now)
        self._events.append(SessionRefreshed(call))

    def _on_update(self, call: Call, request: Any, tx: Transaction, now: float) -> None:
        try:
            timer = self._uas_session_timer(request)
        except _TooSmall:
            self._respond(tx, request, 422, now, extra=[("Min-SE", str(self.config.min_se))])
            return
        if request.body and not session_unchanged(call.remote_sdp, request.body):
            # RFC 3311 media changes by UPDATE are not supported: the fax media stays.
            self._respond(tx, request, 488, now)
            return
        call.dialog.refresh_target(request)
        if timer[0] is not None:
            call.session_interval, call.we_refresh = timer
        body = call.local_sdp if request.body else b""
        extra = [("Contact", self._contact(call.peer.transport))] + self._session_headers_as_uas(call, request)
        self._respond(tx, request, 200, now, extra=extra, body=body or b"")
        self._arm_session_timer(call, now)
        self._events.append(SessionRefreshed(call))

    def _on_ack(self, ack: Any, now: float) -> None:
        """An ACK outside any transaction: the ACK for a 2xx (RFC 3261 13.3.1.4)."""
        call = self._find_dialog_call(ack, incoming=True)
        if call is None or call.unacked is None:
            self.stats["stray_acks"] += 1
            return
        tx, response, _ = call.unacked
        if ack.cseq[0] != response.cseq[0]:
            self.stats["stray_acks"] += 1
            return
        call.unacked = None
        self._timers.pop((call.id, "2xx"), None)
        self._timers.pop((call.id, "2xx-giveup"), None)
        if ack.body and response.body and not tx.request.body:
            # RFC 3261 13.2.1 / RFC 3264: an INVITE without an offer got ours in the 2xx;
            # the answer comes in the ACK.
            if not session_unchanged(call.remote_sdp, ack.body):
                call.remote_sdp = ack.body
                self._events.append(MediaChanged(call, ack.body, needs_answer=False))
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            self._events.append(CallEstablished(call))
        if call.bye_after_ack:
            self._finish_deferred_bye(call, now)

    def _finish_deferred_bye(self, call: Call, now: float) -> None:
        """The BYE that ``hangup`` had to hold back until the ACK (RFC 3261 15)."""
        call.bye_after_ack = False
        self._send_bye(call, now)
        self._drop_call(call)

    # -- responses ------------------------------------------------------------

    def _on_response(self, response: Any, now: float) -> None:
        tx = self.transactions.match_response(response)
        if tx is None:
            # RFC 3261 13.2.2.4: a 2xx retransmission after the INVITE transaction ended
            # is ACKed again by the UAC core.
            if response.status // 100 == 2 and response.cseq[1] == "INVITE":
                call = self._find_dialog_call(response, incoming=False)
                if call is not None and call.ack is not None and call.ack.cseq[0] == response.cseq[0]:
                    self._queue(call.ack, self._dialog_destination(call))
                    return
            self.stats["stray_responses"] += 1
            return
        self._process(tx.receive_response(response, now), now)

    def _process(self, outputs: list, now: float) -> None:
        for output in outputs:
            if isinstance(output, SendMessage):
                self._queue(output.message, output.transaction.destination, output.transaction)
            elif isinstance(output, ResponseReceived):
                self._on_tx_response(output.transaction, output.response, now)
            elif isinstance(output, (TransactionTimedOut, TransportFailed)):
                self._on_tx_failure(output.transaction, output, now)
            elif isinstance(output, TransactionTerminated):
                self._owners.pop(output.transaction, None)
            elif isinstance(output, AckReceived):
                pass

    def _on_tx_failure(self, tx: Transaction, failure: Any, now: float) -> None:
        owner = self._owners.get(tx)
        if owner is None:
            return
        role, obj = owner
        reason = "timeout" if isinstance(failure, TransactionTimedOut) else "transport error"
        if role == "invite-out":
            if obj.state is CallState.CALLING:
                self._end(obj, reason, 408)
        elif role == "reinvite-out":
            # RFC 3261 14.1 / 12.2.1.2: a timed-out re-INVITE ends the dialog.
            obj.out_reinvite = None
            self._send_bye(obj, now)
            self._end(obj, f"re-INVITE {reason}", 408)
        elif role == "update-out":
            self._send_bye(obj, now)
            self._end(obj, f"session refresh {reason}", 408)
        elif role in ("invite-in", "reinvite-in"):
            if role == "invite-in" and obj.state in (CallState.OFFERED, CallState.ANSWERED):
                self._end(obj, reason)
        elif role == "register":
            self._registration_failed(obj, None, reason, now)

    def _on_tx_response(self, tx: Transaction, response: Any, now: float) -> None:
        owner = self._owners.get(tx)
        if owner is None:
            return
        role, obj = owner
        if role == "invite-out":
            self._on_invite_response(obj, tx, response, now)
        elif role == "reinvite-out":
            self._on_reinvite_response(obj, tx, response, now)
        elif role == "update-out":
            self._on_update_response(obj, response, now)
        elif role == "register":
            self._on_register_response(obj, tx, response, now)

    def _on_invite_response(self, call: Call, tx: Transaction, response: Any, now: float) -> None:
        status = response.status
        if status < 200:
            call.provisional_seen = True
            if status > 100:
                self._events.append(CallProgressed(call, status, response.reason, response.body))
            if call.cancel_requested and call.state is CallState.CALLING:
                self._send_cancel(call, now)
            return
        if status < 300:
            if call.dialog is not None and (response.to.tag or "") != call.dialog.remote_tag:
                # RFC 3261 13.2.2.4: a forked INVITE answered by a second UAS.  We keep
                # the first dialog; the second gets its ACK and an immediate BYE.
                self._refuse_forked_dialog(call, response, now)
                return
            if call.dialog is None:
                self._set_dialog(call, Dialog.as_uac(call.invite, response, secure=call.peer.transport == "tls"))
            elif call.ack is not None and call.ack.cseq[0] == response.cseq[0]:
                self._queue(call.ack, self._dialog_destination(call))  # 2xx retransmission
                return
            call.ack = call.dialog.build_request(
                "ACK", via=self._via(call.peer.transport), contact=None, cseq=response.cseq[0]
            )
            self._queue(call.ack, self._dialog_destination(call))
            if call.cancel_requested or call.state is CallState.ENDED:
                # RFC 3261 9.1: the 2xx crossed our CANCEL; the call is ended with BYE.
                self._send_bye(call, now)
                self._end(call, "cancelled")
                return
            call.state = CallState.CONFIRMED
            call.remote_sdp = response.body or None
            call.peer_allows_update = "UPDATE" in _tokens(response, "Allow")
            self._uac_session_timer(call, response, now)
            self._events.append(CallAnswered(call, response.body))
            return
        if status in (401, 407) and self._retry_with_auth(call, tx, response, now):
            return
        if status == 422 and self._retry_with_min_se(call, response, now):
            return
        if call.state is not CallState.ENDED:
            reason = "cancelled" if status == 487 else f"rejected {status}"
            self._end(call, reason, status)

    def _on_reinvite_response(self, call: Call, tx: Transaction, response: Any, now: float) -> None:
        status = response.status
        if status < 200:
            return
        if status < 300 and call.ack is not None and call.ack.cseq[0] == response.cseq[0]:
            # RFC 3261 13.2.2.4: a retransmitted 2xx only gets the same ACK again.
            self._queue(call.ack, self._dialog_destination(call))
            return
        offered = call.out_reinvite[1] if call.out_reinvite else call.local_sdp
        call.out_reinvite = None
        if status < 300:
            ack = call.dialog.build_request(
                "ACK", via=self._via(call.peer.transport), contact=None, cseq=response.cseq[0]
            )
            call.ack = ack
            self._queue(ack, self._dialog_destination(call))
            call.dialog.refresh_target(response)
            call.local_sdp = offered
            self._uac_session_timer(call, response, now)
            if call.state is CallState.ENDED:
                return
            if response.body and not session_unchanged(call.remote_sdp, response.body):
                call.remote_sdp = response.body
                self._events.append(MediaChanged(call, response.body, needs_answer=False))
            else:
                self._events.append(SessionRefreshed(call))
            return
        if status == 491:
            # RFC 3261 14.1: retry after a random time; the Call-ID owner waits longer.
            if call.dialog.is_caller:
                delay = self.rng.randint(210, 400) / 100
            else:
                delay = self.rng.randint(0, 200) / 100
            call.glare_retry_sdp = offered
            self._timers[(call.id, "glare")] = now + delay
            return
        if status in (401, 407) and call.credentials and self._retry_reinvite_with_auth(call, tx, response, offered, now):
            return
        if status in (408, 481):
            # RFC 3261 12.2.1.2: the dialog is gone.
            self._send_bye(call, now)
            self._end(call, f"re-INVITE answered {status}", status)
            return
        self._events.append(ReinviteFailed(call, status, response.reason))

    def _on_update_response(self, call: Call, response: Any, now: float) -> None:
        if response.status < 200:
            return
        if response.status < 300:
            self._uac_session_timer(call, response, now)
            return
        if response.status == 491:
            self._timers[(call.id, "refresh")] = now + self.rng.randint(0, 200) / 100
            return
        # A refresh that fails (RFC 4028 10) leaves no way to keep the session alive.
        self._send_bye(call, now)
        self._end(call, f"session refresh answered {response.status}", response.status)

    # -- session timers (RFC 4028) ---------------------------------------------

    def _uac_session_timer(self, call: Call, response: Any, now: float) -> None:
        se = parse_session_expires(response.headers.get("Session-Expires"))
        if se is None:
            call.session_interval = None
            self._timers.pop((call.id, "refresh"), None)
            self._timers.pop((call.id, "expire"), None)
            return
        interval, refresher = se
        call.session_interval = interval
        call.we_refresh = refresher != "uas"  # RFC 4028 7.2: absent means the UAC refreshes
        self._arm_session_timer(call, now)

    def _arm_session_timer(self, call: Call, now: float) -> None:
        self._timers.pop((call.id, "refresh"), None)
        self._timers.pop((call.id, "expire"), None)
        interval = call.session_interval
        if not interval or call.state is CallState.ENDED:
            return
        if call.we_refresh:
            # RFC 4028 10: refresh at half the interval.
            self._timers[(call.id, "refresh")] = now + interval / 2
        else:
            # RFC 4028 10: without a refresh, BYE at interval - min(32, interval/3).
            self._timers[(call.id, "expire")] = now + interval - min(32, interval / 3)

    # -- timers ---------------------------------------------------------------

    def _fire(self, key: tuple[str, str], now: float) -> None:
        if key == _REFUSALS_TIMER:
            self._flush_refusals()
            return
        owner_id, name = key
        if owner_id.startswith("reg:"):
            registration = self.registrations.get(owner_id[4:])
            if registration is not None:
                self._send_register(registration, now)
            return
        call = self.calls.get(owner_id)
        if call is None:
            return
        if call.state is CallState.ENDED and not (call.bye_after_ack and name in ("2xx", "2xx-giveup")):
            return
        if name == "offer":
            if call.state is CallState.OFFERED:
                self._respond(call.invite_tx, call.invite, 480, now, to_tag=call.local_tag)
                self._end(call, "not answered", 480)
            return
        if name == "2xx" and call.unacked is not None:
            tx, response, interval = call.unacked
            if tx.terminated:
                self._queue(response, tx.destination)
            else:
                self._process(tx.send_response(response, now), now)
            # RFC 3261 13.3.1.4: T1, doubling up to T2.
            interval = min(interval * 2, self.config.timers.t2)
            call.unacked = (tx, response, interval)
            self._timers[(call.id, "2xx")] = now + interval
        elif name == "2xx-giveup" and call.unacked is not None:
            # 13.3.1.4: no ACK in 64*T1: the session SHOULD be terminated.
            call.unacked = None
            self._timers.pop((call.id, "2xx"), None)
            if call.bye_after_ack:
                self._finish_deferred_bye(call, now)
                return
            call.state = CallState.CONFIRMED
            self._send_bye(call, now)
            self._end(call, "no ACK")
        elif name == "glare" and call.glare_retry_sdp is not None:
            sdp, call.glare_retry_sdp = call.glare_retry_sdp, None
            if call.out_reinvite is None and call.pending_reinvite is None and call.unacked is None:
                self._send_reinvite(call, sdp, now)
            else:
                self._timers[(call.id, "glare")] = now + 1.0
        elif name == "refresh":
            self._refresh_session(call, now)
        elif name == "expire":
            self._send_bye(call, now)
            self._end(call, "session expired")

    def _refresh_session(self, call: Call, now: float) -> None:
        if call.out_reinvite is not None or call.pending_reinvite is not None or call.unacked is not None:
            self._timers[(call.id, "refresh")] = now + 1.0
            return
        if call.peer_allows_update:
            # RFC 4028 7.4/9: UPDATE refreshes without touching the media.
            request = call.dialog.build_request(
                "UPDATE",
                via=self._via(call.peer.transport),
                contact=self._contact(call.peer.transport),
                extra_headers=self._session_headers_as_uac(call),
            )
            tx = self._start_client(request, self._dialog_destination(call), now)
            self._owners[tx] = ("update-out", call)
            self._timers.pop((call.id, "refresh"), None)
        else:
            # Same SDP, same o= version: a pure refresh (RFC 4028 7.4 with RFC 3264 8).
            self._send_reinvite(call, call.local_sdp or b"", now)

    def _session_headers_as_uac(self, call: Call) -> list[tuple[str, str]]:
        headers = [("Supported", "timer")]
        if call.session_interval:
            headers.append(("Session-Expires", f"{call.session_interval};refresher={'uac' if call.we_refresh else 'uas'}"))
            headers.append(("Min-SE", str(self.config.min_se)))
        elif self.config.session_expires:
            headers.append(("Session-Expires", str(self.config.session_expires)))
            headers.append(("Min-SE", str(self.config.min_se)))
        return headers

    # -- commands -------------------------------------------------------------

    def ring(self, call: Call, now: float) -> None:
        """Send 180 Ringing for an offered inbound call."""
        if call.state is not CallState.OFFERED:
            raise LocalProtocolError(f"cannot ring a call in state {call.state.value}")
        self._respond(call.invite_tx, call.invite, 180, now, to_tag=call.local_tag,
                      extra=[("Contact", self._contact(call.peer.transport))])

    def answer(self, call: Call, sdp: bytes, now: float) -> None:
        """Answer an offered call, or the peer's pending re-INVITE, with ``sdp``."""
        if call.pending_reinvite is not None:
            request, tx = call.pending_reinvite
            call.pending_reinvite = None
            call.remote_sdp = request.body or call.remote_sdp
            self._answer_invite(call, request, tx, sdp, now)
            if call.glare_retry_sdp is not None:
                # The peer's re-INVITE won the glare and we accepted its media: ours is
                # superseded (re-sending it would renegotiate a session - a fax - that is
                # already what the TU agreed to).  The TU may re-issue it if still needed.
                call.glare_retry_sdp = None
                self._timers.pop((call.id, "glare"), None)
                self._events.append(ReinviteFailed(call, 491, "superseded by the peer's re-INVITE"))
            return
        if call.state is not CallState.OFFERED:
            raise LocalProtocolError(f"nothing to answer on a call in state {call.state.value}")
        self._set_dialog(call, Dialog.as_uas(call.invite, call.local_tag, secure=call.peer.transport == "tls"))
        call.state = CallState.ANSWERED
        self._timers.pop((call.id, "offer"), None)
        self._answer_invite(call, call.invite, call.invite_tx, sdp, now)

    def _answer_invite(self, call: Call, request: Any, tx: Transaction, sdp: bytes, now: float) -> None:
        call.local_sdp = sdp or call.local_sdp
        extra = [
            ("Contact", self._contact(call.peer.transport)),
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
        ] + self._session_headers_as_uas(call, request)
        response = self._respond(tx, request, 200, now, extra=extra, body=sdp, to_tag=call.local_tag)
        # RFC 3261 13.3.1.4: the UAS core retransmits the 2xx until the ACK arrives.
        call.unacked = (tx, response, self.config.timers.t1)
        if not call.peer.reliable:
            self._timers[(call.id, "2xx")] = now + self.config.timers.t1
        self._timers[(call.id, "2xx-giveup")] = now + 64 * self.config.timers.t1
        self._arm_session_timer(call, now)

    def reject(self, call: Call, status: int, now: float, *, reason: str | None = None) -> None:
        """Refuse an offered call (status 300-699), or the peer's pending re-INVITE."""
        if not 300 <= status < 700:
            raise LocalProtocolError("reject needs a 3xx-6xx status")
        if call.pending_reinvite is not None:
            request, tx = call.pending_reinvite
            call.pending_reinvite = None
            self._respond(tx, request, status, now, reason=reason)
            return
        if call.state is not CallState.OFFERED:
            raise LocalProtocolError(f"cannot reject a call in state {call.state.value}")
        self._respond(call.invite_tx, call.invite, status, now, reason=reason, to_tag=call.local_tag)
        self._end(call, f"rejected {status}", status)

    def reinvite(self, call: Call, sdp: bytes, now: float) -> None:
        """Offer new media (e.g. switch to T.38) in a re-INVITE."""
        if call.state is not CallState.CONFIRMED and call.state is not CallState.ANSWERED:
            raise LocalProtocolError(f"cannot re-INVITE a call in state {call.state.value}")
        if call.out_reinvite is not None:
            raise LocalProtocolError("a re-INVITE is already in progress")
        if call.pending_reinvite is not None or call.unacked is not None:
            # RFC 3261 14.1: no new INVITE while one is unanswered in either direction;
            # go through the glare back-off so it is sent once that is over.
            call.glare_retry_sdp = sdp
            self._timers[(call.id, "glare")] = now + 0.5
            return
        self._send_reinvite(call, sdp, now)

    def _send_reinvite(self, call: Call, sdp: bytes, now: float) -> None:
        request = call.dialog.build_request(
            "INVITE",
            via=self._via(call.peer.transport),
            contact=self._contact(call.peer.transport),
            body=sdp,
            extra_headers=[("Allow", ", ".join(ALLOWED_METHODS))] + self._session_headers_as_uac(call),
        )
        tx = self._start_client(request, self._dialog_destination(call), now)
        call.out_reinvite = (tx, sdp)
        self._owners[tx] = ("reinvite-out", call)
        self._timers.pop((call.id, "refresh"), None)

    def hangup(self, call: Call, now: float) -> None:
        """End the call: CANCEL, BYE or a 480, whatever its state needs."""
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.OFFERED:
            self._respond(call.invite_tx, call.invite, 480, now, to_tag=call.local_tag)
            self._end(call, "local hangup")
        elif call.state is CallState.CALLING:
            call.cancel_requested = True
            if call.provisional_seen:
                self._send_cancel(call, now)
            # else RFC 3261 9.1: wait for a provisional response before CANCEL.
        elif call.state is CallState.ANSWERED or call.unacked is not None:
            # RFC 3261 15: no BYE before the ACK for our 2xx (or its timeout).
            call.bye_after_ack = True
            self._end(call, "local hangup")
        else:
            self._send_bye(call, now)
            self._end(call, "local hangup")

    def _send_cancel(self, call: Call, now: float) -> None:
        if call.cancel_sent:
            return
        call.cancel_sent = True
        invite = call.invite
        # RFC 3261 9.1: same Request-URI, Call-ID, From, To, CSeq number, top Via, Route.
        headers = Headers()
        headers.add("Via", invite.headers.get_all("Via")[0])
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", invite.headers.get("From"))
        headers.add("To", invite.headers.get("To"))
        headers.add("Call-ID", invite.call_id)
        headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
        cancel = Request("CANCEL", invite.uri, headers)
        self._start_client(cancel, call.invite_tx.destination, now)

    def _send_bye(self, call: Call, now: float) -> None:
        if call.dialog is None:
            return
        request = call.dialog.build_request("BYE", via=self._via(call.peer.transport), contact=None)
        tx = self._start_client(request, self._dialog_destination(call), now)
        self._owners[tx] = ("bye", call)

    def invite(
        self,
        uri: str,
        sdp: bytes,
        now: float,
        *,
        from_user: str | None = None,
        credentials: tuple[str, str] | None = None,
        transport: str | None = None,
    ) -> Call:
        """Place an outbound call to ``uri`` offering ``sdp``; returns its handle."""
        target = parse_uri(uri)
        if not isinstance(target, SipUri):
            raise LocalProtocolError(f"can only call sip:/sips: URIs, not {uri!r}")
        destination = self._uri_destination(target, transport)
        local_tag = self._new_tag()
        host, port = self._local(destination.transport)
        call_id = f"{self._random_hex(16)}@{host}"
        headers = Headers()
        headers.add("Via", self._via(destination.transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{from_user or self.config.user}@{_host_ref(host)}>;tag={local_tag}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{self.rng.randint(1, 9999)} INVITE")
        headers.add("Contact", self._contact(destination.transport))
        headers.add("Allow", ", ".join(ALLOWED_METHODS))
        headers.add("Supported", ", ".join(SUPPORTED_OPTIONS))
        if self.config.session_expires:
            headers.add("Session-Expires", str(self.config.session_expires))
            headers.add("Min-SE", str(self.config.min_se))
        headers.add("User-Agent", self.config.user_agent)
        if sdp:
            headers.add("Content-Type", "application/sdp")
        request = Request("INVITE", target, headers, sdp)
        call = Call(
            id=f"{call_id}/{local_tag}",
            direction="outbound",
            state=CallState.CALLING,
            call_id=call_id,
            invite=request,
            invite_tx=None,
            peer=destination,
            local_tag=local_tag,
            local_sdp=sdp or None,
            credentials=credentials,
        )
        self.calls[call.id] = call
        call.invite_tx = self._start_client(request, destination, now)
        self._owners[call.invite_tx] = ("invite-out", call)
        return call

    def options(self, uri: str, now: float) -> None:
        """Send an out-of-dialog OPTIONS (a keep-alive / capability probe)."""
        target = parse_uri(uri)
        destination = self._uri_destination(target, None)
        host, _ = self._local(destination.transport)
        headers = Headers()
        headers.add("Via", self._via(destination.transport))
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<sip:{self.config.user}@{_host_ref(host)}>;tag={self._new_tag()}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", f"{self._random_hex(16)}@{host}")
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Accept", "application/sdp")
        self._start_client(Request("OPTIONS", target, headers), destination, now)

    # -- auth (client) --------------------------------------------------------

    def _retry_with_auth(self, call: Call, tx: Transaction, response: Any, now: float) -> bool:
        if call.credentials is None or call.state is not CallState.CALLING:
            return False
        request = _authenticated_copy(call.invite, response, call.credentials, call, self)
        if request is None:
            return False
        call.invite = request
        call.invite_tx = self._start_client(request, tx.destination, now)
        self._owners[call.invite_tx] = ("invite-out", call)
        call.provisional_seen = False
        return True

    def _retry_reinvite_with_auth(self, call: Call, tx: Transaction, response: Any, sdp: bytes, now: float) -> bool:
        request = _authenticated_copy(tx.request, response, call.credentials, call, self)
        if request is None:
            return False
        call.dialog.local_seq = request.cseq[0]
        new_tx = self._start_client(request, tx.destination, now)
        call.out_reinvite = (new_tx, sdp)
        self._owners[new_tx] = ("reinvite-out", call)
        return True

    def _retry_with_min_se(self, call: Call, response: Any, now: float) -> bool:
        # RFC 4028 7.4/8: retry with Session-Expires raised to the peer's Min-SE.
        min_se = response.headers.get("Min-SE")
        if min_se is None or call.auth_tries > 4 or call.state is not CallState.CALLING:
            return False
        value = min_se.split(";")[0].strip()
        if not value.isdigit():
            return False
        call.auth_tries += 1
        request = _copy_for_retry(call.invite, self)
        request.headers.set("Session-Expires", value)
        request.headers.set("Min-SE", value)
        call.invite = request
        call.invite_tx = self._start_client(request, call.invite_tx.destination, now)
        self._owners[call.invite_tx] = ("invite-out", call)
        return True

    # -- registration ---------------------------------------------------------

    def register(self, trunk: Trunk, now: float) -> Registration:
        """Register to ``trunk`` now and keep the registration refreshed."""
        registration = self.registrations.get(trunk.name)
        if registration is None:
            host, _ = self._local(trunk.transport or "udp")
            registration = Registration(trunk, self.rng, call_id=f"{self._random_hex(16)}@{host}", local_tag=self._new_tag())
            self.registrations[trunk.name] = registration
        self._send_register(registration, now)
        return registration

    def unregister(self, trunk_name: str, now: float) -> None:
        """Remove our binding (Expires: 0) and stop refreshing."""
        registration = self.registrations.pop(trunk_name, None)
        if registration is None:
            return
        self._timers.pop(("reg:" + trunk_name, "refresh"), None)
        registration.expires_wanted = 0
        self._send_register(registration, now, track=False)

    def _send_register(self, registration: Registration, now: float, *, track: bool = True) -> None:
        target = parse_uri(registration.trunk.registrar)
        destination = self._uri_destination(target, registration.trunk.transport)
        request = registration.build_request(
            via=self._via(destination.transport),
            contact=self._contact(destination.transport, user=registration.trunk.contact_user),
            host=self._local(destination.transport)[0],
        )
        tx = self._start_client(request, destination, now)
        if track:
            self._owners[tx] = ("register", registration)

    def _on_register_response(self, registration: Registration, tx: Transaction, response: Any, now: float) -> None:
        if response.status < 200:
            return
        if response.status < 300:
            expires = registration.succeeded(response, now)
            if expires <= 0:
                # A binding granted for 0 s is no registration; back off, do not hammer.
                self._registration_failed(registration, response.status, "registrar granted expires=0", now)
                return
            self._timers[("reg:" + registration.trunk.name, "refresh")] = registration.refresh_at
            self._events.append(RegistrationSucceeded(registration.trunk.name, expires))
            return
        if response.status in (401, 407) and registration.take_challenge(response):
            self._send_register(registration, now)
            return
        if response.status == 423:
            min_expires = response.headers.get("Min-Expires", "")
            if min_expires.isdigit() and registration.raise_expires(int(min_expires)):
                self._send_register(registration, now)
                return
        self._registration_failed(registration, response.status, response.reason, now)

    def _registration_failed(self, registration: Registration, status: int | None, reason: str, now: float) -> None:
        retry_in = registration.failed(now)
        self._timers[("reg:" + registration.trunk.name, "refresh")] = now + retry_in
        self._events.append(RegistrationFailed(registration.trunk.name, status, reason, retry_in))

    # -- plumbing -------------------------------------------------------------

    def _end(self, call: Call, reason: str, status: int | None = None) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.end_reason = reason
        for name in ("refresh", "expire", "glare", "offer"):
            self._timers.pop((call.id, name), None)
        if not call.bye_after_ack:
            self._timers.pop((call.id, "2xx"), None)
            self._timers.pop((call.id, "2xx-giveup"), None)
            self._drop_call(call)
        self._events.append(CallEnded(call, reason, status))

    def _respond(
        self,
        tx: Transaction,
        request: Any,
        status: int,
        now: float,
        *,
        extra: list[tuple[str, str]] = (),
        body: bytes = b"",
        reason: str | None = None,
        to_tag: str | None = None,
    ) -> Any:
        if to_tag is None and status > 100 and request.to.tag is None:
            to_tag = self._new_tag()  # RFC 3261 8.2.6.2: every non-100 response gets a To tag
        response = make_response(request, status, reason, to_tag=to_tag)
        for name, value in extra:
            response.headers.add(name, value)
        response.headers.add("Server", self.config.user_agent)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self._process(tx.send_response(response, now), now)
        return response

    def _start_client(self, request: Any, destination: Address, now: float) -> Transaction:
        tx, outputs = self.transactions.start_client(request, destination, reliable=destination.reliable, now=now)
        self._process(outputs, now)
        return tx

    def _queue(self, message: Any, destination: Address, transaction: Any = None) -> None:
        self._outgoing.append(Outgoing(destination, message, message.to_bytes(), transaction))

    def _stamp_via(self, request: Any, source: Address) -> None:
        """RFC 3261 18.2.1 and RFC 3581 4: note where the request really came from."""
        vias = request.vias
        via = vias[0]
        changed = False
        if via.host_address != source.host or via.has_rport:
            via.params["received"] = source.host
            changed = True
        if via.has_rport and via.rport is None:
            via.params["rport"] = str(source.port)
            changed = True
        if changed:
            rest = request.headers.get_all("Via")[1:]
            request.headers.remove("Via")
            for value in reversed([str(via)] + rest):
                request.headers.prepend("Via", value)

    def _reply_address(self, request: Any, source: Address) -> Address:
        """RFC 3261 18.2.2 (with RFC 3581 4): where responses to ``request`` go.

        Reliable transports answer over the connection the request came on
        (``connection``); should it be gone, the edge opens a new one to the received
        address and the Via's sent-by port, as 18.2.2 says.  UDP answers go to the
        received address and the rport (or sent-by) port.
        """
        via = request.vias[0]
        host = via.received or via.host_address
        if source.reliable:
            default = 5061 if source.transport == "tls" else 5060
            return Address(source.transport, host, via.port or default, source.connection)
        return Address(source.transport, host, via.rport or via.port or 5060)

    def _uri_destination(self, uri: Any, transport: str | None) -> Address:
        transport = (transport or getattr(uri, "transport", None) or ("tls" if uri.scheme == "sips" else "udp")).lower()
        port = uri.port or (5061 if transport == "tls" else 5060)
        return Address(transport, uri.host_address, port)

    def _refuse_forked_dialog(self, call: Call, response: Any, now: float) -> None:
        self.stats["forked_2xx"] += 1
        dialog = Dialog.as_uac(call.invite, response)
        destination = self._dialog_destination(call, dialog)
        ack = dialog.build_request("ACK", via=self._via(destination.transport), contact=None, cseq=response.cseq[0])
        self._queue(ack, destination)
        bye = dialog.build_request("BYE", via=self._via(destination.transport), contact=None)
        self._start_client(bye, destination, now)

    def _dialog_destination(self, call: Call, dialog: Dialog | None = None) -> Address:
        """Where in-dialog requests go: the first route or the remote target (12.2.1.1).

        For a call that arrived over TCP/TLS the connection it came on is offered for
        reuse (RFC 3261 18); the edge falls back to connecting to the target.
        """
        uri, routes = (dialog or call.dialog).request_target()
        target = parse_name_addr(routes[0]).uri if routes else parse_uri(uri)
        transport = getattr(target, "transport", None) or call.peer.transport
        destination = self._uri_destination(target, transport)
        if call.peer.reliable and call.direction == "inbound" and transport == call.peer.transport:
            destination = Address(destination.transport, destination.host, destination.port, call.peer.connection)
        return destination

    def _local(self, transport: str) -> tuple[str, int]:
        host, port = self.config.listen.get(transport) or next(iter(self.config.listen.values()))
        return (self.config.public_host or host), port

    def _via(self, transport: str) -> str:
        host, port = self._local(transport)
        host = _host_ref(host)
        return f"SIP/2.0/{transport.upper()} {host}:{port};branch=z9hG4bK{self._random_hex(16)};rport"

    def _contact(self, transport: str, user: str | None = None) -> str:
        host, port = self._local(transport)
        host = _host_ref(host)
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{user or self.config.user}@{host}:{port}{suffix}>"

    def _new_tag(self) -> str:
        return self._random_hex(8)

    def _random_hex(self, length: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(length))


def _host_ref(host: str) -> str:
    """A host as it appears in a URI or Via: IPv6 addresses in brackets (RFC 3261 25.1)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _TooSmall(Exception):
    """Session-Expires below our Min-SE (answered with 422)."""


def _short_reason(reason: str | None, error: Exception) -> str | None:
    """A reason phrase with the parser's complaint appended (printable, at most 80 chars)."""
    from sip.message import reason_phrase

    if reason is None:
        reason = reason_phrase(getattr(error, "status_hint", 400))
    detail = "".join(ch for ch in str(error) if ch.isprintable())[:80]
    return f"{reason} ({detail})" if detail else reason


def _copy_for_retry(request: Any, ua: UserAgent) -> Any:
    """A copy of ``request`` with a new branch and the CSeq number + 1 (RFC 3261 8.1.3.5)."""
    headers = request.headers.copy()
    transport = request.vias[0].transport.lower()
    headers.remove("Via")  # a UA's own requests carry exactly one Via
    headers.prepend("Via", ua._via(transport))
    number, method = request.cseq
    headers.set("CSeq", f"{number + 1} {method}")
    return Request(request.method, request.uri, headers, request.body)


def _authenticated_copy(request: Any, response: Any, credentials: tuple[str, str], holder: Any, ua: UserAgent) -> Any:
    """``request`` again with credentials for the challenge in ``response``, or None.

    RFC 3261 22.2: a second challenge for the same credentials means they were wrong,
    unless the server marked the nonce stale (RFC 7616 3.3), which is retried silently.
    """
    from sip.auth import DigestClient, challenge_in

    found = challenge_in(response)
    if found is None:
        return None
    challenge, answer_header = found
    stale = bool(getattr(challenge, "stale", False))
    if request.headers.get(answer_header) is not None and not stale:
        return None  # our credentials were refused
    if holder.auth_tries >= 5:
        return None
    holder.auth_tries += 1
    client = getattr(holder, "_digest", None)
    if client is None:
        client = DigestClient(*credentials, rng=ua.rng)
        holder._digest = client
    retry = _copy_for_retry(request, ua)
    retry.headers.remove(answer_header)
    retry.headers.add(answer_header, authorize(client, challenge, retry))
    return retry


def authorize(client: Any, challenge: Any, request: Any) -> str:
    """The Authorization value ``sip.auth.DigestClient`` computes for ``request``."""
    return client.authorize(challenge, request.method, str(request.uri), request.body)
