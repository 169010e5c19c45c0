"""One inbound fax call's media side: UDPTL endpoint <-> T.30 receive engine <-> archive.

The SIP side (``t38gw.gateway``) owns the dialog and tells the session what happened
(``t38_ready``, ``sip_ended``, ``fail``); the session runs in its own task:

1. wait (bounded) until T.38 is negotiated;
2. drive the engine: send what is due, then sleep until a datagram arrives or the
   earliest deadline (engine timers, UDPTL reorder timer, our own bounds) - never on a
   fixed tick;
3. every confirmed page goes to a writer task that saves the documents and meta.json
   atomically while the engine carries on; the MCF frame itself is held until the page
   is on disk (it follows a 1 s V.21 preamble, so normally nothing waits): a sender
   never hears "confirmed" for a page a crash could still lose;
4. at the end, meta.json is written final, webhooks are planned and spooled.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import structlog
import trio

from imaging import Page
from udptl.endpoint import UdptlEndpoint
from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

from t38gw.faxrecord import InboundFax
from t38gw.t30.t38_io import split_to_fit
from t38gw.t30 import CallEnded, DocumentEnded, PageReceived, PageRejected, PhaseBCompleted, ProtocolEventLogged
from t38gw.t30 import ReceiverConfig, T30Receiver, T30Result

# Bounds: an audio call that never turns into T.38, and a fax that never ends.
T38_WAIT_SECONDS = 60.0
MAX_FAX_SECONDS = 2 * 3600.0
# After CallEnded: time to let the final DCN (and its repeats) leave.
DRAIN_SECONDS = 3.0
# How long our MCF may wait for the confirmed page to reach the disk (T.30 gives the
# sender T4 = 3 s for a response; a slower disk costs a repeated post-page command).
PAGE_WRITE_WAIT_SECONDS = 2.5

log = structlog.get_logger("t38gw.call")



@dataclass(frozen=True)
class T38Session:
    """What SDP negotiation settled: where to send and how."""

    remote: tuple[str, int]
    version: int
    max_bitrate: int
    error_correction: str  # "redundancy" | "fec" | "none"
    rate_management: str
    peer_max_datagram: int


class FaxSession:
    """See the module docstring.  ``on_finished(session)`` runs when the record is final."""

    def __init__(self, *, record: InboundFax, endpoint: UdptlEndpoint, receiver_config: ReceiverConfig,
                 t38_settings, rng, write_record: Callable, finish_record: Callable,
                 metrics=None, reroute: Callable | None = None) -> None:
        self.record = record
        self.endpoint = endpoint
        self.receiver_config = receiver_config
        self.t38_settings = t38_settings  # config.t38 (redundancy depth, FEC span...)
        self.rng = rng
        self._write_record = write_record
        self._finish_record = finish_record
        self._reroute = reroute
        self.metrics = metrics
        self.engine: T30Receiver | None = None
        self.t38: T38Session | None = None
        self.t38_changed = trio.Event()
        self.sip_end_reason: str | None = None
        self.failure: str | None = None
        self.ended_result: CallEnded | None = None
        self.document_ended = False
        self.hangup_requested = trio.Event()  # the gateway should send BYE
        self.done = trio.Event()
        self._wake_scope: trio.CancelScope | None = None
        self._page_send, self._page_receive = trio.open_memory_channel(math.inf)
        self._pages_submitted = 0
        self._pages_written = 0
        self._page_written = trio.Event()
        self._write_failure: str | None = None
        self.t30_started_at: float | None = None
        self.t30_ended_at: float | None = None

    # -- from the SIP side ------------------------------------------------------
    def t38_ready(self, t38: T38Session) -> None:
        """T.38 was negotiated (first INVITE, our re-INVITE or the peer's)."""
        self.t38 = t38
        receiver = UdptlReceiver(t38.version)
        sender = UdptlSender(error_correction=t38.error_correction,
                             redundancy_depth=self.t38_settings.redundancy_depth,
                             fec_span=self.t38_settings.fec_span, fec_entries=self.t38_settings.fec_entries,
                             max_datagram=t38.peer_max_datagram, rng=self.rng)
        if self.endpoint.receiver is not None and self.endpoint.remote == t38.remote:
            # A repeated negotiation (a refresh with new parameters): keep the stream state.
            receiver, sender = self.endpoint.receiver, self.endpoint.sender
        self.endpoint.start(t38.remote, receiver, sender)
        t38_meta = self.record.meta["t38"]
        t38_meta.update(version=t38.version, max_bitrate=t38.max_bitrate, error_correction=t38.error_correction,
                        rate_management=t38.rate_management, max_datagram=t38.peer_max_datagram)
        self.t38_changed.set()
        self._wake()

    def sip_ended(self, reason: str) -> None:
        """The dialog is over (BYE, CANCEL, timeout)."""
        if self.sip_end_reason is None:
            self.sip_end_reason = reason
        self.t38_changed.set()
        self._wake()

    def fail(self, reason: str) -> None:
        """Give up on the call (e.g. the peer refused T.38)."""
        if self.failure is None:
            self.failure = reason
        self.t38_changed.set()
        self._wake()

    def _wake(self) -> None:
        if self._wake_scope is not None:
            self._wake_scope.cancel()

    # -- the task ---------------------------------------------------------------
    async def run(self) -> None:
        bound = log.bind(call_id=self.record.sip.get("call_id"), fax_id=self.record.fax_id)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, bound)
                try:
                    with trio.move_on_after(MAX_FAX_SECONDS) as overall:
                        try:
                            await self._run_fax(bound)
                        except Exception as exc:
                            # A bug in one call must not lose its pages or the other calls:
                            # close the record with what was confirmed, say why, hang up.
                            bound.exception("call_failed_internally")
                            self.failure = f"internal error: {type(exc).__name__}: {exc}"
                            self.hangup_requested.set()
                    if overall.cancelled_caught:
                        self.failure = self.failure or f"call exceeded {MAX_FAX_SECONDS:.0f} s"
                        if self.engine is not None:
                            self._handle_events(self.engine.hang_up(trio.current_time()), bound)
                finally:
                    self._page_send.close()
            await self._finish(bound)
        finally:
            self.endpoint.close()
            self.done.set()

    async def _run_fax(self, bound) -> None:
        with trio.move_on_after(T38_WAIT_SECONDS) as waiting:
            while self.t38 is None and self.sip_end_reason is None and self.failure is None:
                self.t38_changed = trio.Event()
                await self.t38_changed.wait()
        if self.t38 is None:
            if waiting.cancelled_caught:
                self.failure = f"no T.38 negotiated within {T38_WAIT_SECONDS:.0f} s of answering"
            bound.warning("call_without_t38", reason=self.failure or self.sip_end_reason)
            self.hangup_requested.set()
            return
        bound.info("t38_started", remote=f"{self.t38.remote[0]}:{self.t38.remote[1]}",
                   local_port=self.endpoint.port, version=self.t38.version,
                   error_correction=self.t38.error_correction, peer_max_datagram=self.t38.peer_max_datagram)
        engine = self.engine = T30Receiver(self.receiver_config)
        self.t30_started_at = trio.current_time()
        self._handle_events(engine.start(trio.current_time()), bound)
        while True:
            now = trio.current_time()
            await self._send_due(now)
            if self.ended_result is not None:
                break
            if self.sip_end_reason is not None or self.failure is not None:
                self._handle_events(engine.hang_up(now), bound)
                continue
            deadline = min(d for d in (engine.next_deadline(), self.endpoint.next_deadline(), math.inf)
                           if d is not None)
            with trio.CancelScope() as scope:
                self._wake_scope = scope
                items = await self.endpoint.receive_until(deadline)
            self._wake_scope = None
            if scope.cancelled_caught:
                continue
            now = trio.current_time()
            for item in items:
                if isinstance(item, IfpReceived):
                    if item.packet is not None:
                        self._handle_events(engine.ifp_received(item.packet, now), bound)
                elif isinstance(item, IfpLost):
                    self._handle_events(engine.ifps_lost(len(item.seqs), now), bound)
                if self.ended_result is not None:
                    break
            timer = engine.next_deadline()
            if timer is not None and timer <= now and self.ended_result is None:
                self._handle_events(engine.handle_timer(now), bound)
        self.t30_ended_at = trio.current_time()
        # Let the DCN we may have queued go out (bounded), unless the dialog is gone.
        if self.sip_end_reason is None:
            with trio.move_on_after(DRAIN_SECONDS):
                while not engine.finished:
                    deadline = engine.next_deadline()
                    if deadline is not None:
                        await trio.sleep_until(deadline)
                    await self._send_due(trio.current_time())
                    if deadline is None:
                        break
        self.hangup_requested.set()

    async def _send_due(self, now: float) -> None:
        engine = self.engine
        if engine is None or self.sip_end_reason is not None:
            return
        version = self.t38.version
        for out in engine.ifps_to_send(now):
            if not out.packet.is_indicator:
                # The sender forgets a page once it hears MCF, so the frame that carries it
                # leaves only when the page is on disk (normally long before: it follows a
                # 1 s V.21 preamble).  Indicators go on time.
                await self._wait_pages_written()
                if self._write_failure is not None:
                    # A page we could not store is never confirmed: drop this response and
                    # end the call, so the sending machine reports the fax as failed and its
                    # user sends it again (a duplicate beats a page lost in silence).
                    self.fail(f"archive write failed ({self._write_failure}): the page was not confirmed")
                    return
            for raw in split_to_fit(out.packet, version, self.endpoint.sender.max_ifp):
                for _ in range(out.repeat):
                    await self.endpoint.send_ifp(raw)

    def _handle_events(self, events, bound) -> None:
        record = self.record
        for event in events:
            if isinstance(event, PhaseBCompleted):
                record.meta["t30"].update(remote_ident=event.remote_ident, ecm=event.ecm, bit_rate=event.bit_rate,
                                          modem=event.modem, compression=event.compression)
                if self._reroute is not None and not record.pages:
                    self._reroute(self, event.remote_ident)
                bound.info("t30_phase_b", remote_ident=event.remote_ident, modem=event.modem,
                           bit_rate=event.bit_rate, ecm=event.ecm, compression=event.compression,
                           resolution=f"{event.x_dpi}x{event.y_dpi}", width_px=event.width_px)
            elif isinstance(event, PageReceived):
                page = Page(event.width, event.height, event.x_dpi, event.y_dpi, event.bitmap)
                record.add_page(page, event.bad_rows)
                self._page_send.send_nowait(record.snapshot())
                self._pages_submitted = len(record.pages)
                if self.metrics is not None:
                    self.metrics.pages.labels(direction="inbound").inc()
                bound.info("page_confirmed", page=event.number, width_px=event.width, height_px=event.height,
                           bad_rows=event.bad_rows, quality=event.quality.name, ecm=event.ecm,
                           loss_gaps=getattr(event, "ifp_loss_gaps", 0))
            elif isinstance(event, PageRejected):
                bound.warning("page_rejected", page=event.number, height_px=event.height, bad_rows=event.bad_rows,
                              longest_bad_run=event.longest_bad_run)
            elif isinstance(event, DocumentEnded):
                if not event.more_documents:
                    self.document_ended = True
                bound.info("document_ended", pages=event.pages, more_documents=event.more_documents)
            elif isinstance(event, CallEnded):
                self.ended_result = event
                bound.info("t30_ended", result=event.result.value, pages=event.pages, reason=event.reason)
            elif isinstance(event, ProtocolEventLogged):
                bound.debug("t30_protocol_event", state=event.state, what=event.what)

    async def _wait_pages_written(self) -> None:
        with trio.move_on_after(PAGE_WRITE_WAIT_SECONDS):
            while self._pages_written < self._pages_submitted and self._write_failure is None:
                self._page_written = trio.Event()
                await self._page_written.wait()

    async def _writer(self, bound) -> None:
        async for pages, meta in self._page_receive:
            try:
                await self._write_record(self.record, pages, meta)
            except OSError as exc:
                # The disk is the system of record: say so loudly and confirm nothing more
                # (_send_due ends the call; the final write still tries to keep the pages).
                bound.error("archive_write_failed", error=str(exc), pages=len(pages))
                self._write_failure = self._write_failure or str(exc)
            else:
                self._pages_written = max(self._pages_written, len(pages))
            self._page_written.set()

    def outcome(self) -> tuple[str, str]:
        """(status, reason) for meta.json."""
        pages = len(self.record.pages)
        ended = self.ended_result
        if ended is not None and ended.result is T30Result.OK and pages:
            # DCN after our MCF to EOP: the sender considers the document delivered.
            return "received", ""
        if self.failure:
            reason = self.failure
        elif ended is not None and ended.result is T30Result.CALL_DROPPED:
            reason = f"caller hung up ({self.sip_end_reason or 'call dropped'}) during T.30: {ended.reason}"
        elif ended is not None:
            reason = f"T.30 {ended.result.value}: {ended.reason}"
        elif self.sip_end_reason:
            reason = f"call ended before T.38 started ({self.sip_end_reason})"
        else:
            reason = "call ended without a T.30 result"
        if ended is not None and ended.result is T30Result.OK and not pages:
            reason = "the sender ended the call without sending a page"
        return ("partial" if pages else "failed"), reason

    async def _finish(self, bound) -> None:
        status, reason = self.outcome()
        endpoint = self.endpoint
        receiver = endpoint.receiver
        if receiver is not None:
            stats = receiver.stats
            self.record.meta["t38"].update(
                packets_received=stats.received, packets_lost=stats.lost,
                packets_recovered=stats.recovered_redundancy + stats.recovered_fec)
        self.record.finish(status, reason, time.time())
        await self._finish_record(self)
        bound.info("fax_finished", status=status, reason=reason, pages=len(self.record.pages),
                   udptl_received=self.record.meta["t38"]["packets_received"],
                   udptl_lost=self.record.meta["t38"]["packets_lost"],
                   udptl_recovered=self.record.meta["t38"]["packets_recovered"],
                   udptl_foreign=endpoint.stats.foreign_source, udptl_undecodable=endpoint.stats.undecodable,
                   folder=str(self.record.folder))
