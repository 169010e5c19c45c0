"""The T.30 transmit engine over T.38: a calling fax terminal, sans-IO.

How it works
============
The engine is the calling station of T.30 that sends a document.  Like ``T30Receiver``
its inputs are the IFP packets UDPTL delivered in order (and the fact that some were
lost), timers and ``now``; its outputs are IFP packets to send at given times, events and
its next deadline.  It never reads a clock or touches a socket.

* **B** - CNG (T.30 5.3.2: 0.5 s on, 3 s off) while waiting for the called terminal's DIS
  (T0, 60 s, as SpanDSP: over SIP the called machine may still be ringing behind a
  gateway); CED and NSF/CSI are taken as they come.  From the DIS we choose the best common
  mode (``choose_mode``: modem from V.17 14.4k down to V.27ter 2.4k in
  ``capabilities.FALLBACK_ORDER``, resolution, width, MMR > MR > MH, ECM) and send TSI+DCS
  then TCF: 1.5 s of zeros at the DCS rate (T.30 5.3.6.2.3).  CFR goes on to the page;
  FTT steps the modem one down and trains again (T.30 Annex A.2); no answer within T4
  repeats DCS+TCF, three times, then DCN (TX_PHBDEAD).
* **C** - non-ECM: the page coded as the DCS says (MH/MR with the fill bits the minimum
  scan-line time asks, T.4 4.1.3), paced at the modem's rate.  ECM (T.4 Annex A): the
  coded page cut into FCD frames of 64/256 octets, blocks of up to 256 frames, each block
  closed by three RCP.
* **D** - non-ECM MPS/EOM/EOP (T.30 5.3.6.1.6): MCF goes on; RTP keeps the page and
  retrains (DCS+TCF, one modem step lower as SpanDSP does) before the next; RTN resends
  the page after such a retrain, at most ``max_page_retries`` times, then DCN (RETRYDCN).
  EOM (``document_ends``/``append_document``) returns to phase B for the next document.
  A response is acted on when its V.21 carrier ends; T4 and CRP repeat only our command
  (three tries, then DCN: TX_PHBDEAD / TX_PHDDEAD).  ECM PPS-x (T.30 A.4.1): MCF goes on,
  PPR resends exactly the frames its map lists; after the fourth PPR for one block, CTC
  with the next lower modem (CTR, then the frames again) or, at the lowest, EOR-x (ERR);
  RNR is polled with RR until MCF (T5).
* **E** - MCF to EOP: DCN, OK.  DCN from the receiver, T1, or a command left unanswered
  three times end the call with the SpanDSP-like ``T30Result.TX_*``.

The machine is a table, as in ``receiver``: ``TRANSITIONS[state][input] -> (handler,
next)``; handlers return an ``Outcome`` and only ``_apply`` changes the state.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import imaging
from imaging.libtiff import encode_with_libtiff
from udptl.ifp import IfpPacket, T30Data, T30Indicator

from t38gw.t30 import t38_io
from t38gw.t30.capabilities import best_compression, usable_modems
from t38gw.t30.dcs import (
    Compression,
    Modulation,
    PaperWidth,
    RemoteCapabilities,
    Resolution,
    build_dcs,
    parse_dis,
)
from t38gw.t30.ecm import frames_in_ppr_map
from t38gw.t30.errors import LocalProtocolError, RemoteProtocolError
from t38gw.t30.events import CallEnded, Event, PageSent, PhaseBCompleted, T30Result
from t38gw.t30.machine import TableMachine
from t38gw.t30.frames import PPS_NULL, Fcf, T30Frame, decode_ident, encode_ident
from t38gw.t30.t38_io import OutgoingIfp
from t38gw.t30.timers import CNG_ON, CNG_PERIOD, RESPONSE_END_WAIT, T0, T1, T4, TCF_DURATION, Deadlines, Timer

__all__ = ["TRANSITIONS", "ChosenMode", "State", "T30Transmitter", "TransmitterConfig", "choose_mode"]

#: A command left unanswered this many times ends the call (T.30 5.3.2 / Figure 5-2).
MAX_COMMAND_TRIES = 3
# T4 running out while the far end's V.21 carrier is on waits for what it says (checked
# again every PEER_TALK_RECHECK s), for at most PEER_TALK_LIMIT s of carrier: a 1 s
# preamble and NSF/CSI/DIS frames take ~3 s at 300 bit/s.
PEER_TALK_RECHECK = 0.5
PEER_TALK_LIMIT = 6.0
#: T.30 A.4.2 / A.2: the fourth PPR for one block asks for CTC (continue, slower) or EOR.
PPR_LIMIT = 4
#: T.30 A.4.4: how long after RNR to poll with RR again: at once (after the usual 75 ms
#: of silence), as SpanDSP does; TSB-85 OTEN03 expects at least 23 RNR/RR rounds in T5.
RR_INTERVAL = 0.0
#: T.30 5.4.1: T5 is 60 +/- 5 s; we wait the upper bound, as SpanDSP does (TSB-85 OTEN03).
TX_T5 = 65.0


class State(enum.Enum):
    """The calling engine's states (see TRANSITIONS)."""

    __hash__ = object.__hash__
    IDLE = "idle"
    AWAIT_DIS = "await_dis"  # calling: CNG until DIS (T1)
    AWAIT_CFR = "await_cfr"  # DCS+TCF sent (T4)
    AWAIT_PAGE_RESPONSE = "await_page_response"  # non-ECM page + MPS/EOP sent (T4)
    AWAIT_PPS_RESPONSE = "await_pps_response"  # ECM block + PPS-x sent (T4)
    AWAIT_RR_RESPONSE = "await_rr_response"  # RNR came: RR polls (T5)
    AWAIT_CTR = "await_ctr"  # CTC sent (T4)
    AWAIT_ERR = "await_err"  # EOR sent (T4)
    ENDED = "ended"


class Signal(enum.Enum):
    __hash__ = object.__hash__
    CALL = "call"  # start()
    UNKNOWN_RESPONSE = "unknown_response"  # a final V.21 frame whose FCF T.30 does not define


@dataclass(frozen=True)
class TransmitterConfig:
    """How the engine sends.  ``local_ident`` is our TSI (T.30 Table 3 characters)."""

    local_ident: str = ""
    ecm: bool = True
    ecm_frame_size: int = 256  # 256 or 64 (T.30 Table 2 bit 28 of DCS)
    compressions: frozenset[Compression] = frozenset(Compression)
    modems: frozenset[str] = frozenset({"V.27ter", "V.29", "V.17"})
    max_bit_rate: int = 14400
    max_page_retries: int = 3
    send_cng: bool = True
    t0: float = T0
    t1: float = T1
    t4: float = T4
    t5: float = TX_T5


