"""The gateway service: SIP in, T.38 media, pages to the archive, webhooks out.

``Gateway.run`` binds everything first - SIP listeners, the HTTP API - and only then
reports itself started; a bind failure raises before any call is accepted, so a bad
address never leaves a half-working gateway.  Then it runs, all in one nursery:

* the SIP endpoint (``sip.transport``) and a pump that turns UA events into call
  decisions (``_on_sip_event``): allow-list/auth is the UA's; routing, reject (603),
  shutting down (503), answering T.38 directly or audio first, our re-INVITE after
  ``t38_reinvite_after``, the peer's re-INVITE, hang-ups;
* one task per call: the ``FaxSession`` (UDPTL endpoint <-> T.30 <-> archive) plus a
  watcher that sends BYE when the fax is over;
* the webhook delivery worker draining the durable spool;
* the HTTP API (hypercorn, trio worker).

``shutdown()`` (SIGTERM) stops accepting calls (503), lets running faxes finish for up
to ``shutdown_grace`` seconds, ends the rest (their confirmed pages are kept as
``partial``), gives the spool one last pass and returns.  Nothing is lost to SIGKILL
either: pages and meta.json are on disk as they are confirmed and webhooks are in the
SQLite spool before anyone tries to send them (``t38gw.faxrecord``).
"""

from __future__ import annotations

import ipaddress
import random
import signal
import socket as _socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import trio

from sip import sdp as sdpmod
from sip.errors import LocalProtocolError as SipLocalProtocolError
from sip.errors import RemoteProtocolError as SipRemoteProtocolError
from sip.errors import SipParseError
from sip.message import parse_name_addr
from sip.registration import Trunk as SipTrunk
from sip.transport import ListenSpec, SipEndpoint, server_ssl_context
from sip.ua import (
    CallEnded,
    CallEstablished,
    IncomingCall,
    MediaChanged,
    RegistrationFailed,
    RegistrationSucceeded,
    ReinviteFailed,
    RequestRefused,
    SessionRefreshed,
    UAConfig,
    UserAgent,
)
from sip.uri import parse_uri
from udptl.endpoint import PortPool, PortsExhausted

from t38gw.api import AuditLog, FaxIndex, create_app, hypercorn_tls
from t38gw.archive import iter_faxes, read_meta
from t38gw.config import Config
from t38gw.delivery import DeliveryWorker
from t38gw.faxrecord import InboundFax, enqueue_planned, plan_deliveries, record_outcome, recover_archive, webhooks_for
from t38gw.ids import new_fax_id
from t38gw.metrics import GatewayMetrics
from t38gw.routing import CallFacts, facts_of_call, route_after_phase_b, route_at_invite
from t38gw.sanitize import call_identity
from t38gw.session import FaxSession, T38Session
from t38gw.spool import DeliveryState, Spool, SpoolError
from t38gw.t30 import Compression, ReceiveCapabilities, ReceiverConfig

log = structlog.get_logger("t38gw.gateway")

SHUTDOWN_GRACE_SECONDS = 120.0
FINAL_FLUSH_SECONDS = 10.0
_EC_TO_SDP = {"redundancy": sdpmod.UDP_EC_REDUNDANCY, "fec": sdpmod.UDP_EC_FEC, "none": sdpmod.UDP_EC_NONE}
_SDP_TO_EC = {v: k for k, v in _EC_TO_SDP.items()}
_WILDCARD = ("0.0.0.0", "::", "")


class StartupError(Exception):
    """The gateway could not start (a port is taken, a certificate is unreadable...)."""


@dataclass
class _Call:
    sip_call: Any
    session: FaxSession
    local_host: str
    sdp_session_id: int
    sdp_version: int = 0
    t38: bool = False
    reinvite_sent: bool = False

    def next_sdp_version(self) -> int:
        self.sdp_version += 1
        return self.sdp_version


