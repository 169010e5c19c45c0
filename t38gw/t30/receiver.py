"""The T.30 receive engine over T.38: a called fax terminal, sans-IO.

How it works
============
The engine is the called station of T.30 (the "answering" side that receives a
document).  Its input is the stream of IFP packets UDPTL delivered in order (plus the
fact that some were lost), and ``now``; its outputs are IFP packets to send at given
times (each with how often to repeat it), events, and its next deadline.  It never
reads a clock or touches a socket.

Phases (T.30 clause 2 and Figure 5-2):

* **B** - we send CED (T.30 5.3.6.1; or start straight with the V.21 preamble), then
  CSI+DIS, repeated every T4 until a DCS arrives; after three unanswered DIS we send DCN
  (RETRYDCN), and a garbled command is answered by DIS again (TSB-85 MRGX01, MRGN11).  The DCS sequence
  (TSI, SUB, PWD, SID before it) is parsed in full; then the training check TCF comes
  as ``t4-non-ecm-data`` zeros and is judged by its longest zero run (>= 1 s of its
  1.5 s, as SpanDSP judges it) -> CFR, else FTT and the sender falls back to a lower
  rate with a new DCS; a DCS with no TCF after it gets FTT too (TSB-85 MRGN13).  Under ``localTCF`` (T.38 clause 6.2.1) no TCF crosses the IP
  leg, so DCS is answered with CFR at once.
* **C** - non-ECM: the image data is fed to the streaming T.4 decoder as it arrives;
  the page ends at RTC or ``t4-non-ecm-sig-end``.  ECM (T.4 Annex A): FCD frames of
  64/256 octets gather in an ``EcmBlock`` until RCP.
* **D** - non-ECM MPS/EOP/EOM are answered MCF/RTP/RTN from the decoder's bad-row
  figures (``QUALITY_*`` below); a page during which UDPTL lost image data beyond
  recovery is answered RTN (T.30 5.3.6.2) and reported with its best copy.  ECM PPS-x is
  answered PPR with the map of frames still missing until the block is whole, then MCF;
  a PPS naming the page/block already confirmed gets MCF again and stores nothing;
  CTC/CTR, EOR/ERR and RR/RNR follow T.30 Annex A (a page taken after EOR is never
  confirmed).  A command the sender repeats because our response was lost gets the same
  response again; a garbled command gets no answer (TSB-85 MRGN17: the sender repeats it).
  After EOM we return to phase B and send DIS when T2 runs out.  ``ReceiverConfig`` limits
  pages per call, rows per page and ECM blocks per page (``T30Result.LIMIT_REACHED``).
* **E** - DCN ends the call; so do the timers T1, T2, T5 with their T.30 result.

Every confirmed page is handed out at once as ``PageReceived`` (always whole), so a call
that dies mid-page keeps what was confirmed; ``CallEnded`` carries the result and the
reason.  The engine is checked against the TSB-85 procedures (tests/interop/tsb85).

The handling of V.21 commands is written as a table (``COMMANDS``): state -> {FCF ->
handler}.  A command missing from a state's row is logged as a ``ProtocolEventLogged``
and otherwise ignored, as T.30 5.4.1 asks of a receiver that cannot act on a signal.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from udptl.ifp import IfpPacket, T30Data, T30Indicator

from t38gw.t30 import t38_io
from t38gw.t30.dcs import Compression, DcsParameters, ReceiveCapabilities, parse_dcs
from t38gw.t30.ecm import EcmBlock
from t38gw.t30.errors import LocalProtocolError, RemoteProtocolError
from t38gw.t30.events import (
    CallEnded,
    DocumentEnded,
    Event,
    PageQuality,
    PageReceived,
    PageRejected,
    PhaseBCompleted,
    ProtocolEventLogged,
    T30Result,
)
from t38gw.t30.frames import PPS_NULL, Fcf, T30Frame, decode_ident, encode_ident
from t38gw.t30.t38_io import OutgoingIfp

# Copy quality of a non-ECM page (T.30 leaves the criteria to the receiver, 5.3.6.1.7
# note).  A page whose rows needed repair answers:
#   MCF - under 2 % of rows bad and no run of more than 3 bad rows (print-worthy);
#   RTP - under 5 % bad and no run over 15 rows (kept, but ask the sender to retrain);
#   RTN - anything worse, or a page with no rows at all (sender may resend it).
QUALITY_GOOD_BAD_ROW_RATIO = 0.02
QUALITY_GOOD_LONGEST_RUN = 3
QUALITY_POOR_BAD_ROW_RATIO = 0.05
QUALITY_POOR_LONGEST_RUN = 15

# T.30 5.4.1 / clause 5 timers, seconds.
T1 = 35.0  # 35 +/- 5 s: phase B identification
T2 = 6.0  # 6 +/- 1 s: waiting for a command
T4 = 3.0  # 3 s +/- 15 %: waiting for a response (our DIS repeats)
T5 = 60.0  # 60 +/- 5 s: ECM receiver-not-ready
#: No image data for this long ends a page in progress (SpanDSP MID_RX_TIMEOUT).
CARRIER_TIMEOUT = 15.0
#: A page longer than this is cut there (unlimited length is allowed, endless is not):
#: 32768 rows is 2.1 m at 15.4 lines/mm.
MAX_PAGE_ROWS = 32768
#: localTCF: how long to wait for a training burst after DCS before answering CFR.
LOCAL_TCF_WAIT = 1.0
#: TCF data that stops this long without its sig-end has ended (its end packets were lost).
TCF_END_SILENCE = 0.5
#: A peer that keeps FTT-ing gets at most this many TCF attempts before we hang up.
MAX_TCF_ATTEMPTS = 8
#: DIS sent this many times without an answer: DCN (T.30 Figure 5-2's retry count of 3;
#: TSB-85 MRGX01 wants three DIS, then DCN).
MAX_DIS_TRIES = 3
#: Transferred TCF: no training carrier (nor TCF data) this long after a DCS means the TCF
#: is missing: answer FTT so the sender retrains (TSB-85 MRGN13/MRGN15).  TCF starts 75 ms
#: after the DCS (T.30 5.3.2.4); if its training indicator is lost, its data comes only
#: after the training (V.17 long train 1.4 s): 3 s covers both plus network jitter.
TCF_MISSING_WAIT = 3.0
#: After a garbled command while we answer, DIS is repeated this long after the V.21
#: carrier ended, or at once after the fast carrier (a TCF) that followed it.
GARBLED_DIS_WAIT = 0.5
_ZERO_RUN = re.compile(b"\x00+")


class State(enum.Enum):
    IDLE = "idle"
    ANSWERING = "answering"  # DIS sent, waiting for DCS (T1, T4)
    AWAIT_DCS = "await_dcs"  # FTT/RTP/RTN sent or EOM confirmed: a new DCS is due (T2)
    AWAIT_TCF = "await_tcf"  # DCS accepted, the training check comes next
    TCF = "tcf"  # receiving TCF
    AWAIT_PAGE = "await_page"  # CFR or MCF sent: image data comes next (T2)
    NON_ECM_PAGE = "non_ecm_page"
    ECM_BLOCK = "ecm_block"  # FCD frames arriving
    AWAIT_POST_PAGE = "await_post_page"  # page/block data ended: MPS/EOP/EOM/PPS due (T2)
    RECEIVER_NOT_READY = "receiver_not_ready"  # RNR sent (T5)
    AWAIT_DCN = "await_dcn"  # EOP confirmed (T2)
    ENDED = "ended"


@dataclass(frozen=True)
class ReceiverConfig:
    """How the engine answers.  ``local_ident`` is our CSI (T.30 Table 3 characters)."""

    local_ident: str = ""
    capabilities: ReceiveCapabilities = field(default_factory=ReceiveCapabilities)
    send_ced: bool = True
    transferred_tcf: bool = True
    t1: float = T1
    t2: float = T2
    t4: float = T4
    t5: float = T5
    carrier_timeout: float = CARRIER_TIMEOUT
    #: Confirmed pages per call: the page that reaches it is confirmed, then a sender that
    #: announced more (MPS/EOM) is disconnected with ``T30Result.LIMIT_REACHED``.
    max_pages: int = 200
    #: Rows per page: a taller page is not confirmed and ends the call (LIMIT_REACHED).
    max_page_rows: int = MAX_PAGE_ROWS
    #: ECM partial pages (blocks) per page.  T.30 A.4.1: the PPS block counter is one
    #: octet, so a page has at most 256 blocks; a sender that sends more ends the call.
    max_ecm_blocks_per_page: int = 256


PageDecoderFactory = Callable[[Compression, int], object]


def imaging_decoder(compression: Compression, width: int):
    """The imaging package's streaming decoder for T.38 data.

    T.38 carries both non-ECM image data and the HDLC octets of FCD frames with the
    first transmitted bit as the MSB of each octet (see ``frames``), which is T.4's
    transmission order read MSB-first.
    """
    import imaging

    coding = {Compression.MH: imaging.Coding.MH, Compression.MR: imaging.Coding.MR,
              Compression.MMR: imaging.Coding.MMR}[compression]
    return imaging.StreamingDecoder(coding, width, bit_order=imaging.BitOrder.MSB_FIRST)


class EcmPageDecoder:
    """The default ECM page decoder: blocks are kept and the page decoded whole at its end.

    ECM data arrives error-checked (every FCD frame passed its FCS), so nothing needs
    judging row by row; ``imaging.wholepage`` decodes a whole page through libtiff several
    times faster, proving its answer equal to the streaming decoder's.  Where it cannot
    (or a block was taken with frames missing, after EOR), the kept blocks go through the
    streaming decoder exactly as they used to arrive, MAX_PAGE_ROWS bound included.
    ``page_ended`` and ``rows`` stay False/0 while blocks are kept (T.30 bounds an ECM page
    to 256 blocks of 256 frames).
    """

    page_ended = False
    rows = 0

    def __init__(self, compression: Compression, width: int) -> None:
        self.compression = compression
        self.width = width
        self.blocks: list[bytes] = []
        self.whole = True  # False once a block was taken with frames missing
        self.max_rows = MAX_PAGE_ROWS

    def feed(self, data: bytes) -> None:
        self.blocks.append(bytes(data))

    def finish(self):
        from imaging.wholepage import try_libtiff_decode

        decoder = imaging_decoder(self.compression, self.width)
        if self.whole:
            page = try_libtiff_decode(b"".join(self.blocks), decoder.coding, decoder.width,
                                      bit_order=decoder.bit_order, max_rows=self.max_rows)
            if page is not None:
                return page
        for data in self.blocks:
            if data and not decoder.page_ended and decoder.rows < self.max_rows:
                decoder.feed(data)
        return decoder.finish()


def judge_quality(height: int, bad_rows: int, longest_bad_run: int) -> PageQuality:
    """The post-message response a non-ECM page earns (thresholds above)."""
    if height == 0:
        return PageQuality.BAD
    ratio = bad_rows / height
    if ratio < QUALITY_GOOD_BAD_ROW_RATIO and longest_bad_run <= QUALITY_GOOD_LONGEST_RUN:
        return PageQuality.GOOD
    if ratio < QUALITY_POOR_BAD_ROW_RATIO and longest_bad_run <= QUALITY_POOR_LONGEST_RUN:
        return PageQuality.POOR
    return PageQuality.BAD


_POST_PAGE = {
    Fcf.MPS: Fcf.MPS, Fcf.EOP: Fcf.EOP, Fcf.EOM: Fcf.EOM,
    # T.30 5.3.6.1.6: PRI-Q asks for operator intervention; an unattended gateway
    # answers it as the plain Q (PIP/PIN are optional).
    Fcf.PRI_MPS: Fcf.MPS, Fcf.PRI_EOP: Fcf.EOP, Fcf.PRI_EOM: Fcf.EOM,
}


class T30Receiver:
    """The called-station T.30 engine.  See the module docstring.

    Drive it with ``start(now)``, then ``ifp_received``/``ifps_lost``/``handle_timer``;
    after each call send ``ifps_to_send(now)`` and sleep until ``next_deadline()``.
    Every method returns the events it produced.
    """

    def __init__(self, config: ReceiverConfig | None = None, *, decoder_factory: PageDecoderFactory | None = None) -> None:
        self.config = config or ReceiverConfig()
        self._decoder_factory = decoder_factory or imaging_decoder
        self._ecm_decoder_factory = decoder_factory or EcmPageDecoder
        self._csi = encode_ident(self.config.local_ident) if self.config.local_ident else None
        self.state = State.IDLE
        self._demux = t38_io.IfpDemultiplexer()
        self._outgoing: list[OutgoingIfp] = []
        self._tx_free_at = 0.0
        self._timers: dict[str, float] = {}
        self._events: list[Event] = []
        self._now = 0.0
        # Phase B
        self._pending: list[T30Frame] = []  # non-final frames before a final one
        self._burst_had_bad_frame = False
        self.dcs: DcsParameters | None = None
        self.remote_ident = ""
        self.subaddress = ""
        self.password = ""
        self._tcf_attempts = 0
        self._tcf_zero_run = 0
        self._tcf_longest = 0
        self._last_tcf_failed = False
        # Phase C/D
        self._decoder = None
        self._page_rows_seen = False
        self._page_loss_gaps = 0
        self._fast_carrier_seen = False
        self._stray_data_logged = False
        self._block: EcmBlock | None = None
        self._last_command: tuple | None = None
        self._last_response: list[T30Frame] = []
        self._after_ready: Callable[[], None] | None = None
        self._receiver_ready = True
        self.pages_confirmed = 0
        self._document_pages = 0
        self._dis_sent = 0  # DIS in this phase B without an answer (MAX_DIS_TRIES)
        self._garbled_while_answering = False
        self._dis_after_t2 = False  # EOM answered: DIS follows when T2 runs out
        self._page_data_ifps = 0  # non-ECM: IFPs of image data this page, and IFPs lost
        self._page_lost_ifps = 0
        # ECM numbering (T.30 A.4.1): the page and block the next PPS should name.
        self._ecm_page = 0
        self._ecm_block = 0
        self._ecm_blocks_in_page = 0
        self._err_block_pending = False  # last block taken after EOR (ERR): may be re-sent
        self._err_page_pending = False  # last page ended after EOR (ERR): may be re-sent
        self._page_has_err_block = False  # a block taken after EOR stays in this page
        self._pages_given_up = 0  # rejected pages the sender went past (numbering)
        self._rows_before_loss = 0  # non-ECM: rows decoded before this page's first loss
        self._rejected_copy: tuple[int, bytes, int] | None = None  # (width, bitmap, intact rows)
        self.counters = {"bad_frames": 0, "crp_sent": 0, "ppr_sent": 0, "responses_repeated": 0,
                         "lost_ifp_gaps": 0, "unexpected": 0}

    # ------------------------------------------------------------------ driving
    def start(self, now: float) -> list[Event]:
        """Answer the call: CED (if configured), then CSI+DIS.  Starts T1."""
        if self.state is not State.IDLE:
            raise LocalProtocolError("start() called twice")
        self._now = now
        at = now
        if self.config.send_ced:
            self._queue([t38_io.indicator(now, T30Indicator.CED)])
            at = now + t38_io.CED_S
            self._queue([t38_io.indicator(at, T30Indicator.NO_SIGNAL)])
            at += t38_io.SILENCE_S
        self._tx_free_at = at
        self.state = State.ANSWERING
        self._timers["T1"] = now + self.config.t1
        self._send_dis(now, start=at)
        return self._take_events()

    def ifp_received(self, packet: IfpPacket, now: float) -> list[Event]:
        """Feed one IFP packet (in sequence order, after UDPTL recovery)."""
        self._now = now
        if self.state is State.ENDED:
            return []
        if self.state is State.IDLE:
            raise LocalProtocolError("ifp_received() before start()")
        for fe_event in self._demux.packet_received(packet):
            self._front_end(fe_event)
            if self.state is State.ENDED:
                break
        return self._take_events()

    def ifps_lost(self, count: int, now: float) -> list[Event]:
        """UDPTL could not recover ``count`` IFPs: a frame in progress is damaged."""
        self._now = now
        if self.state in (State.ENDED, State.IDLE):
            return []
        self.counters["lost_ifp_gaps"] += 1
        self._demux.note_loss()
        non_ecm = self.dcs is not None and not self.dcs.ecm
        after_rtc = self.state is State.NON_ECM_PAGE and self._decoder is not None and self._decoder.page_ended
        if after_rtc:
            # The page's coded data already ended (RTC, T.4 4.1.4): what was lost is fill or
            # the end-of-data packets (sent several times), no row.
            self._log(f"{count} IFP(s) lost after the page's RTC: no row lost")
        elif non_ecm and (self.state is State.NON_ECM_PAGE
                          or (self.state is State.AWAIT_PAGE and self._fast_carrier_seen)):
            # Non-ECM has no retransmission: rows in the lost IFPs are gone without a trace
            # the decoder could count, so the page is answered RTN (see _page_complete).
            if not self._page_loss_gaps:
                self._rows_before_loss = self._decoder.rows if self._decoder is not None else 0
            self._page_loss_gaps += 1
            self._page_lost_ifps += max(count, 1)
        return self._take_events()

    def handle_timer(self, now: float) -> list[Event]:
        """Fire the timers due at ``now``; one that was re-armed or cleared is a no-op."""
        self._now = now
        for name, deadline in sorted(self._timers.items(), key=lambda item: item[1]):
            if self.state is State.ENDED:
                break
            if self._timers.get(name) == deadline and deadline <= now:
                del self._timers[name]
                self._timer_expired(name)
        return self._take_events()

    def hang_up(self, now: float) -> list[Event]:
        """The call went away underneath us (BYE): end with the pages confirmed so far."""
        self._now = now
        if self.state is State.ENDED:
            return []
        if self.state is State.AWAIT_DCN:
            # EOP was answered MCF: every page is confirmed and the sender is done, many
            # hang up without DCN (T.30 5.3.6.1.7 has DCN follow, but the document is whole).
            self._end(T30Result.OK, "sender hung up after our MCF to EOP (no DCN); document complete",
                      send_dcn=False)
        else:
            self._end(T30Result.CALL_DROPPED, f"call dropped in state {self.state.value}", send_dcn=False)
        self._outgoing.clear()  # there is no line left to send on
        return self._take_events()

    def set_receiver_ready(self, ready: bool, now: float) -> list[Event]:
        """Flow control (T.30 A.4.4): while not ready, ECM blocks are answered with RNR."""
        self._now = now
        # Nothing is sent now: T.30 A.4.4 has the sender poll with RR, answered in _rr.
        self._receiver_ready = ready
        return self._take_events()

    def ifps_to_send(self, now: float) -> list[OutgoingIfp]:
        """The packets due by ``now``, in order; each is to be sent ``repeat`` times."""
        due = [p for p in self._outgoing if p.at <= now]
        if due:
            self._outgoing = [p for p in self._outgoing if p.at > now]
        return due

    def next_deadline(self) -> float | None:
        """When to call ``handle_timer`` or ``ifps_to_send`` next (None: nothing pending)."""
        candidates = list(self._timers.values())
        if self._outgoing:
            candidates.append(self._outgoing[0].at)
        return min(candidates) if candidates else None

    @property
    def finished(self) -> bool:
        """The call ended and everything to send has been taken."""
        return self.state is State.ENDED and not self._outgoing

    # ------------------------------------------------------------------ output helpers
    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _queue(self, packets: list[OutgoingIfp]) -> None:
        self._outgoing.extend(packets)
        self._outgoing.sort(key=lambda p: p.at)

    def _log(self, what: str) -> None:
        self._events.append(ProtocolEventLogged(self.state.value, what))

    def _send_frames(self, frames: list[T30Frame], *, remember: bool = True, start: float | None = None) -> float:
        """Queue a V.21 burst after the line is free; returns when it ends."""
        at = max(self._now + t38_io.SILENCE_S, self._tx_free_at) if start is None else start
        packets, end = t38_io.hdlc_burst(frames, at)
        self._queue(packets)
        self._tx_free_at = end
        if remember:
            self._last_response = frames
        return end

    def _respond(self, fcf: Fcf, fif: bytes = b"") -> float:
        return self._send_frames([T30Frame(fcf, fif)])

    def _send_dis(self, now: float, start: float | None = None) -> None:
        frames = []
        if self._csi is not None:
            frames.append(T30Frame(Fcf.CSI, self._csi, final=False))
        frames.append(T30Frame(Fcf.DIS, self.config.capabilities.dis_fif()))
        # Not remembered as "the last response": after EOM a repeated EOM must get its
        # MCF again, not the DIS that followed it.
        end = self._send_frames(frames, remember=False, start=start)
        self._dis_sent += 1
        self._garbled_while_answering = False
        self._timers["T4"] = end + self.config.t4

    def _arm_t2(self, after: float | None = None) -> None:
        self._timers["T2"] = max(after or self._now, self._tx_free_at) + self.config.t2

    def _end(self, result: T30Result, reason: str, *, send_dcn: bool = True) -> None:
        if send_dcn:
            self._respond(Fcf.DCN)
        self._discard_page()
        self._timers.clear()
        self.state = State.ENDED
        self._events.append(CallEnded(result, self.pages_confirmed, reason))

    # ------------------------------------------------------------------ front end
    def _front_end(self, ev) -> None:
        if isinstance(ev, t38_io.HdlcFrameArrived):
            if ev.data_type is T30Data.V21:
                self._control_frame(ev)
            else:
                self._ecm_frame(ev)
        elif isinstance(ev, t38_io.HdlcSignalEnded):
            if ev.data_type is T30Data.V21:
                self._control_burst_ended()
            elif self.state is State.ECM_BLOCK:
                self.state = State.AWAIT_POST_PAGE
                self._arm_t2()
        elif isinstance(ev, t38_io.ImageDataArrived):
            self._image_data(ev.data)
        elif isinstance(ev, t38_io.ImageSignalEnded):
            self._image_ended()
        elif isinstance(ev, t38_io.SignalStarted):
            self._signal_started(ev.indicator)

    def _signal_started(self, indicator) -> None:
        # T.30 5.4.1: T2/T4 are reset on detecting flags; the frame or data that follows
        # re-arms them.  A peer that starts a carrier and never finishes is caught by
        # the carrier timeout.
        fast = isinstance(indicator, T30Indicator) and indicator.name.endswith("TRAINING")
        if fast and self.state is State.AWAIT_PAGE:
            self._fast_carrier_seen = True
        if fast and self.state is State.AWAIT_TCF:
            self.state = State.TCF
            self._timers.pop("LOCAL_TCF", None)
            self._timers.pop("TCF_MISSING", None)
        elif indicator is T30Indicator.NO_SIGNAL and self.state is State.TCF:
            # The training carrier is over even if its sig-end packets were lost.
            self._tcf_ended()
            return
        if indicator is T30Indicator.V21_PREAMBLE or fast:
            for name in ("T2", "T4"):
                if name in self._timers:
                    self._timers[name] = max(self._timers[name], self._now + self.config.carrier_timeout)

    # ----- control frames (V.21)
    def _control_frame(self, ev: t38_io.HdlcFrameArrived) -> None:
        if not ev.fcs_ok:
            self.counters["bad_frames"] += 1
            self._burst_had_bad_frame = True
            self._log("control frame with bad FCS or lost octets")
            return
        try:
            frame = T30Frame.from_wire(ev.wire)
        except RemoteProtocolError as exc:
            self.counters["bad_frames"] += 1
            self._burst_had_bad_frame = True
            self._log(str(exc))
            return
        if not frame.final:
            self._pending.append(frame)
            return
        optional, self._pending = self._pending, []
        self._burst_had_bad_frame = False
        self._command(frame, optional)

    def _control_burst_ended(self) -> None:
        if self._pending:
            self._log(f"{len(self._pending)} frame(s) without a final frame")
            self._pending = []
            self._burst_had_bad_frame = True
        if self._burst_had_bad_frame:
            self._burst_had_bad_frame = False
            if self.state is State.ANSWERING:
                # T.30 Figure 5-2: the called terminal answers a command it could not read
                # by sending DIS again (TSB-85 MRGN11) - once a TCF that may follow the
                # garbled DCS is over (see _image_ended), or shortly.
                self._garbled_while_answering = True
                self._timers["T4"] = self._now + GARBLED_DIS_WAIT
            # Elsewhere a garbled command gets no answer: CRP is optional (T.30 5.3.6.1.8)
            # and TSB-85 MRGN17 requires silence; the sender repeats the command after T4.

    def _command(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        row = COMMANDS.get(self.state, {})
        fcf = frame.fcf
        if self.state is State.TCF:
            # The end of the TCF was lost and the sender, hearing nothing, already repeats
            # its command: answering the old TCF now would collide with it.
            self._timers.pop("TCF_END", None)
            self._log("TCF end lost; the sender moved on")
            self.state = State.AWAIT_DCS
            self._arm_t2()
            row = COMMANDS.get(self.state, {})
        elif self.state in (State.NON_ECM_PAGE, State.ECM_BLOCK):
            # The end of the fast carrier was lost: the V.21 command ends it implicitly.
            self._timers.pop("CARRIER", None)
            self.state = State.AWAIT_POST_PAGE
            self._arm_t2()
            row = COMMANDS.get(self.state, {})
        handler = row.get(fcf)
        if handler is None:
            if fcf == Fcf.DCN:
                handler = T30Receiver._dcn
            elif fcf == Fcf.CRP:
                handler = T30Receiver._crp
            elif self.state is State.AWAIT_POST_PAGE and frame.fcf not in _KNOWN_FCF:
                # After page data only a post-message command can follow; a frame that is
                # no T.30 command at all ends the call, as SpanDSP does (TSB-85 MRGX12).
                self.counters["unexpected"] += 1
                self._log(f"unexpected {frame.name} in {self.state.value}: not a T.30 command")
                self._end(T30Result.RX_INVALCMD, f"invalid command {frame.name} after page data")
                return
            else:
                self.counters["unexpected"] += 1
                self._log(f"unexpected {frame.name} in {self.state.value}")
                return
        handler(self, frame, optional)

    # ----- phase B
    def _dcs(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        try:
            dcs = parse_dcs(frame.fif)
        except RemoteProtocolError as exc:
            self._log(f"bad DCS: {exc}")
            self._end(T30Result.INCOMPATIBLE, f"bad DCS: {exc}")
            return
        caps = self.config.capabilities
        refusal = None
        if dcs.unsupported_bits:
            refusal = f"DCS asks for unsupported modes (T.30 Table 2 bits {list(dcs.unsupported_bits)})"
        elif dcs.modulation.family not in caps.modems:
            refusal = f"DCS asks for {dcs.modulation.family}, not offered"
        elif dcs.compression not in caps.compressions or (dcs.ecm and not caps.ecm):
            refusal = f"DCS asks for {dcs.compression.value} ecm={dcs.ecm}, not offered"
        elif dcs.resolution not in caps.resolutions or dcs.paper_width not in caps.widths:
            refusal = f"DCS asks for {dcs.resolution.label} width {dcs.width_px}, not offered"
        if refusal:
            self._end(T30Result.INCOMPATIBLE, refusal)
            return
        for extra in optional:
            if extra.fcf == Fcf.TSI:
                self.remote_ident = decode_ident(extra.fif)
            elif extra.fcf == Fcf.SUB:
                self.subaddress = decode_ident(extra.fif)
            elif extra.fcf in (Fcf.PWD, Fcf.SID):
                self.password = decode_ident(extra.fif)
            elif extra.fcf not in (Fcf.NSS, Fcf.TSA, Fcf.IRA, Fcf.CIA, Fcf.ISP):
                self.counters["unexpected"] += 1
                self._log(f"unexpected {extra.name} frame before DCS (ignored)")
        self.dcs = dcs
        self._timers.pop("T1", None)
        self._timers.pop("T4", None)
        self._dis_sent = 0
        self._dis_after_t2 = False
        self._garbled_while_answering = False
        self._last_command = None
        self.state = State.AWAIT_TCF
        self._tcf_zero_run = self._tcf_longest = 0
        self._arm_t2()
        if self.config.transferred_tcf:
            self._timers["TCF_MISSING"] = self._now + TCF_MISSING_WAIT
        if not self.config.transferred_tcf:
            # T.38 localTCF: TCF is checked between the fax and its gateway, so nothing
            # is judged here; but a peer may still send a training burst, and CFR must not
            # cross it (SpanDSP's terminal calls that "unexpected CFR").  Answer when the
            # burst is over, or when none has started after LOCAL_TCF_WAIT.
            self._timers["LOCAL_TCF"] = self._now + LOCAL_TCF_WAIT

    def _tcf_data(self, data: bytes) -> None:
        # TCF is 1.5 s of zeros (T.30 5.3.6.2.3 / 5.4.2.1).  Judge it as SpanDSP does: the
        # longest run of zero octets must last at least one second at the DCS rate, which
        # tolerates the burst of ones some modems send first.
        if not data.strip(b"\x00"):
            self._tcf_zero_run += len(data)
        else:
            leading = len(data) - len(data.lstrip(b"\x00"))
            inner = max((len(run) for run in _ZERO_RUN.findall(data)), default=0)
            self._tcf_longest = max(self._tcf_longest, self._tcf_zero_run + leading, inner)
            self._tcf_zero_run = len(data) - len(data.rstrip(b"\x00"))
        self._tcf_longest = max(self._tcf_longest, self._tcf_zero_run)

    def _tcf_ended(self) -> None:
        dcs = self.dcs
        assert dcs is not None
        self._timers.pop("TCF_END", None)
        self._timers.pop("LOCAL_TCF", None)
        if not self.config.transferred_tcf:
            self._accept_training()
            return
        self._tcf_attempts += 1
        needed = dcs.modulation.bit_rate // 8
        if self._tcf_longest >= needed:
            self._last_tcf_failed = False
            self._accept_training()
        else:
            self._training_failed(f"TCF failed: longest zero run {self._tcf_longest * 8} bits, need {needed * 8}")

    def _training_failed(self, why: str) -> None:
        # T.30 5.3.6.2.3: FTT asks the sender to retrain (a new DCS, perhaps slower).
        self._last_tcf_failed = True
        self._log(why)
        if self._tcf_attempts >= MAX_TCF_ATTEMPTS:
            self._end(T30Result.CANNOT_TRAIN, f"TCF failed {self._tcf_attempts} times")
            return
        self.state = State.AWAIT_DCS
        end = self._respond(Fcf.FTT)
        self._arm_t2(end)

    def _accept_training(self) -> None:
        dcs = self.dcs
        assert dcs is not None
        self.state = State.AWAIT_PAGE
        end = self._respond(Fcf.CFR)
        self._arm_t2(end)
        self._events.append(PhaseBCompleted(
            remote_ident=self.remote_ident, subaddress=self.subaddress, password=self.password,
            modem=dcs.modulation.family, bit_rate=dcs.modulation.bit_rate, ecm=dcs.ecm,
            compression=dcs.compression.value, x_dpi=dcs.resolution.x_dpi, y_dpi=dcs.resolution.y_dpi,
            width_px=dcs.width_px,
        ))

    def _dtc(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        # T.30 5.3.6.1.3: DTC asks us to transmit (polling); a receive gateway has no
        # document to send.
        self._end(T30Result.NO_POLL, "peer sent DTC (polling); nothing to send")

    def _dis_collision(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        # Both ends answering: T.30 5.3.6.1.1 - keep repeating our DIS; the calling side
        # will give way.
        self._log("DIS received while answering (both ends called?)")

    # ----- phase C
    def _image_data(self, data: bytes) -> None:
        state = self.state
        if state is State.AWAIT_TCF or state is State.TCF:
            self.state = State.TCF
            self._timers.pop("TCF_MISSING", None)
            self._timers["T2"] = self._now + self.config.carrier_timeout
            # TCF lasts 1.5 s and the sender waits only T4 for our answer: if its end was
            # lost, judge it once the data has stopped for TCF_END_SILENCE.
            self._timers["TCF_END"] = self._now + TCF_END_SILENCE
            self._tcf_data(data)
            return
        if state is State.AWAIT_POST_PAGE and self.dcs and not self.dcs.ecm and not self._page_rows_seen:
            # The "page" before had no rows (e.g. a TCF that a localTCF peer sent anyway):
            # it was not a page; this is.
            self._discard_page()
            state = self.state = State.AWAIT_PAGE
        if state is State.AWAIT_PAGE and self.dcs is not None and not self.dcs.ecm:
            self.state = state = State.NON_ECM_PAGE
            self._decoder = self._decoder_factory(self.dcs.compression, self.dcs.width_px)
            self._page_rows_seen = False
        if state is State.NON_ECM_PAGE:
            self._timers.pop("T2", None)
            self._timers["CARRIER"] = self._now + self.config.carrier_timeout
            self._page_data_ifps += 1
            decoder = self._decoder
            if not decoder.page_ended:
                decoder.feed(data)
                if not self._page_rows_seen and decoder.rows:
                    self._page_rows_seen = True
                if decoder.rows >= self.config.max_page_rows:
                    self._end(T30Result.LIMIT_REACHED,
                              f"page taller than the limit of {self.config.max_page_rows} rows; not confirmed")
            return
        if not self._stray_data_logged:
            self._stray_data_logged = True
            self._log(f"image data in {state.value}")

    def _image_ended(self) -> None:
        self._stray_data_logged = False
        if self.state is State.TCF:
            self._timers.pop("TCF_END", None)
            self._tcf_ended()
        elif self.state is State.AWAIT_TCF:
            self._log("TCF signal ended without data")
        elif self.state is State.ANSWERING and self._garbled_while_answering:
            self._send_dis(self._now)
        elif self.state is State.NON_ECM_PAGE:
            self._timers.pop("CARRIER", None)
            self.state = State.AWAIT_POST_PAGE
            self._arm_t2()

    def _discard_page(self) -> None:
        self._decoder = None
        self._page_rows_seen = False
        self._page_loss_gaps = 0
        self._page_data_ifps = self._page_lost_ifps = 0
        self._fast_carrier_seen = False
        self._ecm_blocks_in_page = 0
        self._err_block_pending = False
        self._page_has_err_block = False

    # ----- ECM (T.4 Annex A)
    def _ecm_frame(self, ev: t38_io.HdlcFrameArrived) -> None:
        if self.dcs is None or not self.dcs.ecm:
            self._log("HDLC on the image modem without ECM")
            return
        if self.state not in (State.AWAIT_PAGE, State.ECM_BLOCK, State.AWAIT_POST_PAGE):
            self._log(f"ECM frame in {self.state.value}")
            return
        if not ev.fcs_ok:
            self.counters["bad_frames"] += 1  # it will be in the PPR map
            # Frames are arriving, good or not: T2 stops, the carrier watch starts (an
            # ECM block whose first frame is corrupted must not end the call mid-block).
            self.state = State.ECM_BLOCK
            self._timers.pop("T2", None)
            self._timers["CARRIER"] = self._now + self.config.carrier_timeout
            return
        try:
            frame = T30Frame.from_wire(ev.wire)
        except RemoteProtocolError as exc:
            self.counters["bad_frames"] += 1
            self._log(str(exc))
            return
        if self.state is not State.ECM_BLOCK:
            self.state = State.ECM_BLOCK
            self._timers.pop("T2", None)
        self._timers["CARRIER"] = self._now + self.config.carrier_timeout
        if frame.fcf == Fcf.FCD:
            if not frame.fif:
                self._log("FCD frame without a frame number")
                return
            if self._block is None:
                self._block = EcmBlock(page=-1, block=-1, frame_size=self.dcs.ecm_frame_size)
            # The image octets stay in T.38 order for the decoder (first bit = MSB).
            self._block.frame_received(frame.fif[0], ev.wire[4:])
        elif frame.fcf == Fcf.RCP:
            pass  # T.4 A.3.6.2: end of the partial page; PPS follows on V.21
        else:
            self._log(f"{frame.name} on the image modem")

    def _pps(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        self._timers.pop("CARRIER", None)
        if len(frame.fif) < 4:
            self._log(f"PPS with {len(frame.fif)}-octet FIF")
            return  # no answer: the sender repeats it (T.30 5.3.6.1.8, CRP is optional)
        fcf2 = frame.fif[0] & 0xFE
        page, block_no, count = frame.fif[1], frame.fif[2], frame.fif[3] + 1
        key = ("PPS", fcf2, page, block_no)
        # No frames since our last answer: the sender did not hear it.
        if self.state in _ANSWERED_STATES and self._repeat_of_last(key):
            return
        if self.state in (State.ANSWERING, State.AWAIT_DCN) or self.dcs is None or not self.dcs.ecm:
            self.counters["unexpected"] += 1
            self._log(f"unexpected PPS in {self.state.value}")
            return
        if fcf2 != PPS_NULL and fcf2 not in _POST_PAGE:
            self._end(T30Result.RX_ECMPHD, f"PPS with unknown post-page command 0x{fcf2:02X}")
            return
        if self._names_confirmed_block(page, block_no):
            # T.30 A.4.1 numbers pages and blocks: a PPS naming the block (or page) we
            # already confirmed is the sender repeating itself because our MCF was lost.
            # Confirm it again and store nothing (else the archive holds a page twice).
            self._log(f"PPS for page {page} block {block_no}, already confirmed: MCF again, nothing stored")
            self._block = None
            self._last_command = key
            self.state = State.AWAIT_PAGE
            end = self._respond(Fcf.MCF)
            self._arm_t2(end)
            return
        if (page, block_no) != (self._ecm_page, self._ecm_block):
            if self._err_block_pending and (page, block_no) == (self._ecm_page, (self._ecm_block + 1) & 0xFF):
                # The sender moved on after EOR/ERR: the block with errors stays in the page,
                # which can then never be whole (see _page_complete).
                self._err_block_pending = False
                self._page_has_err_block = True
                self._ecm_block = block_no
            elif self._err_page_pending and (page, block_no) == ((self._ecm_page + 1) & 0xFF, 0):
                # The sender moved on to its next page after the page we answered ERR: that
                # page stays rejected under its number, the next one gets the next number.
                self._ecm_page = page
                self._pages_given_up += 1
            else:
                # T.30 A.4.1: pages count from 0 per call, blocks from 0 per page.  A PPS that
                # skips ahead would have us confirm a page with a block we never saw.
                self._end(T30Result.RX_ECMPHD, f"PPS names page {page} block {block_no}, "
                                               f"expected page {self._ecm_page} block {self._ecm_block}")
                return
        elif self._err_block_pending:
            # The block we took with errors after EOR comes again whole: it replaces that copy.
            self._err_block_pending = False
            decoder = self._decoder
            if isinstance(decoder, EcmPageDecoder) and decoder.blocks:
                decoder.blocks.pop()
                self._ecm_blocks_in_page -= 1
                decoder.whole = not self._page_has_err_block
        self._err_page_pending = False
        block = self._block
        if block is None:
            block = self._block = EcmBlock(page, block_no, self.dcs.ecm_frame_size if self.dcs else 256)
        if block.page < 0:
            block.page, block.block = page, block_no
        block.set_frame_count(count)
        missing = block.missing()
        self._last_command = key
        if missing:
            block.ppr_count += 1
            self.counters["ppr_sent"] += 1
            self.state = State.AWAIT_PAGE
            end = self._respond(Fcf.PPR, block.ppr_map())
            self._arm_t2(end)
            return
        self._block_complete(fcf2)

    def _page_number(self) -> int:
        """The number of the page being received: a page we reject and the sender sends again
        keeps it; a page the sender went past keeps its own, and the next page gets the
        next number.  ECM pages say which they are (T.30 A.4.1 page numbers); for non-ECM
        see ``_same_page_again``."""
        return self.pages_confirmed + self._pages_given_up + 1

    def _same_page_again(self, page) -> bool:
        """Non-ECM pages carry no number, and after RTN to MPS a sender may resend the page
        or go on to the next (T.30 5.3.6.2.8 leaves it open).  It is the same page when the
        rows we had intact before the loss come again identically - and they show some
        black (two pages both opening with a white margin prove nothing).  In doubt the
        answer is no, so the rejected copy is never mistaken for a page that replaced it."""
        width, bitmap, rows = self._rejected_copy
        stride = width // 8
        if page.width != width or rows < 1 or page.height < rows:
            return False
        head = bitmap[:rows * stride]
        return page.bitmap[:rows * stride] == head and any(head)

    def _names_confirmed_block(self, page: int, block_no: int) -> bool:
        """Does a PPS name the block or page we confirmed last (not the one due now)?"""
        if self._err_block_pending:
            return False
        if self._ecm_block > 0:
            return page == self._ecm_page and block_no == self._ecm_block - 1
        return self.pages_confirmed > 0 and page == (self._ecm_page - 1) & 0xFF

    def _block_complete(self, fcf2: int, *, with_errors: bool = False) -> None:
        """The block is whole (or the sender gave up on it with EOR): take its data."""
        block = self._block
        self._block = None
        if self._decoder is None:
            self._decoder = self._ecm_decoder_factory(self.dcs.compression, self.dcs.width_px)
            if hasattr(self._decoder, "max_rows"):
                self._decoder.max_rows = self.config.max_page_rows
        if block is not None:
            data = block.data()
            if data and not self._decoder.page_ended and self._decoder.rows < self.config.max_page_rows:
                self._decoder.feed(data)
        self._ecm_blocks_in_page += 1
        if self._ecm_blocks_in_page > self.config.max_ecm_blocks_per_page:
            self._end(T30Result.LIMIT_REACHED, f"page of more than {self.config.max_ecm_blocks_per_page} "
                                               "ECM blocks; not confirmed")
            return
        if with_errors and isinstance(self._decoder, EcmPageDecoder):
            self._decoder.whole = False  # frames are missing: not a clean page any more
        if with_errors:
            self._err_block_pending = fcf2 == PPS_NULL
        else:
            self._ecm_block = (self._ecm_block + 1) & 0xFF
        response = Fcf.ERR if with_errors else Fcf.MCF
        if not self._receiver_ready and not with_errors:
            self._defer(lambda: self._finish_block(fcf2, response))
            return
        self._finish_block(fcf2, response)

    def _finish_block(self, fcf2: int, response: Fcf) -> None:
        if fcf2 == PPS_NULL:
            self.state = State.AWAIT_PAGE
            end = self._respond(response)
            self._arm_t2(end)
            return
        self._page_complete(_POST_PAGE[fcf2], forced=response)

    def _defer(self, action: Callable[[], None]) -> None:
        # T.30 A.4.4: RNR while we cannot take more; the sender polls with RR.
        self._after_ready = action
        self.state = State.RECEIVER_NOT_READY
        self._timers["T5"] = self._now + self.config.t5
        self._send_frames([T30Frame(Fcf.RNR)], remember=False)

    def _rr(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        if self.state is State.RECEIVER_NOT_READY:
            if self._receiver_ready and self._after_ready is not None:
                action, self._after_ready = self._after_ready, None
                self._timers.pop("T5", None)
                action()
            else:
                self._send_frames([T30Frame(Fcf.RNR)], remember=False)
            return
        self._repeat_response("RR")

    def _ctc(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        # T.30 A.4.3: continue to correct, possibly at a new rate (CTC FIF bits 11-14).
        if self.dcs is None or not self.dcs.ecm:
            self.counters["unexpected"] += 1
            self._log(f"unexpected CTC in {self.state.value}")
            return
        self.state = State.AWAIT_PAGE
        self._last_command = ("CTC",)
        end = self._respond(Fcf.CTR)
        self._arm_t2(end)

    def _eor(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        fcf2 = (frame.fif[0] & 0xFE) if frame.fif else PPS_NULL
        key = ("EOR", fcf2)
        if self.state in _ANSWERED_STATES and self._repeat_of_last(key):
            return
        if self.state in (State.ANSWERING, State.AWAIT_DCN) or self.dcs is None or not self.dcs.ecm:
            self.counters["unexpected"] += 1
            self._log(f"unexpected EOR in {self.state.value}")
            return
        self._last_command = key
        if fcf2 != PPS_NULL and fcf2 not in _POST_PAGE:
            self._end(T30Result.RX_ECMPHD, f"EOR with unknown post-page command 0x{fcf2:02X}")
            return
        missing = self._block.missing() if self._block else []
        self._log(f"EOR: block kept with {len(missing)} frame(s) missing")
        self._block_complete(fcf2, with_errors=True)

    # ----- phase D (non-ECM post-message commands, and the ECM page end)
    def _post_page(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        command = _POST_PAGE[frame.fcf]
        key = ("PMC", command)
        if self.state is not State.AWAIT_POST_PAGE:
            if self._repeat_of_last(key):
                return
            if self.state in (State.ANSWERING, State.AWAIT_DCN):
                self.counters["unexpected"] += 1
                self._log(f"unexpected {frame.name} in {self.state.value}")
                return
        if self.dcs is not None and self.dcs.ecm:
            self._end(T30Result.RX_ECMPHD, f"{frame.name} without PPS in ECM mode")
            return
        self._last_command = key
        if self._decoder is None:
            # MPS/EOP/EOM with no page before it: T.30 5.3.6.1.7 - ask for the page again.
            self.state = State.AWAIT_DCS
            end = self._respond(Fcf.RTN)
            self._arm_t2(end)
            return
        self._page_complete(command)

    def _page_complete(self, command: Fcf, forced: Fcf | None = None) -> None:
        decoder, self._decoder = self._decoder, None
        page = decoder.finish()
        dcs = self.dcs
        quality = judge_quality(page.height, page.bad_rows, page.longest_bad_run)
        lost_gaps = self._page_loss_gaps
        rows_lost = 0
        if forced is not None:
            response = forced  # ECM: the transport was checked frame by frame (ERR: given up)
        elif lost_gaps:
            # T.30 5.3.6.2: UDPTL lost image data beyond recovery, so rows are missing that
            # no decoder can count.  RTN: the sender retrains and may send the page again;
            # the best copy goes out with PageRejected in case it does not.
            response = Fcf.RTN
            received = max(self._page_data_ifps, 1)
            # The lost IFPs carried about the same share of the page as the ones received
            # (a sender paces image data evenly at the modem rate).
            rows_lost = -(-page.height * self._page_lost_ifps // received)
        else:
            response = {PageQuality.GOOD: Fcf.MCF, PageQuality.POOR: Fcf.RTP, PageQuality.BAD: Fcf.RTN}[quality]
        if page.height >= self.config.max_page_rows:
            self._end(T30Result.LIMIT_REACHED, f"page taller than the limit of {self.config.max_page_rows} rows; "
                                               "not confirmed")
            return
        confirmed = response in (Fcf.MCF, Fcf.RTP)
        # An ECM page that kept a block taken after EOR (the sender went on) has frames
        # missing: the last block's MCF still goes out, but the page is not reported as
        # received - PageReceived pages are whole.  The sender will not send it again.
        incomplete = dcs.ecm and self._page_has_err_block
        if incomplete:
            self._log("ECM page with a block taken after EOR: frames missing, not kept as received")
        if self._rejected_copy is not None and not dcs.ecm:
            if not self._same_page_again(page):
                self._pages_given_up += 1  # the sender went on: the rejected page keeps its number
            self._rejected_copy = None
        if not confirmed or incomplete:
            if lost_gaps and forced is None:
                self._rejected_copy = (page.width, page.bitmap, min(self._rows_before_loss, page.height))
                self._events.append(PageRejected(
                    self._page_number(), page.height, page.bad_rows, page.longest_bad_run,
                    width=page.width, bitmap=page.bitmap, x_dpi=dcs.resolution.x_dpi, y_dpi=dcs.resolution.y_dpi,
                    compression=dcs.compression.value, ecm=dcs.ecm, ifp_loss_gaps=lost_gaps,
                    rows_lost_estimate=rows_lost))
            else:
                self._events.append(PageRejected(self._page_number(), page.height, page.bad_rows,
                                                 page.longest_bad_run, ecm=dcs.ecm))
            if incomplete and confirmed:
                self._ecm_page = (self._ecm_page + 1) & 0xFF  # the sender is done with it
                self._pages_given_up += 1
        else:
            self.pages_confirmed += 1
            self._document_pages += 1
            if dcs.ecm:
                self._ecm_page = (self._ecm_page + 1) & 0xFF
            self._events.append(PageReceived(
                number=self._page_number() - 1, width=page.width, height=page.height, bitmap=page.bitmap,
                bad_rows=page.bad_rows, longest_bad_run=page.longest_bad_run, quality=quality,
                ifp_loss_gaps=lost_gaps,
                x_dpi=dcs.resolution.x_dpi, y_dpi=dcs.resolution.y_dpi,
                compression=dcs.compression.value, ecm=dcs.ecm,
            ))
        self._page_rows_seen = False
        self._page_loss_gaps = 0
        self._page_data_ifps = self._page_lost_ifps = 0
        self._fast_carrier_seen = False
        self._ecm_block = 0
        self._ecm_blocks_in_page = 0
        self._err_block_pending = False
        self._page_has_err_block = False
        self._err_page_pending = response == Fcf.ERR
        if command == Fcf.MPS:
            # T.30 5.3.6.2.8: after RTP/RTN the sender retrains with a new DCS; after ERR
            # (T.30 A.4: EOR answered) it goes on with the next page.
            self.state = State.AWAIT_PAGE if response in (Fcf.MCF, Fcf.ERR) else State.AWAIT_DCS
        elif command == Fcf.EOP:
            if confirmed:
                self.state = State.AWAIT_DCN
            elif response == Fcf.ERR:
                self.state = State.AWAIT_PAGE  # the page is incomplete; DCN now is RX_DCNDATA
            else:
                self.state = State.AWAIT_DCS
        else:  # EOM: back to phase B
            self.state = State.AWAIT_DCS
        end = self._respond(response)
        if command == Fcf.EOP and confirmed:
            self._events.append(DocumentEnded(self._document_pages, more_documents=False))
        if command == Fcf.EOM:
            if confirmed:
                self._events.append(DocumentEnded(self._document_pages, more_documents=True))
                self._document_pages = 0
            # T.30 Figure 5-2: after the response to EOM (MCF, RTP or RTN alike) both
            # stations return to phase B; the called station sends DIS when T2 runs out
            # without a command (TSB-85 MRGN09: MCF to DIS 5-7 s), and a repeated EOM meanwhile
            # gets its response again (MRGN16).
            self._dis_after_t2 = True
        if confirmed and command in (Fcf.MPS, Fcf.EOM) and self.pages_confirmed >= self.config.max_pages:
            self._end(T30Result.LIMIT_REACHED, f"page limit of {self.config.max_pages} pages per call reached")
            return
        self._arm_t2(end)

    def _repeat_of_last(self, key: tuple) -> bool:
        """T.30 5.4.2: a sender that missed our response repeats its command; answer again."""
        if key == self._last_command and self._last_response:
            if self._tx_free_at > self._now:
                # Our answer is still going out: it answers the repeat too.  A second copy
                # would reach the sender after it has moved on (into its next page).
                self._log(f"repeated command {key[0]} while our response is still being sent")
                return True
            self.counters["responses_repeated"] += 1
            self._log(f"repeated command {key[0]}: response sent again")
            end = self._send_frames(self._last_response)
            self._arm_t2(end)
            return True
        return False

    def _repeat_response(self, why: str) -> None:
        if self._last_response:
            self.counters["responses_repeated"] += 1
            end = self._send_frames(self._last_response)
            self._arm_t2(end)
        else:
            self._log(f"{why} with nothing to repeat")

    def _crp(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        # T.30 5.3.6.1.8: CRP asks us to repeat our last signal.
        if self.state is State.ANSWERING:
            self._dis_sent = 0  # CRP is an answer: the DIS repeat count starts again
            self._send_dis(self._now)
        else:
            self._repeat_response("CRP")

    def _repeat_dcs_response(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        self._dcs(frame, optional)

    def _dcn(self, frame: T30Frame, optional: list[T30Frame]) -> None:
        state = self.state
        if state is State.AWAIT_DCN:
            result, reason = T30Result.OK, "DCN after EOP"
        elif state is State.AWAIT_DCS and self._last_response and self._last_response[-1].fcf == Fcf.RTN:
            result, reason = T30Result.RX_DCNNORTN, "sender hung up after our RTN"
        elif state is State.AWAIT_DCS and self._last_tcf_failed:
            result, reason = T30Result.CANNOT_TRAIN, f"sender hung up after {self._tcf_attempts} failed TCF"
        elif state in (State.ANSWERING, State.AWAIT_DCS, State.AWAIT_TCF, State.TCF):
            result, reason = T30Result.RX_DCNWHY, f"DCN in phase B ({state.value})"
        elif state is State.AWAIT_PAGE:
            # As SpanDSP reports it (t30.c, DCN in its F_DOC states; TSB-85 OREN01).
            result = T30Result.RX_DCNDATA
            reason = f"DCN waiting for image data after {self.pages_confirmed} page(s)"
        elif state is State.RECEIVER_NOT_READY:
            result, reason = T30Result.RX_DCNRRD, "DCN after RNR"
        else:
            result, reason = T30Result.RX_DCNFAX, f"DCN in {state.value}"
        self._end(result, reason, send_dcn=False)

    # ------------------------------------------------------------------ timers
    def _timer_expired(self, name: str) -> None:
        state = self.state
        if name == "T4" and state is State.ANSWERING:
            if self._dis_sent >= MAX_DIS_TRIES:
                self._end(T30Result.RETRYDCN, f"no answer to {self._dis_sent} DIS")
            else:
                self._send_dis(self._now)
        elif name == "TCF_MISSING":
            if state is State.AWAIT_TCF:
                self._tcf_attempts += 1
                self._training_failed("DCS without TCF")
        elif name == "T1":
            if state is State.ANSWERING:
                self._end(T30Result.T1_EXPIRED, "no DCS within T1")
        elif name == "LOCAL_TCF":
            if state is State.AWAIT_TCF:
                self._accept_training()
        elif name == "TCF_END":
            if state is State.TCF:
                self._log("TCF end lost; judged after the data stopped")
                self._tcf_ended()
        elif name == "T5":
            self._end(T30Result.RX_T5EXP, "receiver not ready for longer than T5")
        elif name == "CARRIER":
            if state is State.NON_ECM_PAGE:
                self._log("image carrier stalled; page data ended")
                self.state = State.AWAIT_POST_PAGE
                self._arm_t2()
            elif state is State.ECM_BLOCK:
                self.state = State.AWAIT_POST_PAGE
                self._arm_t2()
        elif name == "T2" and state is State.AWAIT_DCS and self._dis_after_t2:
            # EOM answered and no command within T2: phase B, we send DIS (T.30 Figure 5-2).
            self._dis_after_t2 = False
            self._dis_sent = 0
            self.state = State.ANSWERING
            self._timers["T1"] = self._now + self.config.t1
            self._send_dis(self._now)
        elif name == "T2" and state is State.AWAIT_DCN:
            # Every page was confirmed and EOP answered: only the DCN was lost.  SpanDSP
            # would say RX_T2EXPDCN; for the document that is a success.
            self._end(T30Result.OK, "T2 expired waiting for DCN after EOP; document complete", send_dcn=False)
        elif name == "T2":
            result = {
                State.AWAIT_DCS: T30Result.RX_T2EXP,
                State.AWAIT_TCF: T30Result.RX_T2EXP,
                State.TCF: T30Result.RX_T2EXP,
                State.AWAIT_PAGE: T30Result.RX_T2EXPMPS if self.pages_confirmed else T30Result.RX_T2EXPFAX,
                State.AWAIT_POST_PAGE: T30Result.RX_T2EXPD,
                State.NON_ECM_PAGE: T30Result.RX_NOCARRIER,
                State.ECM_BLOCK: T30Result.RX_NOCARRIER,
            }.get(state)
            if result is not None:
                self._end(result, f"T2 expired in {state.value}")


_H = T30Receiver
_KNOWN_FCF = frozenset(int(f) for f in Fcf)
#: States in which our last response went out and nothing new has arrived since.
_ANSWERED_STATES = frozenset({State.AWAIT_PAGE, State.ANSWERING, State.AWAIT_DCN, State.AWAIT_DCS})
_PHASE_D_ROW = {fcf: _H._post_page for fcf in _POST_PAGE}

#: The command table: state -> {FCF -> handler}.  DCN and CRP are understood in every
#: state; anything else missing here is logged and ignored.
COMMANDS: dict[State, dict[int, Callable]] = {
    State.ANSWERING: {Fcf.DCS: _H._dcs, Fcf.DTC: _H._dtc, Fcf.DIS: _H._dis_collision, **_PHASE_D_ROW,
                      Fcf.PPS: _H._pps, Fcf.EOR: _H._eor},
    State.AWAIT_DCS: {Fcf.DCS: _H._dcs, Fcf.DTC: _H._dtc, **_PHASE_D_ROW, Fcf.PPS: _H._pps},
    State.AWAIT_TCF: {Fcf.DCS: _H._dcs},
    State.TCF: {Fcf.DCS: _H._dcs},
    State.AWAIT_PAGE: {Fcf.DCS: _H._repeat_dcs_response, **_PHASE_D_ROW, Fcf.PPS: _H._pps,
                       Fcf.EOR: _H._eor, Fcf.CTC: _H._ctc, Fcf.RR: _H._rr},
    State.AWAIT_POST_PAGE: {**_PHASE_D_ROW, Fcf.PPS: _H._pps, Fcf.EOR: _H._eor, Fcf.CTC: _H._ctc,
                            Fcf.RR: _H._rr, Fcf.DCS: _H._dcs},
    State.RECEIVER_NOT_READY: {Fcf.RR: _H._rr, Fcf.PPS: _H._pps, Fcf.EOR: _H._eor},
    State.AWAIT_DCN: {**_PHASE_D_ROW, Fcf.DCS: _H._dcs, Fcf.PPS: _H._pps, Fcf.EOR: _H._eor},
}