class ChosenMode(NamedTuple):
    """What the DCS asks for: the page parameters both ends have."""

    modems: tuple[Modulation, ...]  # fastest first; FTT steps along it
    resolution: Resolution
    paper_width: PaperWidth
    compression: Compression
    ecm: bool
    scan_time_ms: int


#: Resolutions by the page resolution they can carry, the page's own first, then those
#: that take it by merging rows (an integer factor, see ``_fit_page``).
_RESOLUTION_CHOICES: dict[Resolution, tuple[Resolution, ...]] = {
    Resolution.R8_STANDARD: (Resolution.R8_STANDARD, Resolution.INCH_200_100),
    Resolution.INCH_200_100: (Resolution.INCH_200_100, Resolution.R8_STANDARD),
    Resolution.R8_FINE: (Resolution.R8_FINE, Resolution.INCH_200_200, Resolution.R8_STANDARD,
                         Resolution.INCH_200_100),
    Resolution.INCH_200_200: (Resolution.INCH_200_200, Resolution.R8_FINE, Resolution.INCH_200_100,
                              Resolution.R8_STANDARD),
    Resolution.R8_SUPERFINE: (Resolution.R8_SUPERFINE, Resolution.INCH_200_400, Resolution.R8_FINE,
                              Resolution.INCH_200_200, Resolution.R8_STANDARD, Resolution.INCH_200_100),
    Resolution.INCH_200_400: (Resolution.INCH_200_400, Resolution.R8_SUPERFINE, Resolution.INCH_200_200,
                              Resolution.R8_FINE, Resolution.INCH_200_100, Resolution.R8_STANDARD),
    Resolution.INCH_300_300: (Resolution.INCH_300_300,),
    Resolution.R16_SUPERFINE: (Resolution.R16_SUPERFINE, Resolution.INCH_400_400),
    Resolution.INCH_400_400: (Resolution.INCH_400_400, Resolution.R16_SUPERFINE),
}


def page_resolution(page: imaging.Page) -> Resolution:
    """The T.30 resolution nearest to a page's own."""
    return min(Resolution, key=lambda r: abs(r.x_dpi - page.x_dpi) * 2 + abs(r.y_dpi - page.y_dpi))


def choose_mode(remote: RemoteCapabilities, config: TransmitterConfig, page: imaging.Page) -> ChosenMode | str:
    """The best mode both ends have for ``page`` (T.30 5.3.6.2.2: the DCS is within the DIS),
    or why there is none."""
    offered = remote.capabilities
    modems = usable_modems(offered.modems, config.modems, config.max_bit_rate)
    if not modems:
        return f"no common modem (receiver offers {sorted(offered.modems)})"
    ecm = config.ecm and offered.ecm
    compression = best_compression(offered.compressions, config.compressions, ecm)
    if compression not in config.compressions:
        return f"no common coding (we allow {sorted(c.value for c in config.compressions)})"
    wanted = page_resolution(page)
    resolution = next((r for r in _RESOLUTION_CHOICES[wanted] if r in offered.resolutions), None)
    if resolution is None:
        return f"receiver takes no resolution that carries {wanted.label}"
    widths = [w for w in PaperWidth if w in offered.widths and resolution.widths[w] <= max(page.width, 1728)]
    paper_width = max(widths, default=PaperWidth.A4)
    fine = resolution.y_dpi > 150
    scan = 0 if ecm else remote.scan_time_ms[1 if fine else 0]
    return ChosenMode(tuple(modems), resolution, paper_width, compression, ecm, scan)


def _fit_page(page: imaging.Page, resolution: Resolution, width: int) -> bytes:
    """The page's rows at ``resolution`` and ``width`` pixels: rows merged (OR) when the
    receiver takes only a coarser resolution, cut or padded (centred) to the width."""
    stride = page.width // 8
    rows = [page.bitmap[y * stride:(y + 1) * stride] for y in range(page.height)]
    factor = max(1, round(page_resolution(page).y_dpi / resolution.y_dpi))
    if factor > 1:
        merged = []
        for y in range(0, len(rows), factor):
            value = 0
            for row in rows[y:y + factor]:
                value |= int.from_bytes(row, "big")
            merged.append(value.to_bytes(stride, "big"))
        rows = merged
    target = width // 8
    if target != stride:
        if target < stride:
            cut = (stride - target) // 2
            rows = [row[cut:cut + target] for row in rows]
        else:
            left = (target - stride) // 2
            rows = [bytes(left) + row + bytes(target - stride - left) for row in rows]
    return b"".join(rows)


_CODING = {Compression.MH: imaging.Coding.MH, Compression.MR: imaging.Coding.MR, Compression.MMR: imaging.Coding.MMR}




def code_page(bitmap: bytes, width: int, mode: ChosenMode, modem: Modulation) -> bytes:
    """A page coded as the DCS says, in T.38 order (MSB first): MR's K from the resolution
    (T.4 4.2.1.3.4), fill bits for the minimum scan-line time (T.4 4.1.3).

    MMR, and MH and MR without fill, go through libtiff (``imaging.libtiff``), 4-5x faster:
    its T.6 strip is byte-identical to ``imaging.encode_page``'s, and its T.4 strip is the
    same EOL-led lines (MR: with tag bits, K 2 or 4 as libtiff can, up to 7.7 l/mm)
    without RTC, which we add from the next byte boundary (the pad zeros before it are
    fill, T.4 4.1.3).  Fill, and MR above 200 lines/inch (K 6 and up), need our encoder.
    tests/t38gw/t30/test_transmitter.py checks each path.
    """
    fill = imaging.min_row_bits(modem.bit_rate, mode.scan_time_ms) if mode.scan_time_ms else 0
    height = len(bitmap) // (width // 8)
    coding = _CODING[mode.compression]
    k = imaging.mr_k(mode.resolution.y_dpi)
    order = imaging.BitOrder.MSB_FIRST
    if height and coding is imaging.Coding.MMR:
        return encode_with_libtiff(bitmap, width, height, coding, bit_order=order)
    if height and not fill and (coding is imaging.Coding.MH or k in imaging.libtiff.LIBTIFF_MR_K):
        strip = encode_with_libtiff(bitmap, width, height, coding, bit_order=order, k=k)
        return strip + imaging.libtiff.rtc_after_strip(coding, bit_order=order)
    return imaging.encode_page(bitmap, width, coding, k=k, min_row_bits=fill, bit_order=order)