@dataclass
class Gateway:
    config: Config
    shutdown_grace: float = SHUTDOWN_GRACE_SECONDS
    rng: random.Random = field(default_factory=random.SystemRandom)

    def __post_init__(self) -> None:
        config = self.config
        self.accepting = True
        self.archive_root = Path(config.archive.dir)
        try:
            self.spool = Spool(config.spool, rng=self.rng)
        except SpoolError as exc:
            raise StartupError(f"spool: {exc}") from None
        try:
            self.audit_log = AuditLog(config.archive.audit_log)
        except OSError as exc:
            self.spool.close()
            raise StartupError(f"archive.audit_log: cannot open {config.archive.audit_log}: {exc}") from None
        self.metrics = GatewayMetrics(spool_depth=self.spool.depth)
        self.index = FaxIndex(self.archive_root)
        self.worker = DeliveryWorker(self.spool, {w.name: w.secret for w in config.webhooks},
                                     on_outcome=self._delivery_outcome,
                                     on_spool_recovered=self._spool_recovered)
        self.ua = UserAgent(self._ua_config(), rng=self.rng)
        ssl_context = None
        if any(lst.transport == "tls" for lst in config.sip.listen):
            try:
                ssl_context = server_ssl_context(config.sip.tls.certificate, config.sip.tls.private_key)
            except (OSError, ValueError) as exc:
                raise StartupError(f"sip.tls: cannot load certificate/key: {exc}") from None
        self.sip = SipEndpoint(self.ua, [ListenSpec(lst.transport, lst.host, lst.port) for lst in config.sip.listen],
                               ssl_context=ssl_context)
        udp_hosts = [lst.host for lst in config.sip.listen if lst.host not in _WILDCARD]
        pool_host = udp_hosts[0] if udp_hosts and len(set(udp_hosts)) == 1 else "0.0.0.0"
        self.ports = PortPool(*config.t38.udptl_ports, host=pool_host, rng=self.rng)
        self.calls: dict[str, _Call] = {}
        self.ringing: set[str] = set()  # SIP call ids ringing before we answer (answer_after)
        self.sessions: set[FaxSession] = set()
        self._nursery: trio.Nursery | None = None
        self.api_bound: list[str] = []

    # -- set-up -----------------------------------------------------------------
    def _ua_config(self) -> UAConfig:
        sip = self.config.sip
        listen = {}
        for lst in sip.listen:
            host = lst.host
            if host in _WILDCARD:
                host = sip.public_address or _primary_address()
            listen.setdefault(lst.transport, (host, lst.port))
        return UAConfig(listen=listen, public_host=sip.public_address, user="t38gw", user_agent="t38gw",
                        allow_from=tuple(str(net) for net in sip.allow_from),
                        auth_users={user.username: user.password for user in sip.users},
                        auth_algorithms=sip.auth_algorithms)

    def receiver_config(self) -> ReceiverConfig:
        fax, t38 = self.config.fax, self.config.t38
        modems = {"V.27ter"}
        if t38.max_bitrate >= 9600:
            modems.add("V.29")
        if t38.max_bitrate >= 14400:
            modems.add("V.17")
        capabilities = ReceiveCapabilities(modems=frozenset(modems), ecm=fax.ecm,
                                           compressions=frozenset(Compression(c) for c in fax.compressions))
        return ReceiverConfig(local_ident=fax.local_ident, capabilities=capabilities)

    def local_t38(self) -> sdpmod.T38Params:
        t38 = self.config.t38
        return sdpmod.T38Params(version=max(t38.versions), max_bitrate=min(t38.max_bitrate, 14400),
                                rate_management="transferredTCF", max_datagram=t38.max_datagram,
                                udp_ec=_EC_TO_SDP[t38.error_correction])

    # -- running ----------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Recover the archive, bind everything, report started, serve until cancelled."""
        counts = await trio.to_thread.run_sync(recover_archive, self.archive_root, self.spool, self.config)
        if counts["closed"] or counts["requeued"]:
            log.warning("archive_recovered", faxes_closed=counts["closed"], webhooks_requeued=counts["requeued"])
        self.index.refresh()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await nursery.start(self.sip.serve)
                except BaseException as exc:
                    error = _find(exc, OSError)
                    if error is None:
                        raise
                    raise StartupError(f"sip.listen: cannot bind {_listeners(self.config)}: "
                                       f"{error.strerror or error}") from None
                try:
                    self.api_bound = await nursery.start(self._serve_api)
                except BaseException as exc:
                    error = _find(exc, OSError)
                    if error is None:
                        raise
                    host, port = self.config.http.listen
                    raise StartupError(f"http.listen: cannot bind {host}:{port}: {error.strerror or error}") from None
                try:
                    probe = await self.ports.open()  # a pool that can never bind fails now, not per call
                    probe.close()
                except (OSError, PortsExhausted) as exc:
                    raise StartupError(f"t38.udptl_ports: cannot bind any port of {self.ports.low}-{self.ports.high}"
                                       f" on {self.ports.host}: {exc}") from None
                nursery.start_soon(self._pump_sip)
                nursery.start_soon(self.worker.run)
                for trunk in self.config.sip.trunks:
                    self.sip.command(self.ua.register, SipTrunk(trunk.name, trunk.registrar, trunk.username,
                                                                trunk.password, trunk.expires))
                log.info("gateway_started", sip={t: f"{h}:{p}" for t, (h, p) in self.sip.bound.items()},
                         api=self.api_bound, udptl_ports=f"{self.ports.low}-{self.ports.high}",
                         archive=str(self.archive_root), spool=str(self.config.spool),
                         webhooks=[w.name for w in self.config.webhooks])
                task_status.started(self)
        finally:
            self.spool.close()
            self.audit_log.close()

    async def _serve_api(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config as HyperConfig
        from hypercorn.trio import serve

        host, port = self.config.http.listen
        hyper = HyperConfig()
        hyper.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        hyper.accesslog = None
        hyper.errorlog = None
        hyper.graceful_timeout = 2.0
        for name, value in hypercorn_tls(self.config.http).items():
            setattr(hyper, name, value)  # certfile, keyfile: HTTPS
        app = create_app(self.index, self.metrics, self.config.http.tokens, audit_log=self.audit_log)
        await serve(app, hyper, task_status=task_status)

    async def shutdown(self) -> None:
        """Graceful stop: 503 new calls, let faxes finish (bounded), flush, then cancel."""
        self.accepting = False
        log.info("shutdown_started", active_calls=len(self.sessions), grace_seconds=self.shutdown_grace)
        with trio.move_on_after(self.shutdown_grace):
            while self.sessions:
                await next(iter(self.sessions)).done.wait()
        for session in list(self.sessions):
            session.fail("the gateway was shut down during the call")
        with trio.move_on_after(15.0):
            while self.sessions:
                await next(iter(self.sessions)).done.wait()
        await trio.sleep(0.3)  # let the last BYEs leave
        with trio.move_on_after(FINAL_FLUSH_SECONDS):
            await self.worker.flush()
        log.info("shutdown_finished", spool_depth=self.spool.depth())
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- SIP events ---------------------------------------------------------------
    async def _pump_sip(self) -> None:
        async for event in self.sip.events:
            call = getattr(event, "call", None)
            try:
                await self._on_sip_event(event)
            except (SipLocalProtocolError, SipRemoteProtocolError) as exc:
                log.warning("sip_event_not_handled", event=type(event).__name__, error=str(exc),
                            call_id=getattr(call, "call_id", None))
            except Exception:
                # One call's surprise must not take every other call down with it: log it
                # with its traceback, refuse or end that call, keep serving.
                log.exception("sip_event_failed", event=type(event).__name__, call_id=getattr(call, "call_id", None))
                self._contain(event)

    def _contain(self, event: Any) -> None:
        call = getattr(event, "call", None)
        if call is None:
            return
        try:
            if isinstance(event, IncomingCall) and call.state.value == "offered":
                self._refuse(call, 500)
            elif call.id in self.calls:
                self.calls[call.id].session.fail("internal error handling a SIP event (see the log)")
        except Exception:
            log.exception("sip_event_containment_failed", call_id=getattr(call, "call_id", None))

    async def _on_sip_event(self, event: Any) -> None:
        if isinstance(event, IncomingCall):
            await self._incoming(event)
            return
        if isinstance(event, (RegistrationSucceeded, RegistrationFailed)):
            level = log.info if isinstance(event, RegistrationSucceeded) else log.warning
            level("registration_" + ("ok" if isinstance(event, RegistrationSucceeded) else "failed"),
                  trunk=event.trunk, **{k: getattr(event, k) for k in ("expires", "status", "reason", "retry_in")
                                        if hasattr(event, k)})
            return
        if isinstance(event, RequestRefused):
            # The UA already throttled these (one per source and reason per second, the
            # rest counted in ``suppressed``), so a flood cannot flood the log.
            self.metrics.sip_refused.labels(reason=event.reason).inc(1 + event.suppressed)
            level = log.info if event.reason == "auth_required" else log.warning
            level("sip_request_refused", source=event.source.host, port=event.source.port,
                  transport=event.source.transport, method=event.method, status=event.status,
                  reason=event.reason, suppressed=event.suppressed)
            return
        call_id = getattr(getattr(event, "call", None), "id", None)
        if isinstance(event, CallEnded) and call_id in self.ringing:
            self.ringing.discard(call_id)
            log.info("call_cancelled_while_ringing", call_id=event.call.call_id, reason=event.reason)
            return
        call = self.calls.get(call_id)
        if call is None:
            return
        bound = log.bind(call_id=call.sip_call.call_id, fax_id=call.session.record.fax_id)
        if isinstance(event, CallEstablished):
            bound.info("sip_call_established", t38=call.t38)
            after = self.config.sip.t38_reinvite_after
            if not call.t38 and after >= 0:
                self._nursery.start_soon(self._reinvite_later, call, after)
        elif isinstance(event, MediaChanged):
            self._media_changed(call, event, bound)
        elif isinstance(event, ReinviteFailed):
            bound.warning("t38_reinvite_refused", status=event.status, reason=event.reason)
            call.session.fail(f"the peer refused our T.38 re-INVITE ({event.status} {event.reason})")
        elif isinstance(event, SessionRefreshed):
            bound.debug("sip_session_refreshed")
        elif isinstance(event, CallEnded):
            bound.info("sip_call_ended", reason=event.reason, status=event.status)
            self.calls.pop(event.call.id, None)
            call.session.sip_ended(event.reason)

    async def _incoming(self, event: IncomingCall) -> None:
        sip_call = event.call
        did = _user_of(event.request_uri)
        pai = sip_call.invite.headers.get("P-Asserted-Identity") if sip_call.invite is not None else None
        caller = _user_of_name_addr(pai) or _user_of_name_addr(event.from_)
        trunk = self._trunk_of(event)
        bound = log.bind(call_id=sip_call.call_id)
        refusal = self._admission_refusal()
        if refusal is not None:
            bound.warning("call_refused", reason=refusal, status=503, did=did, caller=caller)
            self._refuse(sip_call, 503)
            return
        route_index, route = route_at_invite(self.config.routes, CallFacts(did=did, caller=caller, trunk=trunk))
        if route.reject:
            bound.info("call_refused", reason=f"routes[{route_index}] rejects", status=603, did=did, caller=caller)
            self._refuse(sip_call, 603)
            return
        try:
            offer = sdpmod.parse_sdp(event.offer) if event.offer else None
        except SipParseError as exc:
            bound.info("call_refused", reason=f"bad SDP: {exc}", status=488)
            self._refuse(sip_call, 488)
            return
        if offer is not None and sdpmod.find_t38_stream(offer) is None and sdpmod.find_audio_stream(offer) is None:
            bound.info("call_refused", reason="no T.38 or G.711 offered", status=488)
            self._refuse(sip_call, 488)
            return
        accept = (event, bound, did, caller, trunk, route_index, route, offer)
        if self.config.sip.answer_after > 0:
            # Ring first (some PBXs and carriers expect it, and it gives a CANCEL room), in a
            # task of its own so other calls' SIP events keep flowing meanwhile.
            self.sip.command(self.ua.ring, sip_call)
            self.ringing.add(sip_call.id)
            bound.info("call_ringing", did=did, caller=caller, answer_after=self.config.sip.answer_after)
            self._nursery.start_soon(self._accept_after_ringing, accept)
            return
        await self._accept(*accept)

    async def _accept_after_ringing(self, accept: tuple) -> None:
        event, bound = accept[0], accept[1]
        await trio.sleep(self.config.sip.answer_after)
        if event.call.id not in self.ringing:
            return  # cancelled while ringing (CallEnded took it out)
        self.ringing.discard(event.call.id)
        if not self.accepting:
            bound.info("call_refused", reason="shutting down", status=503)
            self._refuse(event.call, 503)
            return
        try:
            await self._accept(*accept)
        except (SipLocalProtocolError, SipRemoteProtocolError) as exc:
            bound.warning("sip_event_not_handled", event="IncomingCall", error=str(exc))
        except Exception:
            bound.exception("sip_event_failed", event="IncomingCall")
            self._contain(event)

    async def _accept(self, event: IncomingCall, bound, did: str, caller: str, trunk: str,
                      route_index: int | None, route, offer) -> None:
        sip_call = event.call
        try:
            endpoint = await self.ports.open()
        except PortsExhausted as exc:
            bound.error("call_refused", reason=str(exc), status=503)
            self._refuse(sip_call, 503)
            return
        started = time.time()
        fax_id = new_fax_id(started, self.rng)
        record = InboundFax(
            fax_id=fax_id, started_at=started, root=self.archive_root, formats=self.config.archive.formats,
            sip=call_identity(call_id=sip_call.call_id, from_=event.from_, to=event.to, did=did, caller=caller,
                              remote_addr=f"{event.source.host}:{event.source.port}", trunk=trunk),
            route_index=route_index, route=route, local_ident=self.config.fax.local_ident,
        )
        session = FaxSession(record=record, endpoint=endpoint, receiver_config=self.receiver_config(),
                             t38_settings=self.config.t38, rng=self.rng, write_record=self._write_record,
                             finish_record=self._finish_record, metrics=self.metrics, reroute=self._reroute,
                             max_call_seconds=self.config.limits.max_call_seconds)
        local_host = self.config.sip.public_address or _local_address_toward(event.source.host)
        call = _Call(sip_call, session, local_host, self.rng.randint(1, 2**31))
        bound = bound.bind(fax_id=fax_id)
        bound.info("call_incoming", did=did, caller=caller, trunk=trunk, route=record.route_name,
                   source=f"{event.source.host}:{event.source.port}", transport=event.transport,
                   offer="none (delayed offer)" if offer is None
                   else "t38" if sdpmod.find_t38_stream(offer) is not None else "audio")
        try:
            if offer is None:
                # RFC 3261 13.2.1: an INVITE without SDP gets our offer in the 2xx and the
                # caller's answer in the ACK (arrives as MediaChanged(needs_answer=False)).
                # A fax gateway offers T.38 straight away.
                answer = self._offer_t38(call)
            elif sdpmod.find_t38_stream(offer) is not None:
                answer = self._answer_t38(call, offer)
            else:
                answer = self._answer_audio(call, offer)
        except SipRemoteProtocolError as exc:
            endpoint.close()
            bound.info("call_refused", reason=str(exc), status=488)
            self._refuse(sip_call, 488)
            return
        try:
            self.sip.command(self.ua.answer, sip_call, answer)
        except SipLocalProtocolError as exc:
            # The caller gave up (CANCEL) while we were taking a port.
            endpoint.close()
            bound.info("call_gone_before_answer", error=str(exc))
            return
        self.calls[sip_call.id] = call
        self.sessions.add(session)
        self.metrics.active_calls.inc()
        self._nursery.start_soon(self._run_call, call)

    def _admission_refusal(self) -> str | None:
        """Why a new call cannot be taken now (503), or None.

        A call we cannot finish properly is worse than one refused: the sender's machine
        retries a 503 later, but a fax we answer and then cannot store is lost to it.
        """
        if not self.accepting:
            return "shutting down"
        limit = self.config.limits.max_calls
        if len(self.sessions) + len(self.ringing) >= limit:
            return f"limits.max_calls ({limit}) calls in progress"
        if not getattr(self.spool, "healthy", True):
            return f"the webhook spool cannot be written ({getattr(self.spool, 'last_error', '')})"
        return None

    def _refuse(self, sip_call, status: int) -> None:
        self.metrics.calls.labels(result=f"refused_{status}").inc()
        self.sip.command(self.ua.reject, sip_call, status)

    def _trunk_of(self, event: IncomingCall) -> str:
        for trunk in self.config.sip.trunks:
            try:
                if parse_uri(trunk.registrar).host_address == event.source.host:
                    return trunk.name
            except (SipParseError, AttributeError):
                continue
        return event.transport

    def _answer_t38(self, call: _Call, offer: sdpmod.SessionDescription) -> bytes:
        answer, negotiated = sdpmod.make_t38_answer(
            offer, call.local_host, call.session.endpoint.port, self.local_t38(),
            session_id=call.sdp_session_id, session_version=call.next_sdp_version(), username="t38gw")
        media = sdpmod.find_t38_stream(offer)
        offered = sdpmod.T38Params.from_attributes(media.attributes)
        self._start_t38(call, offer, media, negotiated, offered.max_datagram)
        return answer.to_bytes()

    def _offer_t38(self, call: _Call) -> bytes:
        offer = sdpmod.make_t38_offer(call.local_host, call.session.endpoint.port, self.local_t38(),
                                      session_id=call.sdp_session_id, session_version=call.next_sdp_version(),
                                      username="t38gw")
        return offer.to_bytes()

    def _answer_audio(self, call: _Call, offer: sdpmod.SessionDescription) -> bytes:
        # The audio leg shares the UDPTL port: nothing is played, and the port is ready
        # when the call turns into T.38 (RTP arriving meanwhile is dropped as undecodable).
        answer, _ = sdpmod.make_audio_answer(offer, call.local_host, call.session.endpoint.port,
                                             session_id=call.sdp_session_id,
                                             session_version=call.next_sdp_version(), username="t38gw")
        return answer.to_bytes()

    def _start_t38(self, call: _Call, sdp: sdpmod.SessionDescription, media, negotiated: sdpmod.T38Params,
                   peer_max_datagram: int | None) -> None:
        remote_host = sdp.address_of(media) or call.sip_call.peer.host
        call.t38 = True
        call.session.t38_ready(T38Session(
            remote=(remote_host, media.port), version=negotiated.version, max_bitrate=negotiated.max_bitrate,
            error_correction=_SDP_TO_EC.get(negotiated.udp_ec, "none"),
            rate_management=negotiated.rate_management,
            # T.38 D.2.3: T38FaxMaxDatagram is what the peer can receive; absent (or 0), use
            # the 400 every deployed stack takes, as Asterisk does.  A small value is honoured:
            # the sender trims error correction (Asterisk's calculate_far_max_ifp) and the
            # session splits HDLC frames to fit.  Below 32 octets not even a split frame
            # fits with its headers, so such a value is taken as 32.
            peer_max_datagram=max(peer_max_datagram or 400, 32),
            media_latching=self._media_latching(call),
            expected_host=media_source_host(remote_host, call.sip_call.peer.host),
        ))

    def _media_latching(self, call: _Call) -> str:
        """``strict`` or ``learn`` for this call: its trunk's setting, else ``[sip]``'s."""
        trunk = call.session.record.sip.get("trunk", "")
        for configured in self.config.sip.trunks:
            if configured.name == trunk and configured.media_latching:
                return configured.media_latching
        return self.config.sip.media_latching

    def _media_changed(self, call: _Call, event: MediaChanged, bound) -> None:
        try:
            remote = sdpmod.parse_sdp(event.remote_sdp)
        except SipParseError as exc:
            if event.needs_answer:
                self.sip.command(self.ua.reject, call.sip_call, 488)
            bound.warning("bad_remote_sdp", error=str(exc))
            return
        media = sdpmod.find_t38_stream(remote)
        if event.needs_answer:
            if media is None:
                # Back to audio (typically after the fax): accept; the fax side ends by T.30.
                bound.info("peer_reinvite", to="audio")
                try:
                    self.sip.command(self.ua.answer, call.sip_call, self._answer_audio(call, remote))
                except SipRemoteProtocolError:
                    self.sip.command(self.ua.reject, call.sip_call, 488)
                return
            bound.info("peer_reinvite", to="t38")
            self.sip.command(self.ua.answer, call.sip_call, self._answer_t38(call, remote))
            return
        if media is None:
            call.session.fail("the peer answered our T.38 re-INVITE without T.38")
            return
        answered = sdpmod.T38Params.from_attributes(media.attributes)
        bound.info("t38_reinvite_accepted" if call.reinvite_sent else "t38_answer_in_ack")
        self._start_t38(call, remote, media, answered, answered.max_datagram)

    async def _reinvite_later(self, call: _Call, delay: float) -> None:
        await trio.sleep(delay)
        if call.t38 or call.reinvite_sent or call.sip_call.id not in self.calls:
            return
        call.reinvite_sent = True
        offer = sdpmod.make_t38_offer(call.local_host, call.session.endpoint.port, self.local_t38(),
                                      session_id=call.sdp_session_id, session_version=call.next_sdp_version(),
                                      username="t38gw")
        log.info("t38_reinvite_sent", call_id=call.sip_call.call_id, fax_id=call.session.record.fax_id)
        try:
            self.sip.command(self.ua.reinvite, call.sip_call, offer.to_bytes())
        except SipLocalProtocolError as exc:
            call.session.fail(f"could not re-INVITE to T.38: {exc}")

    async def _run_call(self, call: _Call) -> None:
        session = call.session

        async def hang_up_when_done() -> None:
            await session.hangup_requested.wait()
            if call.sip_call.id in self.calls:
                self.calls.pop(call.sip_call.id, None)
                log.info("sip_hangup_sent", call_id=call.sip_call.call_id, fax_id=session.record.fax_id)
                try:
                    self.sip.command(self.ua.hangup, call.sip_call)
                except SipLocalProtocolError:
                    pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hang_up_when_done)
                await session.run()
                session.hangup_requested.set()
        except Exception:
            # E.g. the archive disk failed at the final write: this call is lost to the log,
            # the others carry on.  Pages written before are recovered at the next start.
            log.exception("call_task_failed", call_id=call.sip_call.call_id, fax_id=session.record.fax_id)
        finally:
            self.sessions.discard(session)
            self.metrics.active_calls.dec()

    def _reroute(self, session: FaxSession, tsi: str) -> None:
        record = session.record
        sip = record.sip
        index, route = route_after_phase_b(self.config.routes, facts_of_call(sip, tsi=tsi))
        if index != record.route_index and not route.reject:
            record.reroute(index, route)
            log.info("call_rerouted_by_tsi", call_id=sip.get("call_id"), fax_id=record.fax_id, tsi=tsi,
                     route=record.route_name)

    # -- archive and webhooks ------------------------------------------------------
    async def _write_record(self, record: InboundFax, pages, meta) -> None:
        await trio.to_thread.run_sync(record.write, pages, meta)
        self.index.add(record.fax_id, record.folder)

    async def _finish_record(self, session: FaxSession) -> None:
        record = session.record
        now = time.time()
        plan_deliveries(record.meta, webhooks_for(self.config, record.route), now, self.rng)
        pages, meta = record.snapshot()
        try:
            await self._write_record(record, pages, meta)
        except OSError as exc:
            log.error("archive_write_failed", fax_id=record.fax_id, error=str(exc))
            return
        enqueue_planned(self.spool, record.folder, meta, self.config, now)
        self.worker.nudge()
        status = meta["status"]
        self.metrics.calls.labels(result=status).inc()
        t38 = meta["t38"]
        self.metrics.udptl_received.inc(t38["packets_received"])
        self.metrics.udptl_lost.inc(t38["packets_lost"])
        self.metrics.udptl_foreign.inc(session.endpoint.stats.foreign_source)
        receiver = session.endpoint.receiver
        if receiver is not None:
            self.metrics.udptl_recovered.labels(method="redundancy").inc(receiver.stats.recovered_redundancy)
            self.metrics.udptl_recovered.labels(method="fec").inc(receiver.stats.recovered_fec)
        if session.t30_started_at is not None:
            ended = session.t30_ended_at or trio.current_time()
            self.metrics.t30_duration.labels(result=status).observe(ended - session.t30_started_at)

    def _spool_recovered(self) -> None:
        """The spool can be written again: spool what finished faxes still plan (in a thread)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._respool)

    async def _respool(self) -> None:
        count = await trio.to_thread.run_sync(self._respool_planned)
        if count:
            log.warning("webhooks_respooled", count=count)
            self.worker.nudge()

    def _respool_planned(self) -> int:
        # Not recover_archive: that would close faxes that are still running.
        count = 0
        for folder in iter_faxes(self.archive_root):
            try:
                meta = read_meta(folder)
            except (OSError, ValueError):
                continue
            if not meta.get("in_progress"):
                count += enqueue_planned(self.spool, folder, meta, self.config, time.time())
        return count

    def _delivery_outcome(self, delivery, state: DeliveryState, error: str) -> None:
        result = {DeliveryState.DELIVERED: "delivered", DeliveryState.DEAD: "dead"}.get(state, "failed")
        self.metrics.webhook_deliveries.labels(result=result).inc()
        folder = self.index.folder(delivery.fax_id)
        if folder is not None:
            record_outcome(folder, delivery.id, state.value, delivery.attempts + 1, error, time.time())


def _listeners(config: Config) -> str:
    return ", ".join(map(str, config.sip.listen))


def _user_of(uri_text: str | None) -> str:
    if not uri_text:
        return ""
    try:
        return parse_uri(uri_text).user or ""
    except (SipParseError, ValueError):
        return ""


def _user_of_name_addr(value: str | None) -> str:
    if not value:
        return ""
    try:
        return parse_name_addr(value).uri.user or ""
    except (SipParseError, ValueError, AttributeError):
        return ""


def media_source_host(sdp_host: str, sip_source_host: str) -> str:
    """The host UDPTL must come from: the SDP's, unless it names an address that cannot be
    reached from here (private, link-local, unspecified) while the SIP request came from a
    public one - a caller behind NAT, whose media will come from its NAT's public address,
    the one its SIP came from.  (``strict`` media then accepts that host only; hardening
    review item 1.)"""
    try:
        sip = ipaddress.ip_address(sip_source_host)
    except ValueError:
        return sdp_host or sip_source_host
    try:
        sdp = ipaddress.ip_address(sdp_host)
    except ValueError:
        # A host name in c= (RFC 8866 5.7 allows it; rare): the latch compares addresses
        # and we do not block a call on DNS, so the address the signalling came from it is.
        return sip_source_host
    if (sdp.is_private or sdp.is_link_local or sdp.is_unspecified) and sip.is_global:
        return sip_source_host
    return sdp_host


def _local_address_toward(host: str) -> str:
    """The local address the kernel would use to reach ``host`` (no packet is sent)."""
    try:
        family = _socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else _socket.AF_INET
    except ValueError:
        family = _socket.AF_INET
    with _socket.socket(family, _socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _primary_address() -> str:
    """The address other hosts most likely reach us at (for Contact when bound to 0.0.0.0)."""
    address = _local_address_toward("192.0.2.1")  # TEST-NET-1: only the routing table is read
    return address


def _find(exc: BaseException, kind: type) -> BaseException | None:
    """The first ``kind`` inside ``exc`` (trio nurseries wrap errors in exception groups)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


async def serve(config: Config) -> int:
    """Run a gateway until SIGTERM/SIGINT (graceful) or a second signal (immediate).

    Returns the process exit status: 0 after a clean stop, 1 if it could not start.
    """
    try:
        gateway = Gateway(config)
    except StartupError as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def run_then_stop(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    await gateway.run(task_status=task_status)
                    nursery.cancel_scope.cancel()

                async def watch_signals() -> None:
                    count = 0
                    async for signum in signals:
                        count += 1
                        log.info("signal_received", signal=signal.Signals(signum).name,
                                 action="graceful shutdown" if count == 1 else "stop now")
                        if count == 1:
                            nursery.start_soon(gateway.shutdown)
                        else:
                            nursery.cancel_scope.cancel()

                await nursery.start(run_then_stop)
                nursery.start_soon(watch_signals)
    except BaseException as exc:
        startup = _find(exc, StartupError)
        if startup is None:
            raise
        log.error("startup_failed", error=str(startup))
        return 1
    return 0
