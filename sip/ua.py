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

- :class:`InviteReceived` ``(call, offer, from_, to, request_uri, source, transport)`` - a
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
- :class:`CallTerminated` ``(call, reason, status)`` - the call is over (BYE either way,
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

Where things are
----------------
This module is the UA core: it routes messages, transactions and timers to calls and
registrations.  The ideas it uses live beside it: ``sip.events`` (what the TU is told),
``sip.call`` (the ``Call`` handle, its states, the transaction roles and UA timers),
``sip.session_timer`` (RFC 4028), ``sip.requests`` (the requests we build),
``sip.refusals`` (answering bad input, throttled ``RequestRefused``) and
``sip.registration`` (REGISTER and what its responses mean).  Every name the gateway
imports from here is re-exported below.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import cast

from sip.address import Address, Outgoing
from sip.auth import AuthOutcome, DigestServer
from sip.call import Call, CallState, Direction, Role, TimerKey, UATimer
from sip.config import UAConfig
from sip.dialog import Dialog, contact_uri
from sip.errors import LocalProtocolError, RemoteProtocolError, SipParseError
from sip.events import (
    REFUSAL_REASONS,
    CallAnswered,
    CallEstablished,
    CallProgressed,
    CallTerminated,
    Event,
    InviteReceived,
    MediaChanged,
    RegistrationFailed,
    RegistrationSucceeded,
    ReinviteFailed,
    RequestRefused,
    SessionRefreshed,
)
from sip.message import Request, Response, make_response, method_tokens, option_tags, parse_name_addr
from sip.parser import parse_message
from sip.ratelimit import RateLimiter
from sip.refusals import RefusalThrottle, error_response, peek_method, salvaged_response, short_reason
from sip.registration import Granted, Registration, RegisterStep, Resend, Trunk
from sip.requests import ALLOWED_METHODS, SUPPORTED_OPTIONS, RequestFactory, authorize, build_cancel, uri_destination
from sip.sdp import session_unchanged
from sip.session_timer import (
    SessionIntervalTooSmall,
    parse_session_expires,
    session_deadline,
    session_headers_as_uac,
    session_headers_as_uas,
    uac_session_timer,
    uas_session_timer,
)
from sip.timers import TimerTable
from sip.transaction import (
    AckReceived,
    ResponseReceived,
    SendMessage,
    State,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    TxOutput,
)
from sip.uri import SipUri, parse_uri

__all__ = [
    # the UA and its configuration
    "UAConfig",
    "UserAgent",
    # addresses, calls
    "Address",
    "Call",
    "CallState",
    "Direction",
    "Outgoing",
    # events
    "CallAnswered",
    "CallEstablished",
    "CallProgressed",
    "CallTerminated",
    "InviteReceived",
    "MediaChanged",
    "REFUSAL_REASONS",
    "RegistrationFailed",
    "RegistrationSucceeded",
    "ReinviteFailed",
    "RequestRefused",
    "SessionRefreshed",
    # helpers that lived here before the split
    "ALLOWED_METHODS",
    "SUPPORTED_OPTIONS",
    "Trunk",
    "authorize",
    "option_tags",
    "parse_session_expires",
    "session_unchanged",
]


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
        self._refusals = RefusalThrottle(
            self.config.refused_event_interval, self.config.refused_events_rate, self.config.refused_events_burst
        )
        self.requests = RequestFactory(self.config, self.rng)
        self.stats: Counter[str] = Counter()
        self.calls: dict[str, Call] = {}
        self._by_dialog: dict[tuple[str, str, str], Call] = {}
        self.registrations: dict[str, Registration] = {}
        self._allow_nets = [ipaddress.ip_network(net, strict=False) for net in self.config.allow_from]
        self._allowed_cache: dict[str, bool] = {}
        self._outgoing: list[Outgoing] = []
        self._events: list[Event] = []
        self._timers = TimerTable()  # TimerKey -> deadline
        # What each transaction we care about is for: a call's, or a registration's.
        self._owners: dict[Transaction, tuple[Role, Call]] = {}
        self._registering: dict[Transaction, Registration] = {}
        self._auth_server: DigestServer | None = None
        if self.config.auth_users:
            self._auth_server = DigestServer(
                self.config.auth_realm, dict(self.config.auth_users), rng=self.rng,
                algorithms=self.config.auth_algorithms,
            )

    # -- output ---------------------------------------------------------------

    def messages_to_send(self) -> list[Outgoing]:
        """Messages produced since the last call, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def events(self) -> list[Event]:
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
            self._fire(cast(TimerKey, key), now)
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
            self.report_refused(source, peek_method(data), None, "rate_limited", now)
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

    def receive_message(self, message: Request | Response, source: Address, now: float) -> None:
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
        event = self._refusals.refused(source, method, status, reason, now)
        if event is not None:
            self._events.append(event)
        elif (UATimer.FLUSH_REFUSALS, "") not in self._timers:
            self._timers[(UATimer.FLUSH_REFUSALS, "")] = now + self._refusals.interval

    def stream_error(self, error: SipParseError, partial: object, source: Address) -> None:
        """A stream parser gave up: answer what can be answered (the edge then closes)."""
        self.stats["parse_errors"] += 1
        if isinstance(partial, Request):
            self._answer_partial(partial, error, source)

    def _receive(self, message: Request | Response, source: Address, now: float, *, rate_checked: bool) -> None:
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

    def _answer_partial(self, request: Request, error: RemoteProtocolError, source: Address) -> None:
        if request.method == "ACK":
            return  # RFC 3261 17: an ACK is never answered
        try:
            response = error_response(request, error)
            if response is None:
                self.stats["dropped"] += 1  # the headers a response must echo are unusable
                return
            self._queue(response, self._reply_address(request, source))
        except (SipParseError, LocalProtocolError):
            pass

    def _answer_unparseable(self, data: bytes, error: SipParseError, source: Address) -> None:
        if isinstance(error.partial, Request):
            self._answer_partial(error.partial, error, source)
            return
        response = salvaged_response(data, error)
        if response is None:
            self.stats["dropped"] += 1
            return
        # The Via could not be trusted: answer where the bytes came from.
        self._queue(response, source)

    # -- requests -------------------------------------------------------------

    def _on_request(self, request: Request, source: Address, now: float) -> None:
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
                self._respond(tx, request, status, now, reason=short_reason(None, exc))
            except (SipParseError, LocalProtocolError):
                self.transactions.discard(tx)

    def _on_new_request(self, request: Request, tx: Transaction, source: Address, now: float) -> None:
        method = request.method

        def reply(status: int, extra: Sequence[tuple[str, str]] = ()) -> None:
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

    def _answer_options(self, request: Request, tx: Transaction, now: float) -> None:
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
            to_tag=self.requests.new_tag() if request.to.tag is None else None,
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

    def _on_new_invite(self, request: Request, tx: Transaction, source: Address, now: float) -> None:
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
            timer = uas_session_timer(request, self.config.min_se)
        except SessionIntervalTooSmall:
            self._respond(tx, request, 422, now, extra=[("Min-SE", str(self.config.min_se))])
            return
        if contact_uri(request) is None:
            self._respond(tx, request, 400, now, reason="Missing Contact")
            return
        local_tag = self.requests.new_tag()
        call = Call(
            id=f"{request.call_id}/{local_tag}",
            direction=Direction.INBOUND,
            state=CallState.OFFERED,
            call_id=request.call_id,
            invite=request,
            invite_tx=tx,
            peer=source,
            local_tag=local_tag,
            remote_sdp=request.body or None,
            peer_allows_update="UPDATE" in method_tokens(request, "Allow"),
        )
        call.session_interval, call.we_refresh = timer
        self.calls[call.id] = call
        self._owners[tx] = (Role.INVITE_IN, call)
        self._respond(tx, request, 100, now)
        # RFC 3261 13.3.1.1: an INVITE's Expires bounds how long it may stay unanswered;
        # our own bound keeps a TU that never answers from leaking the transaction.
        offer_for = self.config.offer_timeout
        if request.expires is not None:
            offer_for = min(offer_for, request.expires)
        self._timers[(UATimer.OFFER, call.id)] = now + offer_for
        self._events.append(
            InviteReceived(
                call=call,
                offer=request.body,
                from_=request.headers.get("From") or "",
                to=request.headers.get("To") or "",
                request_uri=str(request.uri),
                source=source,
                transport=source.transport,
            )
        )

    def _check_auth(self, request: Request, tx: Transaction, source: Address, now: float) -> bool:
        """Digest-check an INVITE from outside allow_from (RFC 3261 22.1, RFC 7616).

        No credentials: 401 with a challenge per algorithm (RFC 8760 2.4).  A stale
        nonce: 401 with ``stale=true``.  Wrong credentials: 403, never a call.
        """
        server = self._auth_server
        assert server is not None  # only asked when auth_users is set
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

    def _on_cancel(self, request: Request, tx: Transaction, now: float) -> None:
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
        if role is Role.INVITE_IN and call.state is CallState.OFFERED:
            self._respond(invite_tx, invite_tx.request, 487, now, to_tag=call.local_tag)
            self._end(call, "cancelled", 487)
        elif role is Role.REINVITE_IN and call.pending_reinvite is not None:
            self._respond(invite_tx, invite_tx.request, 487, now)
            call.pending_reinvite = None

    def _find_dialog_call(self, message: Request | Response, *, incoming: bool) -> Call | None:
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

    def _on_in_dialog(self, request: Request, tx: Transaction, source: Address, now: float) -> None:
        call = self._find_dialog_call(request, incoming=True)
        if call is None or call.state is CallState.ENDED:
            self._respond(tx, request, 481, now)
            return
        if request.method == "OPTIONS":
            self._answer_options(request, tx, now)
            return
        if not call.in_dialog.check_remote_cseq(request):
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

    def _on_reinvite(self, call: Call, request: Request, tx: Transaction, now: float) -> None:
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
            timer = uas_session_timer(request, self.config.min_se)
        except SessionIntervalTooSmall:
            self._respond(tx, request, 422, now, extra=[("Min-SE", str(self.config.min_se))])
            return
        call.in_dialog.refresh_target(request)
        self._owners[tx] = (Role.REINVITE_IN, call)
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

    def _on_update(self, call: Call, request: Request, tx: Transaction, now: float) -> None:
        try:
            timer = uas_session_timer(request, self.config.min_se)
        except SessionIntervalTooSmall:
            self._respond(tx, request, 422, now, extra=[("Min-SE", str(self.config.min_se))])
            return
        if request.body and not session_unchanged(call.remote_sdp, request.body):
            # RFC 3311 media changes by UPDATE are not supported: the fax media stays.
            self._respond(tx, request, 488, now)
            return
        call.in_dialog.refresh_target(request)
        if timer[0] is not None:
            call.session_interval, call.we_refresh = timer
        body = call.local_sdp if request.body else b""
        extra = [("Contact", self.requests.contact(call.peer.transport))] + session_headers_as_uas(call)
        self._respond(tx, request, 200, now, extra=extra, body=body or b"")
        self._arm_session_timer(call, now)
        self._events.append(SessionRefreshed(call))

    def _on_ack(self, ack: Request, now: float) -> None:
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
        self._timers.pop((UATimer.RETRANSMIT_2XX, call.id), None)
        self._timers.pop((UATimer.GIVE_UP_2XX, call.id), None)
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

    def _on_response(self, response: Response, now: float) -> None:
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

    def _process(self, outputs: list[TxOutput], now: float) -> None:
        for output in outputs:
            if isinstance(output, SendMessage):
                self._queue(output.message, output.transaction.destination, output.transaction)
            elif isinstance(output, ResponseReceived):
                self._on_tx_response(output.transaction, output.response, now)
            elif isinstance(output, (TransactionTimedOut, TransportFailed)):
                self._on_tx_failure(output.transaction, output, now)
            elif isinstance(output, TransactionTerminated):
                self._owners.pop(output.transaction, None)
                self._registering.pop(output.transaction, None)
            elif isinstance(output, AckReceived):
                pass

    def _on_tx_failure(self, tx: Transaction, failure: TransactionTimedOut | TransportFailed, now: float) -> None:
        reason = "timeout" if isinstance(failure, TransactionTimedOut) else "transport error"
        registration = self._registering.get(tx)
        if registration is not None:
            self._registration_step(registration, registration.on_failure(None, reason, now), now)
            return
        owner = self._owners.get(tx)
        if owner is None:
            return
        role, call = owner
        if role is Role.INVITE_OUT:
            if call.state is CallState.CALLING:
                self._end(call, reason, 408)
        elif role is Role.REINVITE_OUT:
            # RFC 3261 14.1 / 12.2.1.2: a timed-out re-INVITE ends the dialog.
            call.out_reinvite = None
            self._send_bye(call, now)
            self._end(call, f"re-INVITE {reason}", 408)
        elif role is Role.UPDATE_OUT:
            self._send_bye(call, now)
            self._end(call, f"session refresh {reason}", 408)
        elif role is Role.INVITE_IN:
            if call.state in (CallState.OFFERED, CallState.ANSWERED):
                self._end(call, reason)

    def _on_tx_response(self, tx: Transaction, response: Response, now: float) -> None:
        registration = self._registering.get(tx)
        if registration is not None:
            step = registration.on_response(response, now)
            if step is not None:
                self._registration_step(registration, step, now)
            return
        owner = self._owners.get(tx)
        if owner is None:
            return
        role, call = owner
        if role is Role.INVITE_OUT:
            self._on_invite_response(call, tx, response, now)
        elif role is Role.REINVITE_OUT:
            self._on_reinvite_response(call, tx, response, now)
        elif role is Role.UPDATE_OUT:
            self._on_update_response(call, response, now)

    def _on_invite_response(self, call: Call, tx: Transaction, response: Response, now: float) -> None:
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
            call.ack = call.in_dialog.build_request(
                "ACK", via=self.requests.via(call.peer.transport), contact=None, cseq=response.cseq[0]
            )
            self._queue(call.ack, self._dialog_destination(call))
            if call.cancel_requested or call.state is CallState.ENDED:
                # RFC 3261 9.1: the 2xx crossed our CANCEL; the call is ended with BYE.
                self._send_bye(call, now)
                self._end(call, "cancelled")
                return
            call.state = CallState.CONFIRMED
            call.remote_sdp = response.body or None
            call.peer_allows_update = "UPDATE" in method_tokens(response, "Allow")
            uac_session_timer(call, response)
            self._arm_session_timer(call, now)
            self._events.append(CallAnswered(call, response.body))
            return
        if status in (401, 407) and self._retry_with_auth(call, tx, response, now):
            return
        if status == 422 and self._retry_with_min_se(call, response, now):
            return
        if call.state is not CallState.ENDED:
            reason = "cancelled" if status == 487 else f"rejected {status}"
            self._end(call, reason, status)

    def _on_reinvite_response(self, call: Call, tx: Transaction, response: Response, now: float) -> None:
        status = response.status
        if status < 200:
            return
        if status < 300 and call.ack is not None and call.ack.cseq[0] == response.cseq[0]:
            # RFC 3261 13.2.2.4: a retransmitted 2xx only gets the same ACK again.
            self._queue(call.ack, self._dialog_destination(call))
            return
        offered = call.out_reinvite[1] if call.out_reinvite else call.local_sdp
        call.out_reinvite = None
        dialog = call.in_dialog
        if status < 300:
            ack = dialog.build_request(
                "ACK", via=self.requests.via(call.peer.transport), contact=None, cseq=response.cseq[0]
            )
            call.ack = ack
            self._queue(ack, self._dialog_destination(call))
            dialog.refresh_target(response)
            call.local_sdp = offered
            uac_session_timer(call, response)
            self._arm_session_timer(call, now)
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
            if dialog.is_caller:
                delay = self.rng.randint(210, 400) / 100
            else:
                delay = self.rng.randint(0, 200) / 100
            call.glare_retry_sdp = offered
            self._timers[(UATimer.GLARE, call.id)] = now + delay
            return
        if status in (401, 407) and call.credentials and self._retry_reinvite_with_auth(call, tx, response, offered or b"", now):
            return
        if status in (408, 481):
            # RFC 3261 12.2.1.2: the dialog is gone.
            self._send_bye(call, now)
            self._end(call, f"re-INVITE answered {status}", status)
            return
        self._events.append(ReinviteFailed(call, status, response.reason))

    def _on_update_response(self, call: Call, response: Response, now: float) -> None:
        if response.status < 200:
            return
        if response.status < 300:
            uac_session_timer(call, response)
            self._arm_session_timer(call, now)
            return
        if response.status == 491:
            self._timers[(UATimer.SESSION_REFRESH, call.id)] = now + self.rng.randint(0, 200) / 100
            return
        # A refresh that fails (RFC 4028 10) leaves no way to keep the session alive.
        self._send_bye(call, now)
        self._end(call, f"session refresh answered {response.status}", response.status)

    # -- session timers (RFC 4028) ---------------------------------------------

    def _arm_session_timer(self, call: Call, now: float) -> None:
        self._timers.pop((UATimer.SESSION_REFRESH, call.id), None)
        self._timers.pop((UATimer.SESSION_EXPIRE, call.id), None)
        if call.state is CallState.ENDED:
            return
        due = session_deadline(call, now)
        if due is not None:
            timer, deadline = due
            self._timers[(timer, call.id)] = deadline

    # -- timers ---------------------------------------------------------------

    def _fire(self, key: TimerKey, now: float) -> None:
        timer, owner = key
        if timer is UATimer.FLUSH_REFUSALS:
            self._events.extend(self._refusals.flush())
            return
        if timer is UATimer.REGISTER_REFRESH:
            registration = self.registrations.get(owner)
            if registration is not None:
                self._send_register(registration, now)
            return
        call = self.calls.get(owner)
        if call is None:
            return
        if call.state is CallState.ENDED and not (
            call.bye_after_ack and timer in (UATimer.RETRANSMIT_2XX, UATimer.GIVE_UP_2XX)
        ):
            return
        if timer is UATimer.OFFER:
            if call.state is CallState.OFFERED:
                self._respond(call.invite_transaction, call.invite, 480, now, to_tag=call.local_tag)
                self._end(call, "not answered", 480)
            return
        if timer is UATimer.RETRANSMIT_2XX and call.unacked is not None:
            tx, response, interval = call.unacked
            if tx.terminated:
                self._queue(response, tx.destination)
            else:
                self._process(tx.send_response(response, now), now)
            # RFC 3261 13.3.1.4: T1, doubling up to T2.
            interval = min(interval * 2, self.config.timers.t2)
            call.unacked = (tx, response, interval)
            self._timers[(UATimer.RETRANSMIT_2XX, call.id)] = now + interval
        elif timer is UATimer.GIVE_UP_2XX and call.unacked is not None:
            # 13.3.1.4: no ACK in 64*T1: the session SHOULD be terminated.
            call.unacked = None
            self._timers.pop((UATimer.RETRANSMIT_2XX, call.id), None)
            if call.bye_after_ack:
                self._finish_deferred_bye(call, now)
                return
            call.state = CallState.CONFIRMED
            self._send_bye(call, now)
            self._end(call, "no ACK")
        elif timer is UATimer.GLARE and call.glare_retry_sdp is not None:
            sdp, call.glare_retry_sdp = call.glare_retry_sdp, None
            if call.out_reinvite is None and call.pending_reinvite is None and call.unacked is None:
                self._send_reinvite(call, sdp, now)
            else:
                self._timers[(UATimer.GLARE, call.id)] = now + 1.0
        elif timer is UATimer.SESSION_REFRESH:
            self._refresh_session(call, now)
        elif timer is UATimer.SESSION_EXPIRE:
            self._send_bye(call, now)
            self._end(call, "session expired")

    def _refresh_session(self, call: Call, now: float) -> None:
        if call.out_reinvite is not None or call.pending_reinvite is not None or call.unacked is not None:
            self._timers[(UATimer.SESSION_REFRESH, call.id)] = now + 1.0
            return
        if call.peer_allows_update:
            # RFC 4028 7.4/9: UPDATE refreshes without touching the media.
            request = call.in_dialog.build_request(
                "UPDATE",
                via=self.requests.via(call.peer.transport),
                contact=self.requests.contact(call.peer.transport),
                extra_headers=session_headers_as_uac(call, session_expires=self.config.session_expires, min_se=self.config.min_se),
            )
            tx = self._start_client(request, self._dialog_destination(call), now)
            self._owners[tx] = (Role.UPDATE_OUT, call)
            self._timers.pop((UATimer.SESSION_REFRESH, call.id), None)
        else:
            # Same SDP, same o= version: a pure refresh (RFC 4028 7.4 with RFC 3264 8).
            self._send_reinvite(call, call.local_sdp or b"", now)

    # -- commands -------------------------------------------------------------

    def ring(self, call: Call, now: float) -> None:
        """Send 180 Ringing for an offered inbound call."""
        if call.state is not CallState.OFFERED:
            raise LocalProtocolError(f"cannot ring a call in state {call.state.value}")
        self._respond(call.invite_transaction, call.invite, 180, now, to_tag=call.local_tag,
                      extra=[("Contact", self.requests.contact(call.peer.transport))])

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
                self._timers.pop((UATimer.GLARE, call.id), None)
                self._events.append(ReinviteFailed(call, 491, "superseded by the peer's re-INVITE"))
            return
        if call.state is not CallState.OFFERED:
            raise LocalProtocolError(f"nothing to answer on a call in state {call.state.value}")
        self._set_dialog(call, Dialog.as_uas(call.invite, call.local_tag, secure=call.peer.transport == "tls"))
        call.state = CallState.ANSWERED
        self._timers.pop((UATimer.OFFER, call.id), None)
        self._answer_invite(call, call.invite, call.invite_transaction, sdp, now)

    def _answer_invite(self, call: Call, request: Request, tx: Transaction, sdp: bytes, now: float) -> None:
        call.local_sdp = sdp or call.local_sdp
        extra = [
            ("Contact", self.requests.contact(call.peer.transport)),
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Supported", ", ".join(SUPPORTED_OPTIONS)),
        ] + session_headers_as_uas(call)
        response = self._respond(tx, request, 200, now, extra=extra, body=sdp, to_tag=call.local_tag)
        # RFC 3261 13.3.1.4: the UAS core retransmits the 2xx until the ACK arrives.
        call.unacked = (tx, response, self.config.timers.t1)
        if not call.peer.reliable:
            self._timers[(UATimer.RETRANSMIT_2XX, call.id)] = now + self.config.timers.t1
        self._timers[(UATimer.GIVE_UP_2XX, call.id)] = now + 64 * self.config.timers.t1
        self._arm_session_timer(call, now)

    def reject(self, call: Call, status: int, now: float, *, reason: str | None = None,
               retry_after: int | None = None) -> None:
        """Refuse an offered call (status 300-699), or the peer's pending re-INVITE;
        ``retry_after`` (seconds) adds Retry-After (RFC 3261 20.33, e.g. to a 503)."""
        if not 300 <= status < 700:
            raise LocalProtocolError("reject needs a 3xx-6xx status")
        extra = [("Retry-After", str(retry_after))] if retry_after is not None else []
        if call.pending_reinvite is not None:
            request, tx = call.pending_reinvite
            call.pending_reinvite = None
            self._respond(tx, request, status, now, reason=reason, extra=extra)
            return
        if call.state is not CallState.OFFERED:
            raise LocalProtocolError(f"cannot reject a call in state {call.state.value}")
        self._respond(call.invite_transaction, call.invite, status, now, reason=reason, to_tag=call.local_tag,
                      extra=extra)
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
            self._timers[(UATimer.GLARE, call.id)] = now + 0.5
            return
        self._send_reinvite(call, sdp, now)

    def _send_reinvite(self, call: Call, sdp: bytes, now: float) -> None:
        request = call.in_dialog.build_request(
            "INVITE",
            via=self.requests.via(call.peer.transport),
            contact=self.requests.contact(call.peer.transport),
            body=sdp,
            extra_headers=[("Allow", ", ".join(ALLOWED_METHODS))] + session_headers_as_uac(call, session_expires=self.config.session_expires, min_se=self.config.min_se),
        )
        tx = self._start_client(request, self._dialog_destination(call), now)
        call.out_reinvite = (tx, sdp)
        self._owners[tx] = (Role.REINVITE_OUT, call)
        self._timers.pop((UATimer.SESSION_REFRESH, call.id), None)

    def hangup(self, call: Call, now: float) -> None:
        """End the call: CANCEL, BYE or a 480, whatever its state needs."""
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.OFFERED:
            self._respond(call.invite_transaction, call.invite, 480, now, to_tag=call.local_tag)
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
        self._start_client(build_cancel(call.invite), call.invite_transaction.destination, now)

    def _send_bye(self, call: Call, now: float) -> None:
        if call.dialog is None:
            return
        request = call.dialog.build_request("BYE", via=self.requests.via(call.peer.transport), contact=None)
        tx = self._start_client(request, self._dialog_destination(call), now)
        self._owners[tx] = (Role.BYE_OUT, call)

    def invite(
        self,
        uri: str,
        sdp: bytes,
        now: float,
        *,
        from_user: str | None = None,
        credentials: tuple[str, str] | None = None,
        transport: str | None = None,
        from_domain: str | None = None,
        proxy: str | None = None,
    ) -> Call:
        """Place an outbound call to ``uri`` offering ``sdp``; returns its handle.

        ``proxy`` (a sip:/sips: URI, ``;transport=`` honoured): the INVITE is sent there
        instead of to ``uri``'s host (an outbound proxy, RFC 3261 8.1.2), the Request-URI
        stays ``uri``.  ``credentials`` answer a 401/407 (RFC 3261 22.2)."""
        target = parse_uri(uri)
        if not isinstance(target, SipUri):
            raise LocalProtocolError(f"can only call sip:/sips: URIs, not {uri!r}")
        hop = parse_uri(proxy) if proxy else target
        destination = uri_destination(hop, transport)
        local_tag = self.requests.new_tag()
        request = self.requests.invite(target, destination, sdp, local_tag=local_tag, from_user=from_user,
                                       from_domain=from_domain)
        call_id = request.call_id
        call = Call(
            id=f"{call_id}/{local_tag}",
            direction=Direction.OUTBOUND,
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
        self._owners[call.invite_tx] = (Role.INVITE_OUT, call)
        return call

    def options(self, uri: str, now: float) -> None:
        """Send an out-of-dialog OPTIONS (a keep-alive / capability probe)."""
        target = parse_uri(uri)
        destination = uri_destination(target, None)
        self._start_client(self.requests.options(target, destination), destination, now)

    # -- auth (client) --------------------------------------------------------

    def _retry_with_auth(self, call: Call, tx: Transaction, response: Response, now: float) -> bool:
        if call.credentials is None or call.state is not CallState.CALLING:
            return False
        request = self.requests.authenticated_copy(call.invite, response, call.credentials, call)
        if request is None:
            return False
        call.invite = request
        call.invite_tx = self._start_client(request, tx.destination, now)
        self._owners[call.invite_tx] = (Role.INVITE_OUT, call)
        call.provisional_seen = False
        return True

    def _retry_reinvite_with_auth(self, call: Call, tx: Transaction, response: Response, sdp: bytes, now: float) -> bool:
        if call.credentials is None:
            return False
        request = self.requests.authenticated_copy(tx.request, response, call.credentials, call)
        if request is None:
            return False
        call.in_dialog.local_seq = request.cseq[0]
        new_tx = self._start_client(request, tx.destination, now)
        call.out_reinvite = (new_tx, sdp)
        self._owners[new_tx] = (Role.REINVITE_OUT, call)
        return True

    def _retry_with_min_se(self, call: Call, response: Response, now: float) -> bool:
        # RFC 4028 7.4/8: retry with Session-Expires raised to the peer's Min-SE.
        min_se = response.headers.get("Min-SE")
        if min_se is None or call.auth_tries > 4 or call.state is not CallState.CALLING:
            return False
        value = min_se.split(";")[0].strip()
        if not value.isdigit():
            return False
        call.auth_tries += 1
        request = self.requests.copy_for_retry(call.invite)
        request.headers.set("Session-Expires", value)
        request.headers.set("Min-SE", value)
        call.invite = request
        call.invite_tx = self._start_client(request, call.invite_transaction.destination, now)
        self._owners[call.invite_tx] = (Role.INVITE_OUT, call)
        return True

    # -- registration ---------------------------------------------------------

    def register(self, trunk: Trunk, now: float) -> Registration:
        """Register to ``trunk`` now and keep the registration refreshed."""
        registration = self.registrations.get(trunk.name)
        if registration is None:
            host, _ = self.requests.local(trunk.transport or "udp")
            registration = Registration(trunk, self.rng, call_id=self.requests.new_call_id(host), local_tag=self.requests.new_tag())
            self.registrations[trunk.name] = registration
        self._send_register(registration, now)
        return registration

    def unregister(self, trunk_name: str, now: float) -> None:
        """Remove our binding (Expires: 0) and stop refreshing."""
        registration = self.registrations.pop(trunk_name, None)
        if registration is None:
            return
        self._timers.pop((UATimer.REGISTER_REFRESH, trunk_name), None)
        registration.expires_wanted = 0
        self._send_register(registration, now, track=False)

    def _send_register(self, registration: Registration, now: float, *, track: bool = True) -> None:
        target = parse_uri(registration.trunk.registrar)
        destination = uri_destination(target, registration.trunk.transport)
        request = registration.build_request(
            via=self.requests.via(destination.transport),
            contact=self.requests.contact(destination.transport, user=registration.trunk.contact_user),
            host=self.requests.local(destination.transport)[0],
        )
        tx = self._start_client(request, destination, now)
        if track:
            self._registering[tx] = registration

    def _registration_step(self, registration: Registration, step: RegisterStep, now: float) -> None:
        name = registration.trunk.name
        if isinstance(step, Resend):
            self._send_register(registration, now)
        elif isinstance(step, Granted):
            self._timers[(UATimer.REGISTER_REFRESH, name)] = step.refresh_at
            self._events.append(RegistrationSucceeded(name, step.expires))
        else:
            self._timers[(UATimer.REGISTER_REFRESH, name)] = now + step.retry_in
            self._events.append(RegistrationFailed(name, step.status, step.reason, step.retry_in))

    # -- plumbing -------------------------------------------------------------

    def _end(self, call: Call, reason: str, status: int | None = None) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.end_reason = reason
        for name in ("refresh", "expire", "glare", "offer"):
            self._timers.pop((call.id, name), None)
        if not call.bye_after_ack:
            self._timers.pop((UATimer.RETRANSMIT_2XX, call.id), None)
            self._timers.pop((UATimer.GIVE_UP_2XX, call.id), None)
            self._drop_call(call)
        self._events.append(CallTerminated(call, reason, status))

    def _respond(
        self,
        tx: Transaction,
        request: Request,
        status: int,
        now: float,
        *,
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        reason: str | None = None,
        to_tag: str | None = None,
    ) -> Response:
        if to_tag is None and status > 100 and request.to.tag is None:
            to_tag = self.requests.new_tag()  # RFC 3261 8.2.6.2: every non-100 response gets a To tag
        response = make_response(request, status, reason, to_tag=to_tag)
        for name, value in extra:
            response.headers.add(name, value)
        response.headers.add("Server", self.config.user_agent)
        if body:
            response.headers.add("Content-Type", "application/sdp")
            response.body = body
        self._process(tx.send_response(response, now), now)
        return response

    def _start_client(self, request: Request, destination: Address, now: float) -> Transaction:
        tx, outputs = self.transactions.start_client(request, destination, reliable=destination.reliable, now=now)
        self._process(outputs, now)
        return tx

    def _queue(self, message: Request | Response, destination: Address, transaction: Transaction | None = None) -> None:
        self._outgoing.append(Outgoing(destination, message, message.to_bytes(), transaction))

    def _stamp_via(self, request: Request, source: Address) -> None:
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

    def _reply_address(self, request: Request, source: Address) -> Address:
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

    def _refuse_forked_dialog(self, call: Call, response: Response, now: float) -> None:
        self.stats["forked_2xx"] += 1
        dialog = Dialog.as_uac(call.invite, response)
        destination = self._dialog_destination(call, dialog)
        ack = dialog.build_request("ACK", via=self.requests.via(destination.transport), contact=None, cseq=response.cseq[0])
        self._queue(ack, destination)
        bye = dialog.build_request("BYE", via=self.requests.via(destination.transport), contact=None)
        self._start_client(bye, destination, now)

    def _dialog_destination(self, call: Call, dialog: Dialog | None = None) -> Address:
        """Where in-dialog requests go: the first route or the remote target (12.2.1.1).

        For a call that arrived over TCP/TLS the connection it came on is offered for
        reuse (RFC 3261 18); the edge falls back to connecting to the target.
        """
        uri, routes = (dialog or call.in_dialog).request_target()
        target = parse_name_addr(routes[0]).uri if routes else parse_uri(uri)
        transport = (target.transport if isinstance(target, SipUri) else None) or call.peer.transport
        destination = uri_destination(target, transport)
        if call.peer.reliable and call.direction is Direction.INBOUND and transport == call.peer.transport:
            destination = Address(destination.transport, destination.host, destination.port, call.peer.connection)
        return destination