# ---------------------------------------------------------------------- outcomes
@dataclass(frozen=True, slots=True)
class Ending:
    result: T30Result
    reason: str
    send_dcn: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler decided (see ``receiver.Outcome``): ``next_state`` among the table's
    choices, ``events`` to report, ``then`` a timer armed once our output is out, ``end``
    ends the call (DCN first unless told otherwise)."""

    next_state: State | None = None
    events: tuple[Event, ...] = ()
    then: Timer | None = None
    end: Ending | None = None


Input = Fcf | Timer | Signal
Handler = Callable[["T30Transmitter", Any], "Outcome | None"]
Next = State | frozenset[State]
_FCF_OF: dict[int, Fcf] = {int(f): f for f in Fcf}


def _ended(result: T30Result, reason: str, *, send_dcn: bool = True, events: tuple[Event, ...] = ()) -> Outcome:
    return Outcome(State.ENDED, events=events, end=Ending(result, reason, send_dcn))


class Command(NamedTuple):
    """A V.21 frame from the receiver and the optional frames before it."""

    frame: T30Frame
    optional: tuple[T30Frame, ...] = ()


class T30Transmitter(TableMachine):
    """The calling-station T.30 engine.  See the module docstring.

    Drive it as ``T30Receiver``: ``start(now)``, then ``ifp_received``/``ifps_lost``/
    ``handle_timer``; after each call send ``ifps_to_send(now)`` and wake at
    ``next_deadline()``.  Every method returns the events it produced.
    """

    _ENDED = State.ENDED
    state: State

    def __init__(self, config: TransmitterConfig | None, pages: Sequence[imaging.Page], *,
                 document_ends: Sequence[int] = ()) -> None:
        """``document_ends``: indexes of pages that end a document before the last page; EOM
        follows them (T.30 5.3.6.1.6) and phase B starts again."""
        if not pages:
            raise LocalProtocolError("a fax needs at least one page")
        self.config = config or TransmitterConfig()
        self.pages = list(pages)
        self.document_ends = frozenset(i for i in document_ends if 0 <= i < len(self.pages) - 1)
        self._tsi = encode_ident(self.config.local_ident) if self.config.local_ident else None
        self.state = State.IDLE
        self._row = TRANSITIONS[State.IDLE]
        self._demux = t38_io.IfpDemultiplexer()
        self._outgoing: deque[OutgoingIfp] = deque()
        self._tx_free_at = 0.0
        self._deadlines = Deadlines()
        self._durations = {Timer.T1: self.config.t1, Timer.T4: self.config.t4, Timer.T5: self.config.t5,
                           Timer.CNG: CNG_PERIOD, Timer.RR: RR_INTERVAL}
        self._events: list[Event] = []
        self._now = 0.0
        self._pending: list[T30Frame] = []
        self._held: Command | None = None  # a response waiting for its carrier to end
        self._eop_sent = False
        self._trained_on: Modulation | None = None  # the rate the receiver last trained on
        self._peer_talking_since: float | None = None  # the far end's V.21 carrier is on
        self.remote_ident = ""
        self.remote: RemoteCapabilities | None = None
        self.mode: ChosenMode | None = None
        self._modem_index = 0
        self._dcs_fif = b""
        self._tries = 0  # sends of the command now awaiting its response
        self._resend: Callable[[], None] | None = None  # sends that command again
        # Pages
        self.page_index = 0  # the page being sent (0-based)
        self._page_attempts = 0
        self.pages_confirmed = 0
        self._coded: dict[tuple[int, int], bytes] = {}
        self._retrain_before_page = False
        # ECM
        self._blocks: list[list[bytes]] = []  # the current page's blocks of frame payloads
        self._block_index = 0
        self._ppr_count = 0
        self._last_burst: list[int] = []
        self._pps_fif = b""
        self._resume_block = False  # after CFR: the current block again, not a new page
        self._phase_b_returns = 0  # DIS in answer to this block's PPS, so far
        self.counters = {"ppr_received": 0, "frames_resent": 0, "ftt_received": 0, "rtn_received": 0,
                         "rtp_received": 0, "ctc_sent": 0, "eor_sent": 0, "rnr_received": 0,
                         "commands_repeated": 0, "bad_frames": 0, "unexpected": 0}

    # ------------------------------------------------------------------ driving
    def append_document(self, pages: Sequence[imaging.Page]) -> None:
        """Another document to send in this call, after the current one (EOM between them,
        T.30 5.3.6.1.6).  Only before the last page's post-page command was chosen."""
        if not pages:
            return
        if self.state is State.ENDED or self._last_command_chosen:
            raise LocalProtocolError("append_document() after the last page's EOP was sent")
        self.document_ends = self.document_ends | {len(self.pages) - 1}
        self.pages.extend(pages)

    @property
    def _last_command_chosen(self) -> bool:
        return self._eop_sent

    def start(self, now: float) -> list[Event]:
        """The call is up: CNG while waiting for DIS.  Starts T1."""
        if self.state is not State.IDLE:
            raise LocalProtocolError("start() called twice")
        self._now = now
        self._tx_free_at = now
        self._input(Signal.CALL)
        return self._take_events()

    def ifp_received(self, packet: IfpPacket, now: float) -> list[Event]:
        """Feed one IFP packet (in sequence order, after UDPTL recovery)."""
        self._now = now
        if self.state is State.ENDED:
            return []
        if self.state is State.IDLE:
            raise LocalProtocolError("ifp_received() before start()")
        for ev in self._demux.packet_received(packet):
            if isinstance(ev, t38_io.HdlcFrameArrived) and ev.data_type is T30Data.V21:
                self._control_frame(ev)
            elif isinstance(ev, (t38_io.HdlcSignalEnded, t38_io.SignalStarted)):
                talking = isinstance(ev, t38_io.SignalStarted) and ev.indicator is T30Indicator.V21_PREAMBLE
                self._peer_talking_since = now if talking else None
                if self._pending and isinstance(ev, t38_io.HdlcSignalEnded):
                    self._log(f"{len(self._pending)} frame(s) without a final frame")
                    self._pending = []
                self._dispatch_held()
            if self.finished_state:
                break
        return self._take_events()

    def ifps_lost(self, count: int, now: float) -> list[Event]:
        """UDPTL could not recover ``count`` IFPs: a response in progress is damaged (the
        receiver repeats it, or we repeat our command after T4)."""
        self._now = now
        if self.state not in (State.ENDED, State.IDLE):
            self._demux.note_loss()
        return self._take_events()

    def handle_timer(self, now: float) -> list[Event]:
        """Fire the timers due at ``now``."""
        self._now = now
        if self.state is State.ENDED:
            self._deadlines.clear()  # nothing runs after the end
            return []
        for timer, deadline in self._deadlines.in_order():
            if self.finished_state:
                break
            if self._deadlines.fire(timer, deadline, now):
                if timer is Timer.RESPONSE_END:
                    self._dispatch_held()
                else:
                    self._input(timer)
        return self._take_events()

    def hang_up(self, now: float) -> list[Event]:
        """The call went away (BYE): end with the pages confirmed so far."""
        self._now = now
        if self.state is State.ENDED:
            return []
        self._apply(_ended(T30Result.CALL_DROPPED, f"call dropped in state {self.state.value}", send_dcn=False),
                    State.ENDED)
        self._outgoing.clear()
        return self._take_events()

    def ifps_to_send(self, now: float) -> list[OutgoingIfp]:
        """The packets whose time has come, in order; each is sent ``repeat`` times."""
        out = []
        queue = self._outgoing
        while queue and queue[0].at <= now:
            out.append(queue.popleft())
        return out

    def next_deadline(self) -> float | None:
        """When to call ``handle_timer``/``ifps_to_send`` next (None: nothing pending)."""
        deadline = self._deadlines.next()
        if self._outgoing and (deadline is None or self._outgoing[0].at < deadline):
            return self._outgoing[0].at
        return deadline

    @property
    def finished_state(self) -> bool:
        return self.state is State.ENDED

    @property
    def finished(self) -> bool:
        return self.state is State.ENDED and not self._outgoing

    # ------------------------------------------------------------------ the machine
    def _apply(self, outcome: Outcome | None, declared: Next) -> None:
        """Carry out a handler's outcome; the only place the state changes."""
        if outcome is None:
            self._move_without_outcome(declared)
            return
        chosen = self._chosen_state(outcome, declared)
        self._events.extend(outcome.events)
        if outcome.end is not None:
            if outcome.end.send_dcn:
                self._send_frames((T30Frame(Fcf.DCN, x_bit=True),))
            self._deadlines.clear()
            self.state = State.ENDED
            self._row = TRANSITIONS[State.ENDED]
            self._events.append(CallEnded(outcome.end.result, self.pages_confirmed, outcome.end.reason))
            return
        self.state = chosen
        self._row = TRANSITIONS[chosen]
        if outcome.then is not None:
            self._deadlines.arm(outcome.then, max(self._now, self._tx_free_at) + self._durations[outcome.then])

    # ------------------------------------------------------------------ output helpers
    def _queue(self, packets: list[OutgoingIfp]) -> None:
        if self._outgoing and packets and packets[0].at < self._outgoing[-1].at:
            merged = sorted([*self._outgoing, *packets], key=lambda p: p.at)
            self._outgoing = deque(merged)
        else:
            self._outgoing.extend(packets)

    def _line_free(self) -> float:
        return max(self._now + t38_io.SILENCE_S, self._tx_free_at)

    def _send_frames(self, frames: tuple[T30Frame, ...]) -> None:
        packets, self._tx_free_at = t38_io.hdlc_burst(list(frames), self._line_free())
        self._queue(packets)

    @property
    def modem(self) -> Modulation:
        assert self.mode is not None
        return self.mode.modems[self._modem_index]

    def _command(self, send: Callable[[], None]) -> None:
        """Send a command that waits for a response; T4 repeats it (``_t4_expired``)."""
        self._tries = 1
        self._resend = send
        send()

    # ------------------------------------------------------------------ front end
    def _control_frame(self, ev: t38_io.HdlcFrameArrived) -> None:
        if not ev.fcs_ok:
            self.counters["bad_frames"] += 1
            self._pending = []
            self._log("response frame with bad FCS or lost octets")
            return
        try:
            frame = T30Frame.from_wire(ev.wire)
        except RemoteProtocolError as exc:
            self.counters["bad_frames"] += 1
            self._log(str(exc))
            return
        if not frame.final:
            self._pending.append(frame)
            return
        optional, self._pending = self._pending, []
        # T.30 5.3.2 / 5.4.1: we answer once the far end's carrier has ended (half duplex),
        # at its hdlc-sig-end or next indicator.
        self._dispatch_held()
        self._held = Command(frame, tuple(optional))
        self._deadlines.arm(Timer.RESPONSE_END, self._now + RESPONSE_END_WAIT)

    def _dispatch_held(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        self._deadlines.cancel(Timer.RESPONSE_END)
        fcf = _FCF_OF.get(held.frame.fcf)
        if not self._input(Signal.UNKNOWN_RESPONSE if fcf is None else fcf, held):
            self.counters["unexpected"] += 1
            self._log(f"unexpected {held.frame.name} in {self.state.value}")

    # ------------------------------------------------------------------ handlers: phase B
    def _call(self, arrived: object) -> Outcome:
        if self.config.send_cng:
            self._cng()
        # The first wait for DIS is T0, not T1: over SIP the call is "up" at the 200 OK, but
        # the called machine may still be ringing behind a gateway to a fax line (SpanDSP's
        # T0, 60 s; TSB-85 MTGX02 sends DIS 40 s after the call starts).  T1 (35 s) bounds
        # the other waits for a valid frame in phase B.
        self._deadlines.arm(Timer.T1, max(self._now, self._tx_free_at) + self.config.t0)
        return Outcome()

    def _cng(self) -> None:
        # T.30 5.3.2: CNG, 0.5 s of tone then 3 s of silence, until DIS is heard.
        at = max(self._now, self._tx_free_at)
        self._queue([t38_io.indicator(at, T30Indicator.CNG), t38_io.indicator(at + CNG_ON, T30Indicator.NO_SIGNAL)])
        self._tx_free_at = at + CNG_ON + t38_io.SILENCE_S
        self._deadlines.arm(Timer.CNG, at + CNG_PERIOD)

    def _cng_again(self, arrived: object) -> None:
        self._cng()

    def _t1_expired(self, arrived: object) -> Outcome:
        return _ended(T30Result.TX_T1EXPIRED, "no DIS within T0/T1 (no fax machine answered)", send_dcn=False)

    def _dis(self, arrived: Command) -> Outcome:
        try:
            remote = parse_dis(arrived.frame.fif)
        except RemoteProtocolError as exc:
            self._log(f"bad DIS: {exc}")
            return Outcome()  # the receiver repeats DIS (T.30 5.3.6.1); T1/T4 still run
        self._deadlines.cancel(Timer.CNG, Timer.T1)
        for extra in arrived.optional:
            if extra.fcf == Fcf.CSI:
                self.remote_ident = decode_ident(extra.fif)
        if not remote.capabilities.ready_to_receive:
            return _ended(T30Result.RX_INCAPABLE, "DIS says the receiver cannot receive (bit 10)")
        mode = choose_mode(remote, self.config, self.pages[self.page_index])
        if isinstance(mode, str):
            return _ended(T30Result.INCOMPATIBLE, mode)
        self.remote = remote
        if self.mode is not None and self.state is State.AWAIT_CFR:
            # DIS again: our DCS was not heard.  It counts as a try of the DCS (T.30 Figure
            # 5-2: three tries, then DCN; TSB-85 MTGX12), in the mode already chosen.
            if self._tries >= MAX_COMMAND_TRIES:
                return _ended(T30Result.RETRYDCN, f"DIS in answer to our DCS {self._tries} times")
            self._tries += 1
            self.counters["commands_repeated"] += 1
            self._send_dcs_tcf()
            return Outcome(State.AWAIT_CFR, then=Timer.T4)
        self.mode, self._modem_index = mode, 0
        self._command(self._send_dcs_tcf)
        return Outcome(State.AWAIT_CFR, then=Timer.T4)

    def _send_dcs_tcf(self) -> None:
        mode = self.mode
        assert mode is not None
        modem = self.modem
        self._dcs_fif = build_dcs(modem, mode.resolution, mode.paper_width, mode.compression, mode.ecm,
                                  self.config.ecm_frame_size, mode.scan_time_ms)
        frames = [T30Frame(Fcf.DCS, self._dcs_fif, x_bit=True)]
        if self._tsi is not None:
            frames.insert(0, T30Frame(Fcf.TSI, self._tsi, final=False, x_bit=True))
        self._send_frames(tuple(frames))
        # T.30 5.3.6.2.3: TCF, 1.5 s of zeros at the DCS rate, 75 ms after the DCS.
        zeros = bytes(int(modem.bit_rate * TCF_DURATION) // 8)
        packets, self._tx_free_at = t38_io.image_burst(zeros, modem.indicator, modem.data_type, modem.bit_rate,
                                                       self._tx_free_at)
        self._queue(packets)

    def _t4_expired(self, arrived: object) -> Outcome | None:
        since = self._peer_talking_since
        if since is not None and self._now - since < PEER_TALK_LIMIT:
            # T.30 5.3.2: a station does not send over the other's carrier.  The far end is
            # sending V.21 (often DIS: it went back to phase B without hearing our command),
            # so what it says decides; repeating our command now would cross it (a PPS that
            # arrives in its phase B is answered DCN: bench/impairment.py).  Look again soon.
            self._deadlines.arm(Timer.T4, self._now + PEER_TALK_RECHECK)
            return None
        if self._tries >= MAX_COMMAND_TRIES or self._resend is None:
            result = T30Result.TX_PHBDEAD if self.state is State.AWAIT_CFR else T30Result.TX_PHDDEAD
            return _ended(result, f"no response after {self._tries} tries in {self.state.value}")
        self._tries += 1
        self.counters["commands_repeated"] += 1
        self._resend()
        return Outcome(then=Timer.T4)

    def _cfr(self, arrived: Command) -> Outcome:
        self._trained_on = self.modem  # TCF trained the receiver at this rate
        mode = self.mode
        assert mode is not None
        events: list[Event] = []
        if not self._retrain_before_page:
            modem = self.modem
            events.append(PhaseBCompleted(
                remote_ident=self.remote_ident, subaddress="", password="", modem=modem.family,
                bit_rate=modem.bit_rate, ecm=mode.ecm, compression=mode.compression.value,
                x_dpi=mode.resolution.x_dpi, y_dpi=mode.resolution.y_dpi,
                width_px=mode.resolution.widths[mode.paper_width]))
        self._retrain_before_page = False
        if self._resume_block:
            self._resume_block = False
            self._start_block(keep_returns=True)
            return Outcome(State.AWAIT_PPS_RESPONSE, events=tuple(events), then=Timer.T4)
        return self._start_page(tuple(events))

    def _ftt(self, arrived: Command) -> Outcome:
        # T.30 Annex A.2 / 5.3.6.2.3: the training failed: one modem step down and train again.
        assert self.mode is not None
        self.counters["ftt_received"] += 1
        if self._modem_index + 1 >= len(self.mode.modems):
            return _ended(T30Result.CANNOT_TRAIN, f"FTT at {self.modem.bit_rate} bit/s, the lowest common rate")
        self._modem_index += 1
        self._command(self._send_dcs_tcf)
        return Outcome(then=Timer.T4)

    def _step_down(self) -> None:
        """After RTP/RTN the retrain is one modem step lower (T.30 leaves the rate to the
        sender; SpanDSP steps down, and TSB-85 MTGN24 expects it), unless at the lowest."""
        assert self.mode is not None
        if self._modem_index + 1 < len(self.mode.modems):
            self._modem_index += 1

    def _dcn(self, arrived: Command) -> Outcome:
        # T.30 5.3.5: DCN ends the call; what we had queued (e.g. the rest of a TCF) would
        # go to nobody, so the call ends now (TSB-85 MTGX02: within 100 ms of the clear).
        still_sending = self._tx_free_at > self._now
        self._outgoing.clear()
        self._tx_free_at = self._now
        if still_sending:
            # A half-duplex terminal does not hear a frame sent over its own carrier: to it
            # the far end simply went away (SpanDSP: CALLDROPPED, TSB-85 MTGX02).
            return _ended(T30Result.CALL_DROPPED, "the receiver hung up (DCN) while we were still sending",
                          send_dcn=False)
        if self.state is State.AWAIT_PAGE_RESPONSE:
            # As SpanDSP reports it (TSB-85 MTGX05/MTGX06): DCN in answer to MPS/EOM is
            # RX_DCNPHD, in answer to EOP TX_BADPG.
            if self.page_index + 1 >= len(self.pages):
                return _ended(T30Result.TX_BADPG, "receiver sent DCN in answer to EOP", send_dcn=False)
            return _ended(T30Result.RX_DCNPHD, "receiver sent DCN in answer to MPS/EOM", send_dcn=False)
        if self.state is State.AWAIT_CFR:
            # As SpanDSP reports it: DCN in answer to DCS/TCF.
            return _ended(T30Result.TX_BADDCS, "receiver sent DCN in answer to our DCS", send_dcn=False)
        return _ended(T30Result.TX_GOTDCN, f"receiver sent DCN in {self.state.value}", send_dcn=False)

    def _crp(self, arrived: Command) -> Outcome | None:
        # T.30 5.3.6.1.8: CRP asks for our last command again; it counts as a try, as a T4
        # expiry does (three, then DCN: TSB-85 MTGX13/MTGX15).
        if self._resend is None:
            return Outcome()  # nothing of ours to repeat (waiting for DIS)
        return self._t4_expired(arrived)

    # ------------------------------------------------------------------ phase C: pages
    def _coded_page(self) -> bytes:
        mode = self.mode
        assert mode is not None
        key = (self.page_index, self.modem.bit_rate if mode.scan_time_ms else 0)
        coded = self._coded.get(key)
        if coded is None:
            width = mode.resolution.widths[mode.paper_width]
            bitmap = _fit_page(self.pages[self.page_index], mode.resolution, width)
            coded = self._coded[key] = code_page(bitmap, width, mode, self.modem)
            if len(self._coded) > 2:
                self._coded = {k: v for k, v in self._coded.items() if k[0] >= self.page_index}
        return coded

    def _post_page_fcf(self) -> Fcf:
        # T.30 5.3.6.1.6: MPS with more pages of this document, EOM when another document
        # follows, EOP after the last.
        if self.page_index + 1 >= len(self.pages):
            self._eop_sent = True
            return Fcf.EOP
        return Fcf.EOM if self.page_index in self.document_ends else Fcf.MPS

    def _start_page(self, events: tuple[Event, ...] = ()) -> Outcome:
        mode = self.mode
        assert mode is not None
        self._page_attempts += 1
        if mode.ecm:
            data = self._coded_page()
            size = self.config.ecm_frame_size
            frames = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
            self._blocks = [frames[i:i + 256] for i in range(0, len(frames), 256)]
            self._block_index = 0
            self._start_block()
            return Outcome(State.AWAIT_PPS_RESPONSE, events=events, then=Timer.T4)
        self._command(self._send_non_ecm_page)
        return Outcome(State.AWAIT_PAGE_RESPONSE, events=events, then=Timer.T4)

    def _page_training(self) -> Any:
        """The training indicator before image data: V.17's short one once the receiver
        trained on this rate (TCF answered CFR, or an earlier burst at it; after CTC the
        first burst at the new rate trains long)."""
        modem = self.modem
        if self._trained_on is modem:
            return t38_io.SHORT_TRAINING.get(modem.indicator, modem.indicator)
        self._trained_on = modem
        return modem.indicator

    def _send_non_ecm_page(self) -> None:
        # T4 and CRP repeat only the post-page command (T.30 5.3.2, Figure 5-2), not the page.
        self._resend = lambda: self._send_frames((T30Frame(self._post_page_fcf(), x_bit=True),))
        modem = self.modem
        packets, self._tx_free_at = t38_io.image_burst(self._coded_page(), self._page_training(), modem.data_type,
                                                       modem.bit_rate, self._line_free())
        self._queue(packets)
        # The post-page command is chosen when the page is out (a document may be appended
        # meanwhile): PAGE_SENT.
        self._deadlines.arm(Timer.PAGE_SENT, self._tx_free_at - t38_io.SILENCE_S)

    def _page_sent(self, arrived: object) -> Outcome:
        """The image data is out: MPS/EOM/EOP (non-ECM) or PPS-x (ECM) follows."""
        if self.mode is not None and self.mode.ecm:
            last_block = self._block_index + 1 >= len(self._blocks)
            fcf2 = int(self._post_page_fcf()) | 1 if last_block else PPS_NULL
            # T.30 A.4.1: [post-page FCF, page, block, frames-1]; frames in this burst, as
            # SpanDSP's t30.c counts them.
            self._pps_fif = bytes((fcf2, self.page_index & 0xFF, self._block_index & 0xFF,
                                   max(0, len(self._last_burst) - 1)))
            self._send_frames((T30Frame(Fcf.PPS, self._pps_fif, x_bit=True),))
        else:
            self._send_frames((T30Frame(self._post_page_fcf(), x_bit=True),))
        return Outcome(then=Timer.T4)

    def _page_response(self, arrived: Command) -> Outcome:
        fcf = _FCF_OF[arrived.frame.fcf]
        number = self.page_index + 1
        if fcf is Fcf.RTN:
            # T.30 5.3.6.2.8: the page was not taken; retrain (DCS+TCF) and send it again.
            self.counters["rtn_received"] += 1
            sent = PageSent(number, "RTN", False, self._page_attempts)
            if self._page_attempts > self.config.max_page_retries:
                return _ended(T30Result.RETRYDCN, f"page {number} answered RTN {self._page_attempts} times",
                              events=(sent,))
            self._retrain_before_page = True
            self._step_down()
            self._command(self._send_dcs_tcf)
            return Outcome(State.AWAIT_CFR, events=(sent,), then=Timer.T4)
        if fcf is Fcf.RTP:
            self.counters["rtp_received"] += 1
        sent = PageSent(number, fcf.name, True, self._page_attempts)
        return self._page_done(sent, retrain=fcf is Fcf.RTP)

    def _page_done(self, sent: PageSent, *, retrain: bool = False) -> Outcome:
        """The page is confirmed (or given up with EOR): the next page, or DCN after the last."""
        if sent.confirmed:
            self.pages_confirmed += 1
        new_document = self.page_index in self.document_ends
        self.page_index += 1
        self._page_attempts = 0
        if self.page_index >= len(self.pages):
            if self.pages_confirmed < len(self.pages):
                # A page went with frames missing (EOR answered ERR): not a clean send.
                return _ended(T30Result.RETRYDCN, f"{self.pages_confirmed} of {len(self.pages)} page(s) "
                                                  "confirmed whole", events=(sent,))
            return _ended(T30Result.OK, f"{self.pages_confirmed} page(s) sent", events=(sent,))
        if new_document:
            # T.30 Figure 5-2: after EOM both stations return to phase B; the receiver sends
            # DIS again and we choose the mode for the next document.
            self._resend = None
            self.mode = None
            return Outcome(State.AWAIT_DIS, events=(sent,), then=Timer.T1)
        if retrain:
            # T.30 5.3.6.2.8: after RTP the sender retrains (DCS+TCF) before the next page.
            self._retrain_before_page = True
            self._step_down()
            self._command(self._send_dcs_tcf)
            return Outcome(State.AWAIT_CFR, events=(sent,), then=Timer.T4)
        return self._start_page((sent,))

    # ------------------------------------------------------------------ ECM
    def _fcd(self, number: int, payload: bytes) -> bytes:
        # T.4 A.3.6.1: FCD frames are [address, control 0x03, FCD, frame number, data]; the
        # image octets are already in T.38 order.
        return T30Frame(Fcf.FCD, bytes((number,)), final=False).to_wire() + payload

    def _start_block(self, *, keep_returns: bool = False) -> None:
        self._ppr_count = 0
        if not keep_returns:
            self._phase_b_returns = 0
        frames = self._blocks[self._block_index]
        self._last_burst = list(range(len(frames)))
        self._command(self._send_burst)

    def _send_burst(self) -> None:
        """The frames of ``_last_burst`` on the image modem and three RCP; PPS-x follows when
        they are out (``_page_sent``)."""
        # T4 and CRP repeat only the PPS (T.30 A.4.1), not the frames.
        self._resend = lambda: self._send_frames((T30Frame(Fcf.PPS, self._pps_fif, x_bit=True),))
        modem = self.modem
        frames = self._blocks[self._block_index]
        wires = [self._fcd(n, frames[n]) for n in self._last_burst]
        rcp = T30Frame(Fcf.RCP, final=False).to_wire()
        packets, self._tx_free_at = t38_io.ecm_burst([*wires, rcp, rcp, rcp], self._page_training(),
                                                     modem.data_type, modem.bit_rate, self._line_free())
        self._queue(packets)
        self._deadlines.arm(Timer.PAGE_SENT, self._tx_free_at - t38_io.SILENCE_S)

    def _pps_mcf(self, arrived: Command | None) -> Outcome:
        self._deadlines.cancel(Timer.T5, Timer.RR)
        self._block_index += 1
        if self._block_index < len(self._blocks):
            self._start_block()
            return Outcome(State.AWAIT_PPS_RESPONSE, then=Timer.T4)
        return self._page_done(PageSent(self.page_index + 1, "MCF", True, self._page_attempts))

    def _ppr(self, arrived: Command) -> Outcome:
        self._deadlines.cancel(Timer.T5, Timer.RR)
        self.counters["ppr_received"] += 1
        frames = self._blocks[self._block_index]
        # T.30 A.4.2: resend the frames the map lists that this block has.  A map that lists
        # none of them still gets a burst (its RCPs) and the PPS again, as SpanDSP sends it
        # (TSB-85 OTEN04): the receiver asked for a retransmission, not for a new block.
        wanted = [n for n in frames_in_ppr_map(arrived.frame.fif) if n < len(frames)]
        self._ppr_count += 1
        self._last_burst = wanted
        if self._ppr_count >= PPR_LIMIT:
            assert self.mode is not None
            if self._modem_index + 1 < len(self.mode.modems):
                # T.30 A.4.3 / A.2: continue to correct at the next lower rate.
                self._modem_index += 1
                self._ppr_count = 0
                self.counters["ctc_sent"] += 1
                self._command(self._send_ctc)
                return Outcome(State.AWAIT_CTR, then=Timer.T4)
            # T.30 A.4.3: give the block up: EOR-x, the receiver answers ERR.
            self.counters["eor_sent"] += 1
            self._command(self._send_eor)
            return Outcome(State.AWAIT_ERR, then=Timer.T4)
        self.counters["frames_resent"] += len(wanted)
        self._command(self._send_burst)
        return Outcome(State.AWAIT_PPS_RESPONSE, then=Timer.T4)

    def _send_ctc(self) -> None:
        # T.30 A.4.3 / Table 2: CTC's FIF is two octets whose bits 11-14 name the new modem
        # (the other bits 0, as SpanDSP sends it and TSB-85 OTEN04 checks).
        fif = bytearray(2)
        for bit, on in zip((11, 12, 13, 14), self.modem.dcs_code):
            if on:
                fif[(bit - 1) >> 3] |= 1 << ((bit - 1) & 7)
        self._send_frames((T30Frame(Fcf.CTC, bytes(fif), x_bit=True),))

    def _ctr(self, arrived: Command) -> Outcome:
        self.counters["frames_resent"] += len(self._last_burst)
        self._command(self._send_burst)
        return Outcome(State.AWAIT_PPS_RESPONSE, then=Timer.T4)

    def _send_eor(self) -> None:
        self._send_frames((T30Frame(Fcf.EOR, self._pps_fif[:1], x_bit=True),))

    def _err(self, arrived: Command) -> Outcome:
        last_block = self._block_index + 1 >= len(self._blocks)
        self._log(f"page {self.page_index + 1} block {self._block_index} given up (EOR answered ERR)")
        if not last_block:
            self._block_index += 1
            self._start_block()
            return Outcome(State.AWAIT_PPS_RESPONSE, then=Timer.T4)
        return self._page_done(PageSent(self.page_index + 1, "ERR", False, self._page_attempts))

    def _rnr(self, arrived: Command) -> Outcome:
        # T.30 A.4.4: the receiver is busy: poll with RR; T5 bounds the wait.
        self.counters["rnr_received"] += 1
        if Timer.T5 not in self._deadlines:
            self._deadlines.arm(Timer.T5, self._now + self.config.t5)
        self._deadlines.cancel(Timer.T4)
        self._resend = None
        return Outcome(State.AWAIT_RR_RESPONSE, then=Timer.RR)

    def _rr_due(self, arrived: object) -> Outcome:
        self._send_frames((T30Frame(Fcf.RR, x_bit=True),))
        self._resend = lambda: self._send_frames((T30Frame(Fcf.RR, x_bit=True),))
        self._tries = 1
        return Outcome(then=Timer.T4)

    def _t5_expired(self, arrived: object) -> Outcome:
        return _ended(T30Result.TX_T5EXP, "receiver not ready for longer than T5")

    def _invalid_response(self, arrived: Command) -> Outcome:
        return _ended(T30Result.TX_INVALRSP, f"{arrived.frame.name} in {self.state.value}")

    def _dis_later(self, arrived: Command) -> None:
        self._log("DIS after phase B: our last command was not heard; T4 repeats it")

    def _dis_after_pps(self, arrived: Command) -> Outcome:
        """DIS in answer to our PPS: the receiver did not hear the PPS, gave up waiting for
        it (its T2; SpanDSP waits 0.2 s after the carrier) and went back to phase B, where
        a repeated PPS gets DCN.  Train again in the mode chosen (DCS+TCF), then send the
        block again (T.30 Figure 5-2: DIS takes the exchange back to phase B; found by
        bench/impairment.py: FEC could not rebuild 4 lost IFPs of a PPS)."""
        if self._phase_b_returns >= MAX_COMMAND_TRIES:
            return _ended(T30Result.RETRYDCN, f"DIS in answer to our PPS {self._phase_b_returns} times")
        self._phase_b_returns += 1
        self.counters["commands_repeated"] += 1
        self._log("DIS in answer to PPS: the receiver is back in phase B; DCS+TCF, then the block again")
        self._retrain_before_page = True
        self._resume_block = True
        self._command(self._send_dcs_tcf)
        return Outcome(State.AWAIT_CFR, then=Timer.T4)


# ---------------------------------------------------------------------- the table
S = State
_H = T30Transmitter


def _row(state: State, entries: dict[Input, tuple[Handler, Next]]) -> dict[Input, tuple[Handler, Next]]:
    """Every live state: DCN ends the call, CRP has our last command repeated."""
    common: dict[Input, tuple[Handler, Next]] = {
        Fcf.DCN: (_H._dcn, S.ENDED),
        Fcf.CRP: (_H._crp, frozenset({state, S.ENDED})),
    }
    return {**common, **entries}


_PAGE_NEXT = frozenset({S.AWAIT_PPS_RESPONSE, S.AWAIT_PAGE_RESPONSE, S.AWAIT_CFR, S.AWAIT_DIS, S.ENDED})

#: The engine: state -> {input -> (handler, next state or the states the handler picks from)}.
TRANSITIONS: dict[State, dict[Input, tuple[Handler, Next]]] = {
    S.IDLE: {
        Signal.CALL: (_H._call, S.AWAIT_DIS),
    },
    S.AWAIT_DIS: _row(S.AWAIT_DIS, {
        Fcf.DIS: (_H._dis, frozenset({S.AWAIT_CFR, S.AWAIT_DIS, S.ENDED})),
        Timer.CNG: (_H._cng_again, S.AWAIT_DIS),
        Timer.T1: (_H._t1_expired, S.ENDED),
    }),
    S.AWAIT_CFR: _row(S.AWAIT_CFR, {
        Fcf.CFR: (_H._cfr, _PAGE_NEXT),
        Fcf.FTT: (_H._ftt, frozenset({S.AWAIT_CFR, S.ENDED})),
        Fcf.DIS: (_H._dis, frozenset({S.AWAIT_CFR, S.ENDED})),
        Timer.T4: (_H._t4_expired, frozenset({S.AWAIT_CFR, S.ENDED})),
    }),
    S.AWAIT_PAGE_RESPONSE: _row(S.AWAIT_PAGE_RESPONSE, {
        Fcf.MCF: (_H._page_response, _PAGE_NEXT),
        Fcf.RTP: (_H._page_response, _PAGE_NEXT),
        Fcf.RTN: (_H._page_response, _PAGE_NEXT),
        Fcf.PPR: (_H._invalid_response, S.ENDED),
        Signal.UNKNOWN_RESPONSE: (_H._invalid_response, S.ENDED),
        Fcf.DIS: (_H._dis_later, S.AWAIT_PAGE_RESPONSE),
        Timer.PAGE_SENT: (_H._page_sent, S.AWAIT_PAGE_RESPONSE),
        Timer.T4: (_H._t4_expired, frozenset({S.AWAIT_PAGE_RESPONSE, S.ENDED})),
    }),
    S.AWAIT_PPS_RESPONSE: _row(S.AWAIT_PPS_RESPONSE, {
        Fcf.MCF: (_H._pps_mcf, _PAGE_NEXT),
        Fcf.PPR: (_H._ppr, frozenset({S.AWAIT_PPS_RESPONSE, S.AWAIT_CTR, S.AWAIT_ERR, *_PAGE_NEXT})),
        Fcf.RNR: (_H._rnr, S.AWAIT_RR_RESPONSE),
        Signal.UNKNOWN_RESPONSE: (_H._invalid_response, S.ENDED),
        Fcf.DIS: (_H._dis_after_pps, frozenset({S.AWAIT_CFR, S.ENDED})),
        Timer.PAGE_SENT: (_H._page_sent, S.AWAIT_PPS_RESPONSE),
        Timer.T4: (_H._t4_expired, frozenset({S.AWAIT_PPS_RESPONSE, S.ENDED})),
    }),
    S.AWAIT_RR_RESPONSE: _row(S.AWAIT_RR_RESPONSE, {
        Fcf.MCF: (_H._pps_mcf, _PAGE_NEXT),
        Fcf.PPR: (_H._ppr, frozenset({S.AWAIT_PPS_RESPONSE, S.AWAIT_CTR, S.AWAIT_ERR, *_PAGE_NEXT})),
        Fcf.RNR: (_H._rnr, S.AWAIT_RR_RESPONSE),
        Fcf.ERR: (_H._err, _PAGE_NEXT),
        Timer.RR: (_H._rr_due, S.AWAIT_RR_RESPONSE),
        Timer.T4: (_H._t4_expired, frozenset({S.AWAIT_RR_RESPONSE, S.ENDED})),
        Timer.T5: (_H._t5_expired, S.ENDED),
    }),
    S.AWAIT_CTR: _row(S.AWAIT_CTR, {
        Fcf.CTR: (_H._ctr, S.AWAIT_PPS_RESPONSE),
        Timer.T4: (_H._t4_expired, frozenset({S.AWAIT_CTR, S.ENDED})),
    }),
    S.AWAIT_ERR: _row(S.AWAIT_ERR, {
        Fcf.ERR: (_H._err, _PAGE_NEXT),
        Fcf.RNR: (_H._rnr, S.AWAIT_RR_RESPONSE),
        Timer.T4: (_H._t4_expired, frozenset({S.AWAIT_ERR, S.ENDED})),
    }),
    S.ENDED: {},
}

T30Transmitter._TRANSITIONS = TRANSITIONS
