"""The gateway service: SIP in, T.38 media, pages to the archive, webhooks out.

``Gateway.run`` binds everything first - SIP listeners, the HTTP API - and only then
reports itself started; a bind failure raises before any call is accepted, so a bad
address never leaves a half-working gateway.  Then it runs, all in one nursery:

* the SIP endpoint (``sip.transport``) and a pump that hands each call's UA events to
  its call core (``t38gw.call.CallControl``: every decision - admission, routing at
  the INVITE and after phase B, answering T.38 or audio, re-INVITEs, glare, the T.38
  wait, hang-up - is made there, sans-IO) and carries out the commands it returns
  (``_run_command``: the UA, the UDPTL port pool, the ``FaxSession``); one task wakes
  the cores at their deadlines (``_drive_call_timers``);
* one task per answered call: the ``FaxSession`` (UDPTL endpoint <-> T.30 <-> archive)
  plus a watcher that tells the core when the fax is over (it then hangs up);
* the webhook delivery worker draining the durable spool;
* the HTTP API (hypercorn, trio worker).

``shutdown()`` (SIGTERM) stops accepting calls (503), lets running faxes finish for up
to ``shutdown_grace`` seconds, ends the rest (their confirmed pages are kept as
``partial``), gives the spool one last pass and returns.  Nothing is lost to SIGKILL
either: pages and meta.json are on disk as they are confirmed and webhooks are in the
SQLite spool before anyone tries to send them (``t38gw.faxrecord``).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import ipaddress
import math
import random
import signal
import socket as _socket
import sys
import threading
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
from sip.registration import Trunk as SipTrunk
from sip.timers import TimerTable
from sip.transport import ListenSpec, SipEndpoint, server_ssl_context
from sip.ua import (
    InviteReceived,
    RegistrationFailed,
    RegistrationSucceeded,
    RequestRefused,
    UAConfig,
    UserAgent,
)
from sip.uri import parse_uri
from udptl.endpoint import PortPool, PortsExhausted

from t38gw.api import AuditLog, create_app, hypercorn_tls
from t38gw.call import (
    Accept,
    Answer,
    CallControl,
    CallFacts,
    CallFailed,
    Dial,
    CallSettings,
    CloseMedia,
    Command,
    Hangup,
    Load,
    Note,
    Refuse,
    Reinvite,
    RejectOffer,
    Reroute,
    Ring,
    RouteChoice,
    StartAudio,
    StartMedia,
    State,
    StopMedia,
)
from t38gw import archive
from t38gw.archive import read_meta
from t38gw.index import ArchiveIndex, ArchiveIndexError
from t38gw.config import Config
from t38gw.delivery import DeliveryWorker
from t38gw.faxrecord import InboundFax, enqueue_planned, plan_deliveries, record_outcome, recover_archive, webhooks_for
from t38gw.ids import new_fax_id
from t38gw.jobs import Job, JobStore, JobStoreError
from t38gw.outbound import DialPlanError, plan_dial
from t38gw.outsession import OutboundRecord, OutboundSession
from t38gw import sendjob
from t38gw.sendjob import JobPages, SendOptions, SendRequestError
from t38gw.metrics import GatewayMetrics
from t38gw.overload import SAMPLE_INTERVAL, OverloadMonitor, udp_receive_errors
from t38gw.workers import WorkerRole, metrics_dir, port_slice
from t38gw.negotiation import local_t38_params
from t38gw.routing import route_after_phase_b, route_at_invite
from t38gw.sanitize import call_identity
from t38gw.session import FaxSession
from t38gw.spool import Delivery, DeliveryState, Spool, SpoolError
from t38gw.t30 import Compression, ReceiveCapabilities, ReceiverConfig
from t38gw.t30.transmitter import TransmitterConfig

log = structlog.get_logger("t38gw.gateway")

SHUTDOWN_GRACE_SECONDS = 120.0
OVERLOAD_LOG_SECONDS = 10.0
# A restart re-spools the planned webhooks of faxes that ended this recently (the spool
# gives a delivery up after 24 h anyway).
RESPOOL_WINDOW_SECONDS = 2 * 86400.0
RETENTION_FIRST_SWEEP_SECONDS = 60.0
RETENTION_SWEEP_INTERVAL_SECONDS = 86400.0
FINAL_FLUSH_SECONDS = 10.0
_WILDCARD = ("0.0.0.0", "::", "")
# The cyclic garbage collector's youngest-generation threshold (CPython's default: 700).
# With hundreds of calls up, each collection of the middle and oldest generations walks
# every live call's objects: at 700, bench/load.py (300 calls) saw ~450 young, ~40 middle
# and 3 full collections a run, 0.8-1.1 s of CPU (7-13 % of the process's) and full
# collections of 100-175 ms that stall the event loop (the T.30 response's p99).  At 5,000:
# ~33 young, 3 middle, no full collection, 0.2-0.35 s, loop lag max 20-30 ms instead of
# 100-160 ms.  Safe only because an ended call's state is freed by reference counting
# (FaxSession.run cuts the session <-> call cycle): with that cycle still in place the same
# threshold grew RSS 137 -> 287 MiB in 5 minutes at 100 calls.  The soak guards it.
GC_THRESHOLDS = (5000, 10, 10)
# How long the event loop's thread may hold the GIL while another thread wants it
# (CPython's default: 5 ms).  Page writes, decodes and the final write run in threads that
# release the GIL at every system call (~40 for a page write) and wait for it back each
# time; behind a busy event loop each wait ran to the full 5 ms, so a page write of ~4 ms
# of CPU took ~40 ms (bench/load.py, 1,000 calls, two workers).  At 1 ms, two alternating
# pairs at 1,000 ECM calls: the T.30 response's p99 681 and 654 ms -> 440 and 447 ms, CPU
# per fax 0.052 and 0.044 -> 0.046 and 0.048 s (no cost the noise can show).
SWITCH_INTERVAL_SECONDS = 0.001


class StartupError(Exception):
    """The gateway could not start (a port is taken, a certificate is unreadable...)."""


@dataclass
class _Call:
    """A call as the runtime edge holds it: the UA's handle, its control core, and (once
    the core accepted it) its fax session."""

    sip_call: Any  # None for an outbound call until its INVITE is sent
    control: CallControl
    incoming: InviteReceived | None  # None: an outbound call
    bound: Any  # the logger bound to call_id (and fax_id once known)
    session: FaxSession | None = None
    running: bool = False  # the session's task was started (the INVITE was answered)
    failed: CallFailed | None = None  # outbound: the call ended before T.38 media ran
    over: trio.Event = field(default_factory=trio.Event)  # outbound: the call core is done


class PageWritesFirst:
    """Work no sender waits for gives way to page writes, which our MCFs wait for.

    Under a burst of page ends (calls started together end their pages together) every
    thread takes the GIL in turns with the event loop: at 1,000 calls a page write waited
    ~1.7 s on average for one of its threads, behind the final writes, delivery outcomes
    and index rows of faxes already confirmed, and 535 of 793 MCFs waited over 2.5 s of
    the sender's T4 for their page (bench/load.py, issue 14).  ``wait`` returns once no
    page write waits for a thread, or after ``max_defer`` seconds (so that work is late,
    never starved).  However many tasks wait, one of them looks every ``poll`` seconds and
    wakes the others when the queue is empty: 400 faxes ending together cost 20 wake-ups a
    second, not 8,000.
    """

    def __init__(self, page_threads: trio.CapacityLimiter, *, poll: float, max_defer: float) -> None:
        self.page_threads = page_threads
        self.poll = poll
        self.max_defer = max_defer
        self._cleared: trio.Event | None = None  # set by the task looking, when it stops

    def page_writes_waiting(self) -> bool:
        return self.page_threads.statistics().tasks_waiting > 0

    async def wait(self) -> None:
        with trio.move_on_after(self.max_defer):
            while self.page_writes_waiting():
                cleared = self._cleared
                if cleared is not None:
                    await cleared.wait()
                    continue
                cleared = self._cleared = trio.Event()
                try:
                    while self.page_writes_waiting():
                        await trio.sleep(self.poll)
                finally:  # cleared, or this task's time is up: another one looks on
                    self._cleared = None
                    cleared.set()


@dataclass
class Gateway:
    config: Config
    shutdown_grace: float = SHUTDOWN_GRACE_SECONDS
    rng: random.Random = field(default_factory=random.SystemRandom)
    role: WorkerRole | None = None  # one of several worker processes (t38gw.workers)

    def __post_init__(self) -> None:
        config = self.config
        self.accepting = True
        self.archive_root = Path(config.archive.dir)
        try:
            self.spool = Spool(config.spool, rng=self.rng, owner=0 if self.role is None else self.role.index,
                               owners=1 if self.role is None else self.role.count)
        except SpoolError as exc:
            raise StartupError(f"spool: {exc}") from None
        try:
            self.audit_log = AuditLog(config.archive.audit_log)
        except OSError as exc:
            self.spool.close()
            raise StartupError(f"archive.audit_log: cannot open {config.archive.audit_log}: {exc}") from None
        self.metrics = GatewayMetrics(spool_depth=self.spool.depth)
        self.metrics.count_udp_receive_errors(udp_receive_errors)
        role = self.role
        if role is not None and role.leader and role.count > 1:
            folder, count = metrics_dir(config), role.count
            self.metrics.merge_with = lambda: [text for k in range(1, count)
                                               if (text := _read_text(folder / f"worker-{k}.prom"))]
        self.overload = OverloadMonitor(config.limits.max_event_loop_lag, config.limits.max_cpu)
        try:
            self.jobs = JobStore(self.spool, retries=config.send.retries, retry_after=config.send.retry_after)
        except JobStoreError as exc:
            self.spool.close()
            raise StartupError(f"spool: {exc}") from None
        self._jobs_changed = trio.Event()
        self._running_jobs: dict[str, str] = {}  # job id -> trunk, while an attempt runs
        try:
            self.index = ArchiveIndex(config.archive.index)
        except ArchiveIndexError as exc:
            self.spool.close()
            self.audit_log.close()
            raise StartupError(f"archive.index: {exc}") from None
        # Calls' disk work runs in few threads.  Python threads take the GIL in turns, so
        # the 40 of trio's default limiter, all busy after a burst of page ends (300 calls
        # started together), left the event loop a small share of it: T.30 answers went out
        # 1.1 s late at p99 and the loop lagged ~0.5 s (bench/load.py); with two threads for
        # page writes (the sender waits for those: our MCF follows the write) and two for
        # what follows a fax's end (final fax.tif/pdf, meta.json, index row, the webhook's
        # spool row), 0.3 s and 0.12 s.  Page writes have four threads since the MCF waits
        # for them however long (PAGE_WRITE_THREADS).
        self.page_threads = trio.CapacityLimiter(PAGE_WRITE_THREADS)
        self.after_call_threads = trio.CapacityLimiter(AFTER_CALL_THREADS)
        # What no one waits for - delivery outcomes (spool, meta.json, audit trail) and the
        # fax_stored audit line - has a thread of its own: queued with the final writes it
        # held back the faxes whose webhooks wait on theirs.
        self.bookkeeping_threads = trio.CapacityLimiter(BOOKKEEPING_THREADS)
        # Received pages decoded between their image carrier's end and the sender's post-page
        # command (FaxSession._decode_ahead): libtiff lets go of the GIL, so the decoding
        # runs on the other core instead of in the event loop when the command arrives.
        self.decode_threads = trio.CapacityLimiter(DECODE_AHEAD_THREADS)
        # A fax in progress's index row after each page write: nobody waits for it, and
        # our MCFs wait for the page writes.  As a job of its own in the page-write threads
        # each row (an SQLite transaction, ~20 GIL hand-backs) queued before other calls'
        # page writes: at 1,000 calls 535 of 793 MCFs waited over 2.5 s for the disk.  So
        # the rows wait (``_index_progress_rows``) while page writes are queued, the latest
        # meta of each fax only, and go in one transaction.
        self._index_pending: dict[str, tuple[InboundFax, dict[str, Any]]] = {}
        self._index_pending_added = trio.Event()
        # Final writes, delivery outcomes and those index rows wait while page writes are
        # queued (see PageWritesFirst).
        self.page_writes_first = PageWritesFirst(self.page_threads, poll=PAGE_WRITES_FIRST_POLL,
                                                 max_defer=PAGE_WRITES_FIRST_MAX_DEFER)
        # Audit-trail lines no one waits for (a fax stored, a webhook's outcome), written
        # together by one thread job: one fsync for however many (``_audit_soon``).
        self._audit_queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._audit_queued = trio.Event()
        self._audit_flushing = threading.Lock()
        self.worker = DeliveryWorker(self.spool, {w.name: w.secret for w in config.webhooks},
                                     on_outcomes=self._delivery_outcomes,
                                     on_spool_recovered=self._spool_recovered,
                                     thread_limiter=self.bookkeeping_threads,
                                     before_thread=self.page_writes_first.wait)
        self.ua = UserAgent(self._ua_config(), rng=self.rng)
        ssl_context = None
        if any(lst.transport == "tls" for lst in config.sip.listen):
            try:
                ssl_context = server_ssl_context(config.sip.tls.certificate, config.sip.tls.private_key)
            except (OSError, ValueError) as exc:
                raise StartupError(f"sip.tls: cannot load certificate/key: {exc}") from None
        listen = [ListenSpec(lst.transport, lst.host, lst.port) for lst in config.sip.listen]
        if role is not None and not role.leader:
            listen = [spec for spec in listen if spec.transport == "udp"]  # TCP/TLS: worker 0's
        self.sip = SipEndpoint(self.ua, listen, ssl_context=ssl_context,
                               shared_udp=(role.listener, role.feed) if role is not None and role.listener and role.feed
                               else None)
        udp_hosts = [lst.host for lst in config.sip.listen if lst.host not in _WILDCARD]
        pool_host = udp_hosts[0] if udp_hosts and len(set(udp_hosts)) == 1 else "0.0.0.0"
        ports = config.t38.udptl_ports
        if role is not None:
            ports = port_slice(*ports, role.index, role.count)
        self.ports = PortPool(*ports, host=pool_host, rng=self.rng)
        self.calls: dict[str, _Call] = {}  # by UA call id, until its core is done
        self.call_settings = self._call_settings()
        self._call_timers = TimerTable()  # UA call id -> the core's next deadline
        self._call_timers_changed = trio.Event()
        self.sessions: set[FaxSession] = set()
        self.audio_sessions: set[FaxSession] = set()  # faxes running as G.711, ticked every 20 ms
        self._audio_wake = trio.Event()
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
                        auth_algorithms=sip.auth_algorithms,
                        call_id_owner=self.role.owns if self.role is not None else None)

    def receiver_config(self) -> ReceiverConfig:
        fax, t38 = self.config.fax, self.config.t38
        modems = {"V.27ter"}
        if t38.max_bitrate >= 9600:
            modems.add("V.29")
        if t38.max_bitrate >= 14400:
            modems.add("V.17")
        capabilities = ReceiveCapabilities(modems=frozenset(modems), ecm=fax.ecm,
                                           compressions=frozenset(Compression(c) for c in fax.compressions))
        limits = self.config.limits
        return ReceiverConfig(local_ident=fax.local_ident, capabilities=capabilities,
                              max_pages=limits.max_pages_per_call, max_page_rows=limits.max_page_rows)

    def local_t38(self) -> sdpmod.T38Params:
        t38 = self.config.t38
        return local_t38_params(versions=t38.versions, max_bitrate=t38.max_bitrate, max_datagram=t38.max_datagram,
                                error_correction=t38.error_correction)

    def _call_settings(self) -> CallSettings:
        """The policy every call core follows, from the config."""
        sip, routes = self.config.sip, self.config.routes

        def at_invite(facts: CallFacts) -> RouteChoice:
            index, route = route_at_invite(routes, facts)
            return RouteChoice(index, route, route.reject)

        def after_phase_b(facts: CallFacts) -> RouteChoice:
            index, route = route_after_phase_b(routes, facts)
            return RouteChoice(index, route, route.reject)

        trunk_hosts = []
        for trunk in sip.trunks:
            try:
                trunk_hosts.append((parse_uri(trunk.registrar).host_address, trunk.name))
            except (SipParseError, AttributeError):
                continue
        return CallSettings(route_at_invite=at_invite, route_after_phase_b=after_phase_b, local_t38=self.local_t38(),
                            audio_fallback=self._audio_fallback_ready(),
                            answer_after=sip.answer_after, t38_reinvite_after=sip.t38_reinvite_after,
                            media_latching=sip.media_latching,
                            trunk_latching={t.name: t.media_latching for t in sip.trunks if t.media_latching},
                            trunk_hosts=tuple(trunk_hosts), initial_offer=self.config.send.initial_offer,
                            ring_timeout=float(self.config.send.ring_timeout))

    def _audio_fallback_ready(self) -> bool:
        """[t38] audio_fallback, if SpanDSP's modems can be loaded (else said once, loudly:
        T.38 is served as usual and audio-only calls fail as before)."""
        if not self.config.t38.audio_fallback:
            return False
        from t38gw.audiofax import load_spandsp, spandsp_unavailable_reason

        if load_spandsp() is None:
            log.error("audio_fallback_unavailable", reason=spandsp_unavailable_reason(),
                      consequence="calls that never turn T.38 are not received as audio; T.38 works as usual",
                      fix="apt-get install libspandsp2")
            return False
        return True

    def _audio_ticks(self, session: FaxSession, active: bool) -> None:
        if active:
            self.audio_sessions.add(session)
            self._audio_wake.set()
        else:
            self.audio_sessions.discard(session)

    async def _tick_audio(self) -> None:
        """One task ticks every audio fax every 20 ms (a timer per call per tick would eat
        a core at a few hundred calls).  Behind schedule (a loaded loop) it catches up a
        few ticks so each far end still gets 50 packets a second, then resynchronises."""
        tick = 0.020
        while True:
            if not self.audio_sessions:
                self._audio_wake = trio.Event()
                await self._audio_wake.wait()
                next_tick = trio.current_time()
            await trio.sleep_until(next_tick)
            now = trio.current_time()
            for _ in range(5):
                for session in list(self.audio_sessions):
                    try:
                        session.audio_tick(now)
                    except Exception:
                        log.exception("audio_tick_failed", fax_id=session.record.fax_id)
                        self.audio_sessions.discard(session)
                        session.fail("internal error in the audio fax leg (see the log)")
                next_tick += tick
                if next_tick > now:
                    break
            else:
                next_tick = now + tick  # far behind: do not burst, start again from now

    # -- running ----------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Recover the archive, bind everything, report started, serve until cancelled."""
        role = self.role
        recover = "all" if role is None else role.recover  # "own": a restarted worker; "none"
        leader = role is None or role.leader
        if recover == "all" and self.index.needs_rebuild:
            # A new (or older-schema) index: built once from the folders, the system of record.
            started = time.monotonic()
            count = await trio.to_thread.run_sync(self.index.rebuild, self.archive_root)
            (log.warning if count else log.info)("archive_index_rebuilt", faxes=count, seconds=round(time.monotonic() - started, 1),
                        index=str(self.config.archive.index))
        interrupted = self.jobs.interrupted() if leader and recover != "none" else []
        for job in interrupted:
            # Killed mid-attempt: sent again from the start (issue 12).
            self.jobs.requeue(job.id, time.time())
        # Start-up reads the index, never walks the archive: only faxes the index has in
        # progress, or that ended lately (a webhook may not have reached the spool), are read.
        folders = self.index.folders_to_recover(ended_since=time.time() - RESPOOL_WINDOW_SECONDS)
        if recover == "none":
            folders = []  # worker 0 recovered everything before this one started
        elif recover == "own" and role is not None:
            # Only what this worker left when it died: the other workers' calls run on.
            folders = [f for f in folders if role.owns(_call_id_in(f)) or (role.leader and not _call_id_in(f))]
        counts = await trio.to_thread.run_sync(
            lambda: recover_archive(self.archive_root, self.spool, self.config, jobs=self.jobs.unfinished_ids(),
                                    folders=folders, index=self.index))
        if counts["closed"] or counts["requeued"] or interrupted:
            log.warning("archive_recovered", faxes_closed=counts["closed"], webhooks_requeued=counts["requeued"],
                        send_jobs_resumed=len(interrupted))
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
                    if leader:
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
                nursery.start_soon(self.ports.poller.run)  # reads every call's UDPTL socket
                nursery.start_soon(self._index_progress_rows)
                nursery.start_soon(self._audit_lines)
                nursery.start_soon(self._pump_sip)
                nursery.start_soon(self._drive_call_timers)
                nursery.start_soon(self._tick_audio)
                nursery.start_soon(self._watch_load)
                nursery.start_soon(self.worker.run)  # each worker its own webhooks (t38gw.spool)
                if leader:
                    nursery.start_soon(self._run_jobs)
                    nursery.start_soon(self._retention_sweeps)
                    for trunk in self.config.sip.trunks:
                        self.sip.command(self.ua.register, SipTrunk(trunk.name, trunk.registrar, trunk.username,
                                                                    trunk.password, trunk.expires))
                if role is not None and not leader:
                    nursery.start_soon(self._export_metrics)
                log.info("gateway_started", sip={t: f"{h}:{p}" for t, (h, p) in self.sip.bound.items()},
                         api=self.api_bound, udptl_ports=f"{self.ports.low}-{self.ports.high}",
                         udptl_receive_buffer=self.ports.granted_receive_buffer, overload_limits={
                             "max_event_loop_lag": self.overload.max_lag, "max_cpu": self.overload.max_cpu},
                         archive=str(self.archive_root), spool=str(self.config.spool),
                         webhooks=[w.name for w in self.config.webhooks], send_jobs_queued=self.jobs.queued(),
                         worker=None if role is None else f"{role.index}/{role.count}")
                task_status.started(self)
                if role is not None:
                    role.tell_ready()
        finally:
            self._audit_flush()  # lines still queued (a shutdown)
            self.spool.close()
            self.audit_log.close()

    async def _export_metrics(self) -> None:
        """A worker other than 0: its metrics, for worker 0's /metrics (every second)."""
        assert self.role is not None
        path = metrics_dir(self.config) / f"worker-{self.role.index}.prom"
        while True:
            try:
                temporary = path.with_suffix(".tmp")
                temporary.write_bytes(self.metrics.exposition())
                temporary.replace(path)
            except OSError as exc:
                log.warning("metrics_export_failed", error=str(exc))
            await trio.sleep(1.0)

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
        app = create_app(self.index, self.metrics, self.config.http.tokens, self.submit_job,
                         audit_log=self.audit_log)
        await serve(app, hyper, task_status=task_status)

    async def shutdown(self) -> None:
        """Graceful stop: 503 new calls, let faxes finish (bounded), flush, then cancel."""
        self.accepting = False
        log.info("shutdown_started", active_calls=len(self.sessions), grace_seconds=self.shutdown_grace)
        for call in list(self.calls.values()):
            self._execute(call, call.control.shutdown_started(trio.current_time()))
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

    # -- SIP events -> call cores ------------------------------------------------
    async def _pump_sip(self) -> None:
        async for event in self.sip.events:
            call = getattr(event, "call", None)
            try:
                self._on_sip_event(event)
            except (SipLocalProtocolError, SipRemoteProtocolError) as exc:
                log.warning("sip_event_not_handled", event=type(event).__name__, error=str(exc),
                            call_id=getattr(call, "call_id", None))
            except Exception:
                # One call's surprise must not take every other call down with it: log it
                # with its traceback, refuse or end that call, keep serving.
                log.exception("sip_event_failed", event=type(event).__name__, call_id=getattr(call, "call_id", None))
                self._contain(call)

    def _contain(self, sip_call: Any) -> None:
        if sip_call is None:
            return
        try:
            call = self.calls.pop(sip_call.id, None)
            if call is not None and call.incoming is None:
                call.over.set()
            if sip_call.state.value == "offered":
                self._refuse(sip_call, 500)
            elif call is not None and call.session is not None:
                call.session.fail("internal error handling a SIP event (see the log)")
        except Exception:
            log.exception("sip_event_containment_failed", call_id=getattr(sip_call, "call_id", None))

    def _on_sip_event(self, event: Any) -> None:
        if isinstance(event, InviteReceived):
            self._incoming(event)
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
        call = self.calls.get(getattr(getattr(event, "call", None), "id", None))
        if call is not None:
            self._execute(call, call.control.sip_event(event, trio.current_time()))

    def _incoming(self, event: InviteReceived) -> None:
        load = self._load()
        control = CallControl(self.call_settings, sdp_session_id=self.rng.randint(1, 2**31))
        call = self.calls[event.call.id] = _Call(event.call, control, event, log.bind(call_id=event.call.call_id))
        self._execute(call, control.offered(event, load, trio.current_time()))

    def _load(self) -> Load:
        """What admission needs to know: calls in progress (running media, or ringing and
        being set up) and whether the spool can take the fax's webhook."""
        calls = self._calls_in_progress()
        max_calls = self.config.limits.max_calls
        if self.role is not None:
            max_calls = -(-max_calls // self.role.count)  # each worker its share (rounded up)
        return Load(accepting=self.accepting, calls=calls, max_calls=max_calls, spool_healthy=getattr(self.spool, "healthy", True),
                    spool_error=str(getattr(self.spool, "last_error", "")),
                    overloaded=self.overload.refusal(calls), retry_after=self.config.limits.overload_retry_after)

    def _calls_in_progress(self) -> int:
        pending = sum(1 for call in self.calls.values() if call.session is None or not call.running)
        return len(self.sessions) + pending

    async def _watch_load(self) -> None:
        """Measure what admission judges (t38gw.overload): how late a fixed sleep wakes,
        the process's CPU; make it visible (metrics, a log line when refusing starts and
        stops, and when the kernel drops UDP datagrams)."""
        errors_seen = udp_receive_errors()
        refusing = ""
        logged_refusing = False
        quiet_until = -math.inf
        next_errors_check = trio.current_time() + 1.0
        while True:
            asleep = trio.current_time()
            await trio.sleep(SAMPLE_INTERVAL)
            now = trio.current_time()
            calls = self._calls_in_progress()
            monitor = self.overload
            monitor.sample(now, now - asleep - SAMPLE_INTERVAL, time.process_time(), calls)
            self.metrics.event_loop_lag.set(monitor.max_lag_seen)
            self.metrics.cpu_ratio.set(round(monitor.cpu_rate, 3))
            self.metrics.udptl_ports_in_use.set(self.ports.in_use)
            verdict = monitor.refusal(calls)
            if bool(verdict) != bool(refusing):
                self.metrics.overloaded.set(1 if verdict else 0)
                # At the edge of capacity the verdict flips many times a second: one line
                # when refusing starts, then at most one per OVERLOAD_LOG_SECONDS.
                if verdict and now >= quiet_until:
                    quiet_until = now + OVERLOAD_LOG_SECONDS
                    log.warning("overload_refusing_calls", reason=verdict, calls=calls,
                                lag_ms=round(monitor.judged_lag * 1000), cpu=round(monitor.cpu_rate, 2),
                                cpu_per_call_ms=round(monitor.cpu_per_call * 1000, 2))
                    logged_refusing = True
            if not verdict and logged_refusing and now >= quiet_until:
                logged_refusing = False
                log.info("overload_ended", calls=calls, lag_ms=round(monitor.judged_lag * 1000),
                         cpu=round(monitor.cpu_rate, 2))
            refusing = verdict
            if now >= next_errors_check:
                next_errors_check = now + 10.0  # at most one line per 10 s
                errors = udp_receive_errors()
                grown = {k: v - errors_seen.get(k, 0) for k, v in errors.items() if v > errors_seen.get(k, 0)}
                if grown:
                    # Host-wide counters: another program's socket may be the one dropping,
                    # but a gateway that lags is the usual cause (issue 14).
                    log.warning("udp_receive_errors", **grown, calls=calls,
                                lag_ms=round(monitor.judged_lag * 1000), cpu=round(monitor.cpu_rate, 2))
                errors_seen = errors

    def _execute(self, call: _Call, commands: list[Command]) -> None:
        """Carry out a call core's commands in order.  A command the UA refuses
        (``LocalProtocolError``: the caller left meanwhile...) is reported back to the
        core, whose answer replaces the rest of the batch."""
        queue = list(commands)
        while queue:
            command = queue.pop(0)
            try:
                self._run_command(call, command)
            except SipLocalProtocolError as exc:
                call.bound.info("sip_command_not_sent", command=type(command).__name__, error=str(exc))
                queue = call.control.command_failed(command, str(exc), trio.current_time())
        self._track(call)

    def _track(self, call: _Call) -> None:
        if call.sip_call is None:  # an outbound call whose INVITE could not be sent
            if call.control.done:
                call.over.set()
            return
        key = call.sip_call.id
        if call.control.done:
            self.calls.pop(key, None)
            self._call_timers.pop(key)
            call.over.set()
            return
        deadline = call.control.next_deadline()
        if deadline is None:
            self._call_timers.pop(key)
        elif self._call_timers.get(key) != deadline:
            self._call_timers[key] = deadline
            self._call_timers_changed.set()

    async def _drive_call_timers(self) -> None:
        """Wake each call core at its next deadline (one task for every call)."""
        while True:
            deadline = self._call_timers.next_deadline()
            self._call_timers_changed = trio.Event()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._call_timers_changed.wait()
            now = trio.current_time()
            while (key := self._call_timers.pop_due(now)) is not None:
                call = self.calls.get(key)
                if call is None:
                    continue
                try:
                    self._execute(call, call.control.handle_timer(now))
                except Exception:
                    log.exception("call_timer_failed", call_id=call.sip_call.call_id)
                    self._contain(call.sip_call)

    def _run_command(self, call: _Call, command: Command) -> None:
        sip_call = call.sip_call
        if isinstance(command, Note):
            getattr(call.bound, command.level)(command.event, **command.fields)
        elif isinstance(command, Ring):
            self.sip.command(self.ua.ring, sip_call)
        elif isinstance(command, Accept):
            self._nursery.start_soon(self._accept, call, command)
        elif isinstance(command, Answer):
            self.sip.command(self.ua.answer, sip_call, command.sdp)
            if command.first and call.session is not None and not call.running:
                call.running = True
                self.sessions.add(call.session)
                self.metrics.active_calls.inc()
                self._nursery.start_soon(self._run_call, call, call.session)
        elif isinstance(command, Refuse):
            self._refuse(sip_call, command.status, command.retry_after)
        elif isinstance(command, RejectOffer):
            self.sip.command(self.ua.reject, sip_call, command.status)
        elif isinstance(command, Reinvite):
            self.sip.command(self.ua.reinvite, sip_call, command.sdp)
        elif isinstance(command, Hangup):
            try:
                self.sip.command(self.ua.hangup, sip_call)
            except SipLocalProtocolError:
                pass
        elif isinstance(command, Dial):
            try:
                call.sip_call = self.sip.command(self.ua.invite, command.uri, command.sdp,
                                                 from_user=command.from_user, from_domain=command.from_domain,
                                                 credentials=command.credentials, proxy=command.proxy)
            except (SipParseError, ValueError) as exc:
                raise SipLocalProtocolError(f"cannot place the call: {exc}") from None
            self.calls[call.sip_call.id] = call
            call.bound = call.bound.bind(call_id=call.sip_call.call_id)
            if call.session is not None:
                peer = call.sip_call.peer
                invite = call.sip_call.invite
                call.session.record.sip.update(
                    call_id=call.sip_call.call_id, remote_addr=f"{peer.host}:{peer.port}",
                    **{"from": invite.headers.get("From") or "" if invite is not None else ""})
        elif isinstance(command, CallFailed):
            call.failed = command
            if call.session is not None:
                call.session.fail(command.reason)
        elif call.session is None:
            raise AssertionError(f"{command} before the call has a session")
        elif isinstance(command, StartMedia):
            call.session.t38_ready(command.t38)
        elif isinstance(command, StartAudio):
            call.session.audio_ready(command.audio)
        elif isinstance(command, StopMedia):
            if command.failed:
                call.session.fail(command.reason)
            else:
                call.session.sip_ended(command.reason)
        elif isinstance(command, CloseMedia):
            call.session.endpoint.close()
            # The caller left before the fax began: nothing of it was written.
            self._nursery.start_soon(trio.to_thread.run_sync, self._index_forget, call.session.record.fax_id)
        elif isinstance(command, Reroute):
            record = call.session.record
            record.reroute(command.route.index, command.route.route)
            call.bound.info("call_rerouted_by_tsi", tsi=command.tsi, route=record.route_name)
        else:
            raise AssertionError(f"unknown command {command!r}")

    async def _accept(self, call: _Call, accept: Accept) -> None:
        """``Accept``: open the call's UDPTL port, create its record and session, and tell
        the core (which answers)."""
        try:
            await self._open_media(call, accept)
        except Exception:
            log.exception("sip_event_failed", event="InviteReceived", call_id=call.sip_call.call_id)
            if call.session is not None and not call.running:
                call.session.endpoint.close()
            self._contain(call.sip_call)

    async def _open_media(self, call: _Call, accept: Accept) -> None:
        event, facts = call.incoming, accept.facts
        try:
            endpoint = await self.ports.open()
        except PortsExhausted as exc:
            self._execute(call, call.control.media_unavailable(str(exc), trio.current_time()))
            return
        started = time.time()
        fax_id = new_fax_id(started, self.rng)
        record = InboundFax(
            fax_id=fax_id, started_at=started, root=self.archive_root, formats=self.config.archive.formats,
            sip=call_identity(call_id=call.sip_call.call_id, from_=event.from_, to=event.to, did=facts.did,
                              caller=facts.caller, remote_addr=f"{event.source.host}:{event.source.port}",
                              trunk=facts.trunk),
            route_index=accept.route.index, route=accept.route.route, local_ident=self.config.fax.local_ident,
        )
        # The index row first (in progress), before anything of the fax is on disk: a
        # restart looks at in-progress rows, never walks the archive.
        await trio.to_thread.run_sync(self._index_upsert, record.meta, record.folder, limiter=self.page_threads)
        call.session = FaxSession(record=record, endpoint=endpoint, receiver_config=self.receiver_config(),
                                  t38_settings=self.config.t38, rng=self.rng, write_record=self._write_record,
                                  finish_record=self._finish_record, metrics=self.metrics,
                                  reroute=lambda session, tsi: self._phase_b(call, tsi),
                                  max_call_seconds=self.config.limits.max_call_seconds,
                                  audio_ticks=self._audio_ticks, jitter_ms=self.config.audio.jitter_ms,
                                  ecm=self.config.fax.ecm, decode_threads=self.decode_threads,
                                  page_write_held=self._page_write_held)
        call.bound = call.bound.bind(fax_id=fax_id)
        if call.control.state is State.ACCEPTING:
            call.bound.info("call_incoming", did=facts.did, caller=facts.caller, trunk=facts.trunk,
                            route=record.route_name, source=f"{event.source.host}:{event.source.port}",
                            transport=event.transport, offer=accept.offer)
        local_host = self.config.sip.public_address or _local_address_toward(event.source.host)
        self._execute(call, call.control.media_ready(local_host, endpoint.port, trio.current_time()))

    def _phase_b(self, call: _Call, tsi: str) -> None:
        self._execute(call, call.control.phase_b(tsi, trio.current_time()))

    def _refuse(self, sip_call: Any, status: int, retry_after: int | None = None) -> None:
        self.metrics.calls.labels(result=f"refused_{status}").inc()
        self.sip.command(self.ua.reject, sip_call, status, retry_after=retry_after)

    async def _run_call(self, call: _Call, session: FaxSession) -> None:
        async def hang_up_when_done() -> None:
            await session.hangup_requested.wait()
            self._execute(call, call.control.fax_ended(trio.current_time()))

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

    # -- sending --------------------------------------------------------------------
    def transmitter_config(self) -> TransmitterConfig:
        fax, t38 = self.config.fax, self.config.t38
        modems = {"V.27ter"} | ({"V.29"} if t38.max_bitrate >= 9600 else set()) | (
            {"V.17"} if t38.max_bitrate >= 14400 else set())
        return TransmitterConfig(local_ident=fax.local_ident, ecm=fax.ecm,
                                 compressions=frozenset(Compression(c) for c in fax.compressions),
                                 modems=frozenset(modems), max_bit_rate=t38.max_bitrate)

    async def submit_job(self, options: SendOptions, files: list[tuple[str, bytes]]) -> str:
        """``POST /v1/faxes``: check, rasterise, write the job's folder, queue it; the fax id.

        Raises ``SendRequestError`` (4xx/5xx, nothing queued).  Order (``t38gw.sendjob``):
        folder and meta.json, then the job row, then 202 - a job the client heard of
        survives a kill; a folder without its row (killed in between) is closed as failed
        at the next start."""
        if not self.accepting:
            raise SendRequestError(503, "shutting_down", "the gateway is shutting down; send again later")
        config = self.config
        options = options.with_defaults(config)
        target = sendjob.check_request(options, config)
        created = time.time()
        fax_id = new_fax_id(created, self.rng)
        when = _local_time(created)

        def prepare() -> Path:
            import tempfile
            with tempfile.TemporaryDirectory(prefix="t38gw-send-") as tmp:
                paths = []
                for number, (name, data) in enumerate(files):
                    # One folder per file: messages name the file as the client did.
                    path = Path(tmp) / f"{number:03d}" / _safe_name(name)
                    path.parent.mkdir()
                    path.write_bytes(data)
                    paths.append(path)
                pages = sendjob.render_pages(paths, options, config, target, when)
            meta = sendjob.initial_meta(fax_id, created, options, target, config, pages)
            # The index row comes first (in progress): a restart finds a folder the job
            # runner never saw; meta.json, the system of record, then says what it is.
            self._index_upsert(meta, archive.fax_folder(self.archive_root, fax_id, created))
            folder = sendjob.create_job_folder(self.archive_root, fax_id, created, pages, meta,
                                               config.archive.formats)
            self._index_upsert(meta, folder)
            return folder

        try:
            folder = await trio.to_thread.run_sync(prepare)
        except OSError as exc:
            log.error("send_job_not_written", fax_id=fax_id, error=str(exc))
            raise SendRequestError(507, "archive_unavailable", f"the job cannot be written to the archive: {exc}") \
                from None
        try:
            self.jobs.add(id=fax_id, to=options.to, trunk=target.trunk, folder=str(folder), now=created)
        except JobStoreError as exc:
            log.error("send_job_not_queued", fax_id=fax_id, error=str(exc))
            await trio.to_thread.run_sync(self._close_unqueued, folder, str(exc))
            raise SendRequestError(503, "queue_unavailable", str(exc)) from None
        log.info("send_job_queued", fax_id=fax_id, to=options.to, trunk=target.trunk,
                 pages=len(archive.read_meta(folder)["pages"]), cover=options.cover, header=options.header)
        self._jobs_changed.set()
        return fax_id

    def _close_unqueued(self, folder: Path, error: str) -> None:
        meta = archive.read_meta(folder)
        meta.update(status="failed", reason=f"the job could not be queued: {error}", in_progress=False,
                    ended_at=archive.rfc3339(time.time()), next_attempt_at=None)
        self._save_meta(folder, meta)

    def _save_meta(self, folder: Path, meta: dict[str, Any]) -> None:
        """meta.json first (the system of record), then its index row.  Blocking."""
        archive.write_meta(folder, meta)
        self._index_upsert(meta, folder)

    def _index_forget(self, fax_id: str) -> None:
        try:
            self.index.delete(fax_id)
        except ArchiveIndexError as exc:
            log.error("archive_index_write_failed", fax_id=fax_id, error=str(exc), fix="t38gw archive reindex")

    def _page_write_held(self, seconds: float) -> None:
        self.metrics.page_write_wait.observe(seconds)
        self.overload.page_write_held(trio.current_time(), seconds)

    def _index_upsert(self, meta: dict[str, Any], folder: Path) -> None:
        try:
            self.index.upsert(meta, folder)
        except ArchiveIndexError as exc:
            # The folders are the record: the fax is safe; a reindex repairs the search.
            log.error("archive_index_write_failed", fax_id=meta.get("id"), error=str(exc),
                      fix="t38gw archive reindex")

    def _trunk_busy(self, trunk: str) -> bool:
        limit = self.config.send.max_calls_per_trunk
        return bool(limit) and sum(1 for t in self._running_jobs.values() if t == trunk) >= limit

    async def _run_jobs(self) -> None:
        """Start each due job's attempt when its trunk and the gateway have room."""
        while True:
            self._jobs_changed = trio.Event()
            now = time.time()
            blocked = False
            try:
                due = self.jobs.due(now) if self.accepting else []
            except JobStoreError as exc:
                log.error("send_queue_unreadable", error=str(exc))
                due, blocked = [], True
            for job in due:
                if job.id in self._running_jobs:
                    continue
                if self._trunk_busy(job.trunk) or self._load().calls >= self.config.limits.max_calls:
                    blocked = True  # woken when an attempt ends
                    continue
                self._running_jobs[job.id] = job.trunk
                self._nursery.start_soon(self._attempt, job)
            try:
                next_due = self.jobs.next_due_at()
            except JobStoreError:
                next_due = None
            wait = 30.0 if next_due is None else max(0.05, next_due - time.time())
            if blocked:
                wait = min(wait, 5.0)
            with trio.move_on_after(min(wait, 30.0)):
                await self._jobs_changed.wait()

    async def _attempt(self, job: Job) -> None:
        """One call of a job: dial, send, then finish the job or queue its retry."""
        bound = log.bind(fax_id=job.id)
        folder = Path(job.folder)
        try:
            await self._attempt_call(job, folder, bound)
        except Exception:
            bound.exception("send_attempt_failed_internally")
            try:
                meta = await trio.to_thread.run_sync(archive.read_meta, folder)
                await self._end_attempt(job, folder, meta, "failed", "internal error (see the log)", None,
                                        retryable=True, bound=bound)
            except Exception:
                bound.exception("send_attempt_not_recorded")
        finally:
            self._running_jobs.pop(job.id, None)
            self._jobs_changed.set()

    async def _attempt_call(self, job: Job, folder: Path, bound: Any) -> None:
        config = self.config
        meta = await trio.to_thread.run_sync(archive.read_meta, folder)
        number = self.jobs.start_attempt(job.id, time.time())
        started = time.time()
        meta["attempts"].append({"number": number, "started_at": archive.rfc3339(started), "ended_at": None,
                                 "outcome": None, "cause": None, "reason": "", "sip_status": None,
                                 "pages_sent": 0})
        for page in meta["pages"]:
            page["sent"] = False
        meta.update(status="dialing", reason="", pages_sent=0, next_attempt_at=None)
        await trio.to_thread.run_sync(self._save_meta, folder, meta)
        try:
            target = plan_dial(job.to, config.sip.trunks, allow_direct_uri=config.send.allow_direct_uri)
        except DialPlanError as exc:
            # The configuration changed since the job was queued: no attempt can succeed.
            await self._end_attempt(job, folder, meta, "failed", str(exc), None, retryable=False, bound=bound)
            return
        try:
            endpoint = await self.ports.open()
        except (OSError, PortsExhausted) as exc:
            await self._end_attempt(job, folder, meta, "failed", f"no UDPTL port free: {exc}", None,
                                    retryable=True, bound=bound, cause="local_busy")
            return
        meta["sip"].update(to=target.uri, did=target.number, caller=target.from_user or "", trunk=target.trunk)
        record = OutboundRecord(fax_id=job.id, folder=folder, meta=meta, sip=meta["sip"])
        pages = await trio.to_thread.run_sync(JobPages, folder / archive.FILE_NAMES["tiff"])
        session = OutboundSession(record=record, endpoint=endpoint, pages=pages,
                                  transmitter_config=self.transmitter_config(), t38_settings=config.t38,
                                  rng=self.rng, write_record=self._write_outbound_meta, metrics=self.metrics,
                                  max_call_seconds=config.limits.max_call_seconds, audio_ticks=self._audio_ticks,
                                  jitter_ms=config.audio.jitter_ms)
        control = CallControl(self.call_settings, sdp_session_id=self.rng.randint(1, 2**31))
        call = _Call(None, control, None, bound, session=session, running=True)
        hop = parse_uri(target.proxy or target.uri)
        local_host = config.sip.public_address or _local_address_toward(hop.host_address)
        self.sessions.add(session)
        self.metrics.active_calls.inc()
        bound.info("send_attempt_started", attempt=number, to=job.to, uri=target.uri, trunk=target.trunk,
                   pages=len(pages))
        try:
            async with trio.open_nursery() as nursery:
                async def hang_up_when_done() -> None:
                    await session.hangup_requested.wait()
                    if call.sip_call is not None:
                        self._execute(call, control.fax_ended(trio.current_time()))

                nursery.start_soon(hang_up_when_done)
                self._execute(call, control.dial(target, local_host, endpoint.port, trio.current_time()))
                await session.run()
                session.hangup_requested.set()
                # The BYE (or CANCEL) is out: let the dialog end (bounded: Timer F is 32 s).
                with trio.move_on_after(40.0):
                    await call.over.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.sessions.discard(session)
            self.metrics.active_calls.dec()
            if call.sip_call is not None:
                self.calls.pop(call.sip_call.id, None)
                self._call_timers.pop(call.sip_call.id)
        failed = call.failed
        if session.t30_started_at is not None:
            self.metrics.calls_by_media.labels(media=meta.get("media", "t38")).inc()
        if failed is not None and not session.phase_b_done:
            await self._end_attempt(job, folder, meta, "failed", failed.reason, failed.status,
                                    retryable=failed.retryable, bound=bound, cause=failed.cause)
            return
        status, reason = session.outcome()
        ended = session.ended_result
        cause = "sent" if status == "sent" else ("t30_" + ended.result.value.lower() if ended else "t30")
        # A T.30 failure is retried from the start: the receiver may get the first pages twice,
        # which beats a document it got only part of.
        await self._end_attempt(job, folder, meta, status, reason, failed.status if failed else 200,
                                retryable=status != "sent", bound=bound, cause=cause)

    async def _end_attempt(self, job: Job, folder: Path, meta: dict[str, Any], status: str, reason: str,
                           sip_status: int | None, *, retryable: bool, bound: Any, cause: str | None = None) -> None:
        """Record the attempt; finish the job (sent, or no retry left) or queue the retry."""
        now = time.time()
        attempt = meta["attempts"][-1] if meta["attempts"] else {}
        attempt.update(ended_at=archive.rfc3339(now), outcome=status, cause=cause or status, reason=reason,
                       sip_status=sip_status, pages_sent=meta.get("pages_sent", 0))
        retry_at = None
        if status != "sent" and retryable:
            # During our own shutdown the job waits for the next start, without back-off.
            retry_at = self.jobs.retry_at(len(meta["attempts"]), now) if self.accepting else now
        if retry_at is not None:
            meta.update(status="queued", reason=reason, next_attempt_at=archive.rfc3339(retry_at))
            await trio.to_thread.run_sync(self._save_meta, folder, meta)
            self.jobs.requeue(job.id, retry_at)
            bound.info("send_attempt_retry", attempt=len(meta["attempts"]), cause=cause, reason=reason,
                       retry_in=round(retry_at - now, 1))
            return
        best = max((a.get("pages_sent", 0) for a in meta["attempts"]), default=0)
        final = status if status == "sent" else ("partial" if best else "failed")
        if final != "sent" and len(meta["attempts"]) > 1:
            reason = f"{reason} (gave up after {len(meta['attempts'])} attempts)"
        meta.update(status=final, reason=reason, in_progress=False, ended_at=archive.rfc3339(now),
                    next_attempt_at=None)
        plan_deliveries(meta, sendjob.send_webhooks(self.config, meta.get("send", {}).get("webhook", "")), now,
                        self.rng)
        await trio.to_thread.run_sync(self._save_meta, folder, meta)
        self.jobs.finish(job.id, now)
        await trio.to_thread.run_sync(lambda: self._audit("fax_stored", fax_id=job.id, direction="outbound",
                                                          status=final, pages=meta.get("pages_total", 0),
                                                          pages_sent=meta.get("pages_sent", 0)))
        await trio.to_thread.run_sync(enqueue_planned, self.spool, folder, meta, self.config, now)
        self.worker.nudge()
        self.metrics.calls.labels(result=final).inc()
        bound.info("send_job_finished", status=final, reason=reason, attempts=len(meta["attempts"]),
                   pages_sent=meta.get("pages_sent", 0), pages_total=meta.get("pages_total", 0),
                   to=meta.get("to"))

    async def _write_outbound_meta(self, record: OutboundRecord, pages: Any, meta: dict[str, Any]) -> None:
        await trio.to_thread.run_sync(self._save_meta, record.folder, meta)

    # -- retention and the audit trail -----------------------------------------------
    async def _retention_sweeps(self) -> None:
        """Once a day (the first a minute after start): delete faxes older than
        ``[retention] keep_days``, never a held or running one (t38gw.retention)."""
        await trio.sleep(RETENTION_FIRST_SWEEP_SECONDS)
        while True:
            if self.config.retention.keep_days:
                try:
                    await trio.to_thread.run_sync(self.sweep_once, time.time())
                except Exception:
                    log.exception("retention_sweep_failed")
            await trio.sleep(RETENTION_SWEEP_INTERVAL_SECONDS)

    def sweep_once(self, now: float) -> list[Any]:
        """One retention sweep (blocking).  Candidates come from the index; each meta.json
        is read again before anything is deleted (a hold placed a moment ago wins)."""
        from t38gw import retention

        keep_days = self.config.retention.keep_days
        cutoff = retention.cutoff_for(keep_days, now)
        if cutoff is None:
            return []
        candidates = self.index.expired_candidates(cutoff=cutoff) + retention.pending_deletions(self.archive_root)

        def deleted(fax_id: str, meta: dict[str, Any]) -> None:
            # The audit line first: a deletion nobody can account for is worse than a
            # fax deleted one sweep later (OSError here stops this fax's deletion).
            self.audit_log.record("fax_deleted", fax_id=fax_id, reason="retention", keep_days=keep_days,
                                  started_at=meta.get("started_at"), ended_at=meta.get("ended_at"))
            self._index_forget(fax_id)

        items = retention.sweep(candidates, keep_days=keep_days, now=now,
                                delete_spool=lambda fax_id: retention.delete_spool_rows(self.config.spool, fax_id),
                                on_deleted=deleted)
        done = [item for item in items if item.deleted]
        if items:
            log.info("retention_sweep", deleted=len(done), kept=len(items) - len(done), keep_days=keep_days,
                     kept_reasons=sorted({item.skipped for item in items if item.skipped}))
        return items

    def _audit(self, event: str, **fields: Any) -> None:
        """A line in the audit trail now, after any queued before it (blocking: fsync); an
        unwritable trail is logged loudly (``_audit_flush``)."""
        self._audit_soon(event, **fields)
        self._audit_flush()

    def _audit_soon(self, event: str, **fields: Any) -> None:
        """Queue a line for the audit trail (any thread); ``_audit_lines`` or the next
        delivery outcomes write it, in order with the others."""
        self._audit_queue.append((event, fields))

    def _audit_flush(self) -> None:
        """Write every queued audit line, in one append and fsync (blocking).  One flush at
        a time, so that lines taken from the queue in order are written in order."""
        with self._audit_flushing:
            batch = []
            while self._audit_queue:
                batch.append(self._audit_queue.popleft())
            if not batch:
                return
            try:
                self.audit_log.record_many(batch)
            except OSError as exc:
                for event, fields in batch:
                    log.error("audit_trail_write_failed", audit_event=event, fax_id=fields.get("fax_id"),
                              error=str(exc))

    async def _audit_lines(self) -> None:
        """Write the queued audit lines in the bookkeeping thread, after the page writes
        waiting now (``PageWritesFirst``)."""
        while True:
            await self._audit_queued.wait()
            self._audit_queued = trio.Event()
            await self.page_writes_first.wait()
            await trio.to_thread.run_sync(self._audit_flush, limiter=self.bookkeeping_threads)

    # -- archive and webhooks ------------------------------------------------------
    def _write_record_now(self, record: InboundFax, pages, meta, index: bool = True) -> bool:
        """Pages (and meta.json) to the archive, then (``index``) its index row (blocking: a
        worker thread's work); whether anything was written (see ``InboundFax.write``)."""
        # One writer per record at a time, the index row included: a page write (page
        # threads) and the final write (after-call threads) may otherwise interleave.
        with record.write_lock:
            written = record.write(pages, meta)
            if written and index:
                self._index_upsert(meta, record.folder)
        return written

    def _index_progress(self, pending: list[tuple[InboundFax, dict[str, Any]]]) -> None:
        """Faxes in progress's index rows after page writes, in one transaction, but for
        those whose final row is in.  Each record's write lock is held until the rows are
        in, so a final write (its meta.json and row) cannot come in between and be undone.
        One thread does this, and the writers of a record hold only its lock: no deadlock.
        """
        with contextlib.ExitStack() as locks:
            rows = []
            for record, meta in sorted(pending, key=lambda item: item[0].fax_id):
                locks.enter_context(record.write_lock)
                if not record.final_written:
                    rows.append((meta, record.folder))
            if not rows:
                return
            try:
                self.index.upsert_many(rows)
            except ArchiveIndexError as exc:
                # The folders are the record: the faxes are safe; a reindex repairs the search.
                log.error("archive_index_write_failed", faxes=len(rows), error=str(exc),
                          fix="t38gw archive reindex")

    async def _index_progress_rows(self) -> None:
        """Write the in-progress index rows queued by page writes, after the page writes
        waiting now (``PageWritesFirst``)."""
        while True:
            await self._index_pending_added.wait()
            self._index_pending_added = trio.Event()
            await self.page_writes_first.wait()
            pending, self._index_pending = list(self._index_pending.values()), {}
            await trio.to_thread.run_sync(self._index_progress, pending, limiter=self.page_threads)

    async def _write_record(self, record: InboundFax, pages, meta) -> None:
        """Confirmed pages (and meta.json) to the archive, in a ``page_threads`` thread: the
        sender's MCF waits for this.  The index row (pages so far) follows later, which the
        MCF does not wait for: the index is a view the folders rebuild, and its SQLite
        transaction was ~10 of the ~40 GIL hand-backs a page write waited through under load
        (bench/load.py, issue 14).  ``_index_progress_rows`` writes it once no page write
        waits for a thread, with the other faxes' rows queued meanwhile; not in the
        bookkeeping thread (one thread for every call's rows held up the delivery outcomes
        and fax_stored lines queued there: 300 calls, page confirmed -> archived p50 5.7 s).
        A row still queued when the fax's final row is in is skipped."""
        written = await trio.to_thread.run_sync(self._write_record_now, record, pages, meta, False,
                                                limiter=self.page_threads)
        if written:
            self._index_pending[record.fax_id] = (record, meta)
            self._index_pending_added.set()

    async def _finish_record(self, session: FaxSession) -> None:
        record = session.record
        now = time.time()
        plan_deliveries(record.meta, webhooks_for(self.config, record.route), now, self.rng)
        pages, meta = record.snapshot()

        enqueued: list[Delivery] = []

        def store_and_spool() -> str | None:
            """The final write, then its webhooks into the spool; why the write failed, if it did."""
            try:
                try:
                    self._write_record_now(record, pages, meta)
                except OSError as exc:
                    return str(exc)
                # The document (as just written) base64'd, the spool fsynced (off the event loop, issue 14).
                enqueue_planned(self.spool, record.folder, meta, self.config, now, record.documents, enqueued)
                return None
            finally:
                record.documents.clear()  # spooled, or the write failed: not kept in memory

        # One thread hop for both: each hop waits in the after-call queue again, behind every
        # fax that ended meanwhile (1,000 calls ending within seconds, bench/load.py).  Its
        # pages are on disk already: other calls' page writes go first.
        await self.page_writes_first.wait()
        failure = await trio.to_thread.run_sync(store_and_spool, limiter=self.after_call_threads)
        if failure is not None:
            log.error("archive_write_failed", fax_id=record.fax_id, error=failure)
            return
        # Before its webhook can be delivered: the trail holds the fax before its delivery.
        self._audit_soon("fax_stored", fax_id=record.fax_id, direction="inbound", status=meta["status"],
                         pages=len(meta["pages"]))
        self._audit_queued.set()
        self.worker.offer(enqueued)  # committed to the spool: started without reading it back
        status = meta["status"]
        self.metrics.calls.labels(result=status).inc()
        self.metrics.calls_by_media.labels(media=meta.get("media", "t38")).inc()
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
        for folder in self.index.folders_to_recover(ended_since=time.time() - RESPOOL_WINDOW_SECONDS):
            try:
                meta = read_meta(folder)
            except (OSError, ValueError):
                continue
            if not meta.get("in_progress"):
                count += enqueue_planned(self.spool, folder, meta, self.config, time.time())
        return count

    def _delivery_outcomes(self, outcomes: list[tuple[Delivery, DeliveryState, str]]) -> None:
        """Delivery outcomes the spool has recorded (the worker's recording thread): metrics,
        the audit trail (with any lines queued before them: one fsync) and meta.json."""
        for delivery, state, _ in outcomes:
            result = {DeliveryState.DELIVERED: "delivered", DeliveryState.DEAD: "dead"}.get(state, "failed")
            self.metrics.webhook_deliveries.labels(result=result).inc()
            if state in (DeliveryState.DELIVERED, DeliveryState.DEAD):
                self._audit_soon("webhook_delivered" if state is DeliveryState.DELIVERED else "webhook_dead",
                                 fax_id=delivery.fax_id, webhook=delivery.webhook, delivery_id=delivery.id,
                                 attempts=delivery.attempts + 1)
        self._audit_flush()
        for delivery, state, error in outcomes:
            folder = self.index.get_folder(delivery.fax_id)
            if folder is not None:
                record_outcome(folder, delivery.id, state.value, delivery.attempts + 1, error, time.time())


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""  # that worker has not written yet (or is being restarted)


def _call_id_in(folder: Path) -> str:
    """The SIP Call-ID in a fax folder's meta.json ("" when it has none or cannot be read)."""
    try:
        return str(archive.read_meta(folder).get("sip", {}).get("call_id") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _local_time(unix_seconds: float) -> Any:
    import datetime
    return datetime.datetime.fromtimestamp(unix_seconds).astimezone()


def _safe_name(name: str) -> str:
    """An uploaded file's name, safe as a file name in our temporary folder (kept for
    the messages that name it)."""
    cleaned = "".join(c if c.isalnum() or c in "._- " else "_" for c in name)[:80].strip(". ")
    return cleaned or "document"


def _listeners(config: Config) -> str:
    return ", ".join(map(str, config.sip.listen))


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


# See Gateway.page_threads.  Each write of a confirmed page costs ~4 ms of CPU but, behind a
# busy event loop, ~35 ms of waiting for the GIL back after each of its ~40 system calls;
# the waits overlap across threads.  bench/load.py, 1,000 ECM calls, two workers: with 2
# threads 1,041 MCFs were held over 2.5 s (median 3.6 s, the sender's T4 is 3 s); with 4,
# 359 (median 2.9 s, max 3.4 s), T.30 p99 530 -> 516 ms; with 6, 12 - but the loop lagged
# up to 0.5 s, T.30 p99 726-863 ms and the kernel dropped 66 datagrams.
PAGE_WRITE_THREADS = 4
AFTER_CALL_THREADS = 2  # see Gateway.after_call_threads
BOOKKEEPING_THREADS = 1  # see Gateway.bookkeeping_threads
# Work no sender waits for waits while page writes are queued (PageWritesFirst), checked
# this often, for this long at most.
PAGE_WRITES_FIRST_POLL = 0.05
PAGE_WRITES_FIRST_MAX_DEFER = 5.0
DECODE_AHEAD_THREADS = 2  # see Gateway.decode_threads


def tune_interpreter() -> None:
    """Process-wide, for a gateway process: the garbage collector's thresholds
    (``GC_THRESHOLDS``) and the GIL's switch interval (``SWITCH_INTERVAL_SECONDS``)."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


async def serve(config: Config, role: WorkerRole | None = None) -> int:
    """Run a gateway until SIGTERM/SIGINT (graceful) or a second signal (immediate).

    Returns the process exit status: 0 after a clean stop, 1 if it could not start.
    """
    try:
        gateway = Gateway(config, role=role)
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
