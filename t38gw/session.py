"""One inbound fax call's media side: UDPTL endpoint <-> T.30 receive engine <-> archive.

The SIP side (``t38gw.gateway``, executing the commands of the call core
``t38gw.call``) owns the dialog and tells the session what happened (``t38_ready``,
``sip_ended``, ``fail``); the session runs in its own task:

1. wait until T.38 is negotiated (the call core bounds that wait, ``T38_WAIT_SECONDS``,
   and calls ``fail`` when it is over);
2. drive the engine: send what is due, then sleep until a datagram arrives or the
   earliest deadline (engine timers, UDPTL reorder timer, our own bounds) - never on a
   fixed tick;
3. every confirmed page goes to a writer task that saves the documents and meta.json
   atomically while the engine carries on; the MCF frame itself is held until the page
   is on disk (it follows a 1 s V.21 preamble, so normally nothing waits): a sender
   never hears "confirmed" for a page a crash could still lose;
4. at the end, meta.json is written final, webhooks are planned and spooled.

A non-ECM page that lost image data beyond recovery is answered RTN by the engine
(T.30 5.3.6.2) and reported as ``PageRejected`` with its pixels: the session keeps the
best such copy (fewest rows lost, the latest on a tie) as a provisional page.  A
``PageReceived`` with the same number (the sender sent it again and we confirmed it)
replaces it; one with a higher number (the sender went on to its next page, T.30
5.3.6.2.8) or the end of the call (the sender gave up) archives it as that page with
``complete: false``, and the fax is ``partial``.
The provisional copy is held G4-coded, like every page (see ``t38gw.faxrecord``).

Bounds: ``max_call_seconds`` (``[limits]``) ends a call cleanly, keeping its confirmed
pages, with the reason in meta.json; the engine's own limits (pages, rows, ECM blocks)
end it as ``T30Result.LIMIT_REACHED``.  Media is accepted from the signalled peer only
(``T38Session.media_latching``, ``expected_host``; ``udptl.endpoint``), and the latch is
frozen when the first page is confirmed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import structlog
import trio

from imaging import DecodedPage, Page
from imaging.output import g4_coding
from imaging.tiff import CodedPage
from imaging.wholepage import LibtiffAttempt
from udptl.endpoint import AudioDatagram, ForeignDatagrams, UdptlEndpoint
from udptl.ifp import FieldType
from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

from t38gw import archive
from t38gw.faxrecord import InboundFax, compress_page
from t38gw.negotiation import AudioSession, T38Session
from t38gw.overload import SLOW_PAGE_WRITE_SECONDS
from t38gw.t30.t38_io import split_to_fit
from t38gw.t30 import CallEnded, DocumentEnded, PageReceived, PageRejected, PhaseBCompleted, ProtocolEventLogged
from t38gw.t30 import ReceiverConfig, T30Receiver, T30Result

# Bound (by default: [limits] max_call_seconds) on a fax that never ends.
DEFAULT_MAX_CALL_SECONDS = 7200.0
# After CallEnded: time to let the final DCN (and its repeats) leave.
DRAIN_SECONDS = 3.0
# Our response to a post-page command (MCF...) leaves only once the confirmed page is on
# disk: the sender forgets a page it heard MCF for, so a crash before the write would lose
# it.  Until issue 14's load bench this wait gave up after 2.5 s (inside the sender's T4 of
# 3 s) and sent the MCF anyway; at ~800 calls ending their pages within seconds, most page
# writes queued longer than that (the MCF left before the page was durable).  Now a slow
# disk or an overloaded gateway costs the sender a repeated command (it repeats it when its
# T4 expires, three times in all), which we answer once the page is written; a page not on disk
# after PAGE_WRITE_GIVE_UP_SECONDS (past the sender's last repeat) is not confirmed at all:
# the call ends as after a failed write, and the sender reports the fax as not sent.
PAGE_WRITE_GIVE_UP_SECONDS = 15.0

log = structlog.get_logger("t38gw.call")



@dataclass(frozen=True)
class _Provisional:
    """The best copy of a page answered RTN for unrecovered image loss (G4-coded)."""

    number: int
    coded: CodedPage
    sha256: str
    rows_lost: int
    ifp_loss_gaps: int


#: How long the post-page command waits for its page's decode running on a thread, at
#: most; then the engine decodes the page itself (the sender repeats its command after T4).
DECODE_AHEAD_WAIT_SECONDS = 1.0
_FRAME_ENDS = frozenset({FieldType.HDLC_FCS_OK, FieldType.HDLC_FCS_OK_SIG_END,
                         FieldType.HDLC_FCS_BAD, FieldType.HDLC_FCS_BAD_SIG_END})


class _DecodeAhead:
    """A page's decode handed to a thread: ``started`` once the thread runs it (set there),
    ``done`` when it is over; ``scope`` cancels it while it still waits for a thread."""

    def __init__(self) -> None:
        self.started = False
        self.done = trio.Event()
        self.scope = trio.CancelScope()


def _completes_a_frame(items: list) -> bool:
    """Whether an IFP among ``items`` ends an HDLC frame (the engine acts on whole frames)."""
    for item in items:
        if type(item) is IfpReceived and item.packet is not None:
            for field in item.packet.fields or ():  # an indicator has none
                if field.field_type in _FRAME_ENDS:
                    return True
    return False


class FaxSession:
    """See the module docstring.  ``on_finished(session)`` runs when the record is final."""

    def __init__(self, *, record: InboundFax, endpoint: UdptlEndpoint, receiver_config: ReceiverConfig,
                 t38_settings, rng, write_record: Callable, finish_record: Callable,
                 metrics=None, reroute: Callable | None = None,
                 max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
                 audio_ticks: Callable[[FaxSession, bool], None] | None = None, jitter_ms: int = 60,
                 ecm: bool = True, decode_threads: trio.CapacityLimiter | None = None,
                 page_write_held: Callable[[float], None] | None = None) -> None:
        self.record = record
        # Told how long each response waited for its page write (admission, t38gw.overload).
        self._page_write_held = page_write_held
        # Threads that decode a page between its image carrier's end and the post-page
        # command (T30Receiver.page_decode_ahead); None: the engine decodes at the command.
        self._decode_threads = decode_threads
        self._nursery: trio.Nursery | None = None
        # The last page decoded ahead and its meta.json SHA-256, worked out on that thread.
        self._digest_ahead: tuple[bytes, str] | None = None
        # The page decode handed to a thread, until it is done (None: none in flight).
        self._decoding_ahead: _DecodeAhead | None = None
        # The audio fax leg ([t38] audio_fallback): the gateway's one ticking task calls
        # audio_tick every 20 ms while ``audio_ticks(self, True)`` registered us.
        self.audio: AudioSession | None = None
        self.leg = None  # t38gw.audioleg.AudioLeg while the fax runs as G.711
        self._audio_ticks = audio_ticks
        self._jitter_ms = jitter_ms
        self._ecm = ecm
        self._hold_since: float | None = None
        self._bound: Any = None  # the call's bound logger, once run() starts
        self._carry: list = []  # IFPs the audio leg had queued when T.38 took over
        self.rtp_stats = None  # the audio leg's stats once it was stopped
        self.max_call_seconds = float(max_call_seconds)
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
        # EOP answered MCF: the document is whole; the record is finished (and its webhook
        # sent) at once instead of after the sender's DCN and the hang-up (issue 14: MCF ->
        # webhook).  The task waiting for it stops waiting when the call ends.
        self._document_done = trio.Event()
        self._document_wait = trio.CancelScope()
        self._early_pages: int | None = None  # pages when the record was finished early
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
        self.provisional: _Provisional | None = None
        self._foreign_logged = False

    # -- from the SIP side ------------------------------------------------------
    def audio_ready(self, audio: AudioSession) -> None:
        """The call is on G.711 and the fax is to run as audio (until T.38, if ever)."""
        if self.t38 is not None:
            return  # already on T.38: audio is a leftover of the negotiation
        self.audio = audio
        self.endpoint.start_audio(audio.remote, latching=audio.media_latching, expected_host=audio.expected_host)
        if self.leg is not None:
            self.leg.repoint(audio)
        self.t38_changed.set()
        self._wake()

    def t38_ready(self, t38: T38Session) -> None:
        """T.38 was negotiated (first INVITE, our re-INVITE or the peer's)."""
        self.t38 = t38
        self._stop_audio()
        receiver = UdptlReceiver(t38.version)
        sender = UdptlSender(error_correction=t38.error_correction,
                             redundancy_depth=self.t38_settings.redundancy_depth,
                             fec_span=self.t38_settings.fec_span, fec_entries=self.t38_settings.fec_entries,
                             max_datagram=t38.peer_max_datagram, rng=self.rng)
        if self.endpoint.receiver is not None and self.endpoint.remote == t38.remote:
            # A repeated negotiation (a refresh with new parameters): keep the stream state.
            receiver, sender = self.endpoint.receiver, self.endpoint.sender
        self.endpoint.start(t38.remote, receiver, sender, latching=t38.media_latching,
                            expected_host=t38.expected_host)
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
        """The call's state changed (SIP, the audio ticker): the task looks at it now."""
        if self._wake_scope is not None:
            self._wake_scope.cancel()  # asleep while the audio leg runs
        self.endpoint.interrupt()  # waiting for datagrams

    # -- the audio fax leg -------------------------------------------------------
    def _start_audio_leg(self, engine, bound) -> bool:
        from t38gw.audiofax import AudioFaxUnavailable
        from t38gw.audioleg import AudioLeg

        assert self.audio is not None
        try:
            self.leg = AudioLeg(self.audio, engine, rng=self.rng, jitter_ms=self._jitter_ms, ecm=self._ecm)
        except AudioFaxUnavailable as exc:
            self.fail(f"the fax came as audio and SpanDSP is not available: {exc}")
            return False
        bound.info("audio_fax_started", media=self.audio.media, remote=f"{self.audio.remote[0]}:{self.audio.remote[1]}",
                   local_port=self.endpoint.port, payload_type=self.audio.payload_type, jitter_ms=self._jitter_ms)
        if self._audio_ticks is not None:
            self._audio_ticks(self, True)
        return True

    def _stop_audio(self) -> None:
        leg = self.leg
        if leg is None:
            return
        if self._audio_ticks is not None:
            self._audio_ticks(self, False)
        self.rtp_stats = leg.stats()
        # What the engine already handed to the modems' queue goes on over UDPTL instead.
        self._carry = list(leg.pending())
        self.leg = None
        leg.close()

    def _may_send(self, out) -> bool:
        """Whether an IFP may go to the modems now: a response frame waits for the
        confirmed page to be on disk, as on T.38 (``_wait_pages_written``)."""
        if out.packet.is_indicator or self._pages_written >= self._pages_submitted:
            self._hold_since = None
            return self._write_failure is None or out.packet.is_indicator
        now = trio.current_time()
        if self._hold_since is None:
            self._hold_since = now
        if now - self._hold_since >= PAGE_WRITE_GIVE_UP_SECONDS:
            self._give_up_page_write(now - self._hold_since)  # audio_tick then ends the call
        return False

    def audio_tick(self, now: float) -> None:
        """Called every 20 ms by the gateway's ticker while the fax runs as audio."""
        leg = self.leg
        if leg is None or self.t38 is not None:
            return
        if self._write_failure is not None and self.failure is None:
            self.fail(f"archive write failed ({self._write_failure}): the page was not confirmed")
        for item in self.endpoint.drain_audio(now):
            if isinstance(item, AudioDatagram):
                leg.rtp_received(item.data, item.arrived)
            elif not self._foreign_logged:
                self._foreign_logged = True
                self._bound.warning("rtp_foreign_source", source=f"{item.source[0]}:{item.source[1]}",
                                    count=item.count)
        events, datagram = leg.tick(now, self._may_send)
        self.endpoint.send_audio_now(datagram)
        if events:
            self._handle_events(events, self._bound)
            if self.ended_result is not None:
                self._wake()

    # -- the task ---------------------------------------------------------------
    async def run(self) -> None:
        bound = self._bound = log.bind(call_id=self.record.sip.get("call_id"), fax_id=self.record.fax_id)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer, bound)
                nursery.start_soon(self._finish_when_document_ends, bound)
                try:
                    with trio.move_on_after(self.max_call_seconds) as overall:
                        try:
                            await self._run_fax(bound)
                        except Exception as exc:
                            # A bug in one call must not lose its pages or the other calls:
                            # close the record with what was confirmed, say why, hang up.
                            bound.exception("call_failed_internally")
                            self.failure = f"internal error: {type(exc).__name__}: {exc}"
                            self.hangup_requested.set()
                    if overall.cancelled_caught:
                        self.failure = self.failure or (f"the call reached the {self.max_call_seconds:g} s limit "
                                                        "([limits] max_call_seconds)")
                        bound.warning("call_limit_reached", limit="max_call_seconds",
                                      seconds=self.max_call_seconds, pages=len(self.record.pages))
                        if self.engine is not None:
                            self._handle_events(self.engine.hang_up(trio.current_time()), bound)
                finally:
                    self._page_send.close()
                    self._document_wait.cancel()
            if self._early_pages is None or len(self.record.pages) != self._early_pages:
                await self._finish(bound)  # (again, if a page came after the early finish)
        finally:
            self._stop_audio()
            self.endpoint.close()
            # The call's state (this session, its SIP call, their callbacks) forms reference
            # cycles; cut them here so it is freed as the call ends, not at the next full
            # garbage collection, which would otherwise walk every ended call's objects.
            self._reroute = None
            self._nursery = None
            self.done.set()

    async def _run_fax(self, bound) -> None:
        while self.t38 is None and self.audio is None and self.sip_end_reason is None and self.failure is None:
            self.t38_changed = trio.Event()
            await self.t38_changed.wait()
        if self.t38 is None and self.audio is None:
            self._log_without_t38(bound)
            self.hangup_requested.set()
            return
        if self.t38 is not None:
            self._log_t38_started(bound)
        engine = self.engine = self._new_engine()
        self.t30_started_at = trio.current_time()
        # On audio the engine starts on answer: SpanDSP's gateway passes no CNG/CED on.
        self._handle_events(engine.start(trio.current_time()), bound)
        if self.t38 is None and not self._start_audio_leg(engine, bound):
            self._handle_events(engine.hang_up(trio.current_time()), bound)
        on_t38 = self.t38 is not None
        # The receiving engine's page_decode_ahead (the sending one has none), if threads run it.
        decode_ahead = getattr(engine, "page_decode_ahead", None) if self._decode_threads is not None else None
        while True:
            now = trio.current_time()
            if self.leg is None and self.t38 is not None:
                if not on_t38:
                    on_t38 = True  # moved from the audio leg to UDPTL: the same engine goes on
                    self._log_t38_started(bound, after_audio=True)
                await self._send_due(now)
            if self.ended_result is not None:
                break
            if self.sip_end_reason is not None or self.failure is not None:
                self._handle_events(engine.hang_up(now), bound)
                if self.leg is not None and self.ended_result is None:
                    await trio.sleep(0.02)  # the ticker carries the engine's last words
                continue
            if self.leg is not None:
                # The ticker drives the engine and reads the RTP (drain_audio, no wake-up per
                # packet); this task only waits to be woken (T.38, the end, a failure).
                with trio.CancelScope() as scope:
                    self._wake_scope = scope
                    await trio.sleep_forever()
                self._wake_scope = None
                continue
            deadline = min(d for d in (engine.next_deadline(), self.endpoint.next_deadline(), math.inf)
                           if d is not None)
            # ``_wake`` interrupts this wait (the endpoint returns what it has read so far).
            items = await self.endpoint.receive_until(deadline)
            job = self._decoding_ahead
            if job is not None and _completes_a_frame(items):
                # The post-page command may be in: its answer needs the page decoded.
                self._decoding_ahead = None
                if job.started:
                    # On a thread now: wait for it rather than let the engine decode the
                    # page again here, in the event loop every call's datagrams wait on
                    # (at 1,000 calls 5 of 12 py-spy dumps found the loop inside libtiff).
                    with trio.move_on_after(DECODE_AHEAD_WAIT_SECONDS):
                        await job.done.wait()
                else:
                    # Still queued behind other pages: the engine decodes it now (~5 ms)
                    # instead of this answer waiting out the queue (waiting for queued
                    # decodes too put T.30's p99 at 1.3 s at 300 non-ECM calls, against
                    # 0.3 s), and the thread does not do it a second time.
                    job.scope.cancel()
            now = trio.current_time()
            for item in items:
                if isinstance(item, IfpReceived):
                    if item.packet is not None:
                        events = engine.ifp_received(item.packet, now)
                        if events:  # image data, most IFPs, makes none
                            self._handle_events(events, bound)
                elif isinstance(item, IfpLost):
                    self._handle_events(engine.ifps_lost(len(item.seqs), now), bound)
                elif isinstance(item, ForeignDatagrams) and not self._foreign_logged:
                    self._foreign_logged = True
                    bound.warning("udptl_foreign_source", source=f"{item.source[0]}:{item.source[1]}",
                                  count=item.count)
                if self.ended_result is not None:
                    break
            timer = engine.next_deadline()
            if timer is not None and timer <= now and self.ended_result is None:
                self._handle_events(engine.handle_timer(now), bound)
            if decode_ahead is not None and self._nursery is not None:
                attempt = decode_ahead()
                if attempt is not None:
                    self._decoding_ahead = _DecodeAhead()
                    self._nursery.start_soon(self._decode_ahead, engine, attempt, bound, self._decoding_ahead)
        self.t30_ended_at = trio.current_time()
        # Let the DCN we may have queued go out (bounded), unless the dialog is gone.
        if self.sip_end_reason is None and self.leg is not None:
            with trio.move_on_after(DRAIN_SECONDS):
                while not engine.finished or any(True for _ in self.leg.pending()):
                    await trio.sleep(0.1)
                await trio.sleep(1.5)  # the modems play the DCN's V.21 burst out
        elif self.sip_end_reason is None:
            with trio.move_on_after(DRAIN_SECONDS):
                while not engine.finished:
                    deadline = engine.next_deadline()
                    if deadline is not None:
                        await trio.sleep_until(deadline)
                    await self._send_due(trio.current_time())
                    if deadline is None:
                        break
        self.hangup_requested.set()

    async def _decode_ahead(self, engine: T30Receiver, attempt: LibtiffAttempt, bound, job: _DecodeAhead) -> None:
        """Run the page's libtiff decode on a thread (its C part beside the event loop, on
        another core) and give the engine the result before the post-page command needs it."""
        assert self._decode_threads is not None

        def decode() -> tuple[DecodedPage, str] | None:
            job.started = True
            page = attempt.run()
            if page is None:
                return None
            if page.g4 is None:
                # The archive keeps pages G4: coded here (a proven MMR page brings its own),
                # the page write our MCF waits for need not (~2 ms of libtiff a non-ECM page).
                page = dataclasses.replace(page, g4=g4_coding(page.bitmap, page.width, page.height))
            return page, archive.page_sha256(page.bitmap)

        try:
            with job.scope:
                try:
                    decoded = await trio.to_thread.run_sync(decode, limiter=self._decode_threads)
                except Exception:  # noqa: BLE001 - the engine decodes the page itself at the command
                    bound.exception("page_decode_ahead_failed")
                    return
            if job.scope.cancelled_caught:
                return  # still queued when its command came: the engine decoded it (see run)
            engine.page_decoded_ahead(attempt, decoded[0] if decoded is not None else None)
            if decoded is not None:
                self._digest_ahead = (decoded[0].bitmap, decoded[1])
        finally:
            job.done.set()
            if self._decoding_ahead is job:
                self._decoding_ahead = None

    def _log_without_t38(self, bound) -> None:
        bound.warning("call_without_t38", reason=self.failure or self.sip_end_reason)

    def _log_t38_started(self, bound, after_audio: bool = False) -> None:
        t38 = self.t38
        bound.info("t38_started", remote=f"{t38.remote[0]}:{t38.remote[1]}", local_port=self.endpoint.port,
                   version=t38.version, error_correction=t38.error_correction,
                   peer_max_datagram=t38.peer_max_datagram, after_audio=after_audio)

    def media_meta(self) -> dict:
        """meta.json ``media`` and, when the fax ran as audio, ``rtp``."""
        meta: dict = {"media": "t38" if self.t38 is not None or self.audio is None else self.audio.media}
        stats = self.leg.stats() if self.leg is not None else self.rtp_stats
        if stats is not None:
            meta["rtp"] = {"packets_received": stats.packets_received, "packets_sent": stats.packets_sent,
                           "lost": stats.lost, "late": stats.late, "jitter_ms": stats.jitter_ms}
        return meta

    def _new_engine(self):  # the outbound session sends instead (t38gw.outsession)
        return T30Receiver(self.receiver_config)

    async def _send_due(self, now: float) -> None:
        engine = self.engine
        if engine is None or self.sip_end_reason is not None:
            return
        version = self.t38.version
        carried, self._carry = self._carry, []
        due = [*carried, *engine.ifps_to_send(now)]
        if due:
            # The endpoint noted when the peer's transmission ended (udptl.endpoint.SIGNAL_ENDS):
            # this is our answer to it.
            ended = self.endpoint.take_signal_end()
            if ended is not None and self.metrics is not None:
                self.metrics.t30_response.observe(max(0.0, trio.current_time() - ended))
        for out in due:
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
                provisional = self.provisional
                if provisional is not None and provisional.number <= event.number:
                    self.provisional = None
                    if provisional.number < event.number:
                        # The sender went on to its next page after our RTN (T.30 5.3.6.2.8
                        # allows it): the rejected page stays in its place, incomplete.
                        self._archive_provisional(provisional, bound, submit=False)
                    else:
                        bound.info("page_resent_and_confirmed", page=event.number,
                                   provisional_rows_lost=provisional.rows_lost)
                page = Page(event.width, event.height, event.x_dpi, event.y_dpi, event.bitmap)
                ahead = self._digest_ahead
                # The same bitmap object the thread hashed (else add_page hashes it here).
                digest = ahead[1] if ahead is not None and ahead[0] is event.bitmap else None
                self._digest_ahead = None
                record.add_page(page, event.bad_rows, longest_bad_run=event.longest_bad_run, g4=event.g4,
                                sha256=digest)
                self._submit_pages()
                if len(record.pages) == 1:
                    # Media latching never moves after the first confirmed page (issue 9 item 1).
                    self.endpoint.freeze_latch()
                if self.metrics is not None:
                    self.metrics.pages.labels(direction="inbound").inc()
                bound.info("page_confirmed", page=event.number, width_px=event.width, height_px=event.height,
                           bad_rows=event.bad_rows, quality=event.quality.name, ecm=event.ecm,
                           loss_gaps=getattr(event, "ifp_loss_gaps", 0))
            elif isinstance(event, PageRejected):
                self._keep_provisional(event, bound)
                bound.warning("page_rejected", page=event.number, height_px=event.height, bad_rows=event.bad_rows,
                              longest_bad_run=event.longest_bad_run,
                              loss_gaps=getattr(event, "ifp_loss_gaps", 0),
                              rows_lost=getattr(event, "rows_lost_estimate", 0),
                              kept_as_provisional=self.provisional is not None
                              and self.provisional.number == event.number)
            elif isinstance(event, DocumentEnded):
                if not event.more_documents:
                    self._document_done.set()
                bound.info("document_ended", pages=event.pages, more_documents=event.more_documents)
            elif isinstance(event, CallEnded):
                self.ended_result = event
                bound.info("t30_ended", result=event.result.value, pages=event.pages, reason=event.reason)
            elif isinstance(event, ProtocolEventLogged):
                bound.debug("t30_protocol_event", state=event.state, what=event.what)

    def _submit_pages(self) -> None:
        self._page_send.send_nowait(self.record.snapshot())
        self._pages_submitted = len(self.record.pages)

    def _keep_provisional(self, event: PageRejected, bound) -> None:
        """Keep the best copy of a page RTN'd for image loss (T.30 5.3.6.2: the sender
        may send it again; if it gives up, this copy is all there is)."""
        bitmap = getattr(event, "bitmap", None)
        width = getattr(event, "width", 0)
        if bitmap is None or not width or not event.height:
            return  # an RTN for quality alone carries no pixels: nothing to keep
        rows_lost = max(0, getattr(event, "rows_lost_estimate", 0))
        current = self.provisional
        if current is not None and current.number == event.number and current.rows_lost < rows_lost:
            return  # the copy we hold is better
        if current is not None and current.number < event.number:
            # The sender went past the page we held (and this one was rejected too).
            self.provisional = None
            self._archive_provisional(current, bound, submit=True)
        try:
            page = Page(width, event.height, getattr(event, "x_dpi", 0) or 204, getattr(event, "y_dpi", 0) or 98,
                        bitmap)
        except ValueError as exc:
            bound.warning("provisional_page_unusable", page=event.number, error=str(exc))
            return
        coded, sha256 = compress_page(page, bad_rows=event.bad_rows, longest_bad_run=event.longest_bad_run)
        self.provisional = _Provisional(event.number, coded, sha256, rows_lost, getattr(event, "ifp_loss_gaps", 0))

    def _archive_provisional(self, provisional: _Provisional, bound, *, submit: bool) -> None:
        """Archive a page the sender never sent again, as it is: ``complete: false``
        (``submit``: hand it to the writer now; otherwise the next write takes it)."""
        self.record.add_coded_page(provisional.coded, provisional.sha256, complete=False,
                                   rows_lost=provisional.rows_lost)
        if submit:
            self._submit_pages()
        bound.warning("page_kept_incomplete", page=provisional.number, archived_as=len(self.record.pages),
                      rows_lost=provisional.rows_lost, loss_gaps=provisional.ifp_loss_gaps)

    async def _wait_pages_written(self) -> None:
        """Until every confirmed page is on disk (or its write failed); a write that takes
        longer than PAGE_WRITE_GIVE_UP_SECONDS counts as failed."""
        if self._pages_written >= self._pages_submitted or self._write_failure is not None:
            return
        started = trio.current_time()
        with trio.move_on_after(PAGE_WRITE_GIVE_UP_SECONDS):
            while self._pages_written < self._pages_submitted and self._write_failure is None:
                # Several tasks may wait (the response being sent, the document's end): each
                # waits on the writer's current event, which the writer replaces when it sets it.
                await self._page_written.wait()
        waited = trio.current_time() - started
        if self._page_write_held is not None:
            self._page_write_held(waited)
        if self._pages_written < self._pages_submitted and self._write_failure is None:
            self._give_up_page_write(waited)
        elif waited >= SLOW_PAGE_WRITE_SECONDS:  # logged as admission judges it
            (self._bound or log).warning("page_write_slow", seconds=round(waited, 2), pages=self._pages_submitted)

    def _give_up_page_write(self, waited: float) -> None:
        if self._write_failure is None:
            self._write_failure = f"the confirmed page was not on disk after {waited:.0f} s"

    async def _writer(self, bound) -> None:
        # Each item is a record snapshot: the pages the archive lacks, and meta.json (which
        # lists every page so far).
        async for pages, meta in self._page_receive:
            try:
                await self._write_record(self.record, pages, meta)
            except OSError as exc:
                # The disk is the system of record: say so loudly and confirm nothing more
                # (_send_due ends the call; the final write still tries to keep the pages).
                bound.error("archive_write_failed", error=str(exc), pages=len(meta["pages"]))
                self._write_failure = self._write_failure or str(exc)
            else:
                self._pages_written = max(self._pages_written, len(meta["pages"]))
                self.record.forget_written()
            written, self._page_written = self._page_written, trio.Event()
            written.set()

    def _failure_reason(self, *, peer: str, call: str) -> str:
        """Why the fax did not end well, as meta.json says it (``peer``: who hangs up;
        ``call``: how the call is named), for both directions."""
        ended = self.ended_result
        if self.failure:
            return self.failure
        if ended is not None and ended.result is T30Result.CALL_DROPPED:
            return f"{peer} hung up ({self.sip_end_reason or 'call dropped'}) during T.30: {ended.reason}"
        if ended is not None:
            return f"T.30 {ended.result.value}: {ended.reason}"
        if self.sip_end_reason:
            return f"{call} ended before T.38 started ({self.sip_end_reason})"
        return f"{call} ended without a T.30 result"

    def outcome(self) -> tuple[str, str]:
        """(status, reason) for meta.json."""
        pages = len(self.record.pages)
        incomplete = [p["number"] for p in self.record.pages if not p.get("complete", True)]
        ended = self.ended_result
        whole_document = ended.result is T30Result.OK if ended is not None else self.document_ended
        if whole_document and pages:
            # DCN after our MCF to EOP: the sender considers the document delivered.
            if not incomplete:
                return "received", ""
            return "partial", _incomplete_reason(self.record.pages, incomplete)
        reason = self._failure_reason(peer="caller", call="call")
        if ended is not None and ended.result is T30Result.OK and not pages:
            reason = "the sender ended the call without sending a page"
        if incomplete:
            reason = f"{reason}; {_incomplete_reason(self.record.pages, incomplete)}"
        return ("partial" if pages else "failed"), reason

    @property
    def document_ended(self) -> bool:
        """The sender's EOP was answered MCF: the document is whole."""
        return self._document_done.is_set()

    async def _finish_when_document_ends(self, bound) -> None:
        with self._document_wait:
            await self._document_done.wait()
        if not self.document_ended or self.ended_result is not None:
            return  # the call ended first: the end finishes the record
        await self._wait_pages_written()
        if self._write_failure is not None or self.provisional is not None or self.ended_result is not None:
            return  # the end of the call decides (a failed write, a page kept incomplete)
        self._early_pages = len(self.record.pages)
        await self._finish(bound)

    async def _finish(self, bound) -> None:
        if self.provisional is not None:
            # The sender gave up on a page we answered RTN: keep the best copy we got.
            provisional, self.provisional = self.provisional, None
            self._archive_provisional(provisional, bound, submit=False)
        status, reason = self.outcome()
        self.record.meta.update(self.media_meta())
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


def _incomplete_reason(pages: list[dict], numbers: list[int]) -> str:
    lost = sum(p.get("rows_lost", 0) for p in pages if p["number"] in numbers)
    which = ", ".join(map(str, numbers))
    noun = "page" if len(numbers) == 1 else "pages"
    return (f"{noun} {which} incomplete: image data lost beyond recovery (about {lost} rows), "
            "answered RTN and not sent again")
