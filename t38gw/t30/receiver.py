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
  rate with a new DCS; a DCS with no TCF after it gets FTT too (TSB-85 MRGN13).  A DCS
  that Table 2 cannot read is answered as a garbled command; one asking for a mode our
  DIS did not offer ends the call (INCOMPATIBLE, with DCN).  Under ``localTCF`` (T.38 clause 6.2.1) no TCF crosses the IP
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

The machine is a table
======================
``TRANSITIONS[state][input] -> (handler, next)`` is the whole machine, as in h2 and
``sip/transaction.py``.  An input is a V.21 command (an ``Fcf``; ``Signal.UNKNOWN_COMMAND``
for an FCF T.30 does not define), a ``Timer`` that ran out, or a ``Signal`` from the
T.38 front end (a training carrier began, image data came, the image carrier ended, an
ECM frame came, a garbled command, a command that cut a fast carrier short).  A handler
reads the input, updates the engine's data (counters, the page being decoded, the DCS)
and returns an ``Outcome``: the frames to answer with, the events to report, and the
timer to run once the answer is out.  It never sets the state: ``next`` in the table
is the state the transition leads to, and where the table names several (a post-page
command can lead to the next page, a new phase B or the end), the handler's outcome
names one of them, which the engine checks.  Only ``_apply`` assigns ``self.state``.

A command missing from a state's row is logged as a ``ProtocolEventLogged`` and otherwise
ignored, as T.30 5.4.1 asks of a receiver that cannot act on a signal; a timer or
front-end signal missing from the row does nothing (the timer belongs to a state we
left).  A V.21 command that arrives while a fast carrier (TCF, page, ECM block) has not
ended first takes that state's ``Signal.CARRIER_CUT`` transition (the carrier's end was
lost), then is looked up in the row of the state it led to.  Which result a DCN or a T2
expiry gives in each state, which response a page's quality earns and where each
post-page exchange leads are tables too (``DCN_RESULTS``, ``T2_RESULTS``,
``QUALITY_RESPONSE``, ``AFTER_PAGE``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import imaging
from imaging.nonecm import NonEcmPageDecoder
from imaging.wholepage import LibtiffAttempt
from udptl.ifp import IfpPacket, T30Data, T30Indicator, Unknown

from t38gw.t30 import t38_io
from t38gw.t30.capabilities import dcs_refusal
from t38gw.t30.dcs import Compression, DcsParameters, ReceiveCapabilities, parse_dcs
from t38gw.t30.ecm import EcmBlock
from t38gw.t30.machine import TableMachine
from t38gw.t30.errors import LocalProtocolError, RemoteProtocolError
from t38gw.t30.events import (
    CallEnded,
    DocumentEnded,
    Event,
    PageQuality,
    PageReceived,
    PageRejected,
    PhaseBCompleted,
    T30Result,
)
from t38gw.t30.frames import POST_PAGE_COMMANDS, PPS_NULL, Fcf, T30Frame, decode_ident, encode_ident
from t38gw.t30.t38_io import OutgoingIfp
from t38gw.t30.timers import (
    CARRIER_TIMEOUT,
    GARBLED_DIS_WAIT,
    LOCAL_TCF_WAIT,
    T1,
    T2,
    T4,
    T5,
    TCF_END_SILENCE,
    TCF_MIN_ZERO_RUN,
    TCF_MISSING_WAIT,
    Deadlines,
    Timer,
)

__all__ = [
    "CARRIER_TIMEOUT", "MAX_PAGE_ROWS", "T1", "T2", "T4", "T5", "TRANSITIONS", "EcmPageDecoder", "Outcome",
    "ReceiverConfig", "Signal", "State", "T30Receiver", "imaging_decoder", "judge_quality", "non_ecm_decoder",
]

# Copy quality of a non-ECM page (T.30 leaves the criteria to the receiver, 5.3.6.1.7
# note).  A page whose rows needed repair answers:
#   MCF - under 2 % of rows bad and no run of more than 3 bad rows (print-worthy);
#   RTP - under 5 % bad and no run over 15 rows (kept, but ask the sender to retrain);
#   RTN - anything worse, or a page with no rows at all (sender may resend it).
QUALITY_GOOD_BAD_ROW_RATIO = 0.02
QUALITY_GOOD_LONGEST_RUN = 3
QUALITY_POOR_BAD_ROW_RATIO = 0.05
QUALITY_POOR_LONGEST_RUN = 15

#: A page longer than this is cut there (unlimited length is allowed, endless is not):
#: 32768 rows is 2.1 m at 15.4 lines/mm.
MAX_PAGE_ROWS = 32768
#: A peer that keeps FTT-ing gets at most this many TCF attempts before we hang up.
MAX_TCF_ATTEMPTS = 8
#: DIS sent this many times without an answer: DCN (T.30 Figure 5-2's retry count of 3;
#: TSB-85 MRGX01 wants three DIS, then DCN).
MAX_DIS_TRIES = 3
_ZERO_RUN = re.compile(b"\x00+")
_TRAINING = frozenset(i for i in T30Indicator if i.name.endswith("TRAINING"))


class State(enum.Enum):
    """The engine's states (see TRANSITIONS).  Hashed by identity: the table is read per IFP."""

    __hash__ = object.__hash__  # Enum's own hashes the name in Python
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


class Signal(enum.Enum):
    """Inputs from the call and the T.38 front end that are not V.21 commands or timers."""

    __hash__ = object.__hash__

    ANSWER = "answer"  # start(): the call was answered
    TRAINING = "training"  # a fast modem's training indicator
    NO_SIGNAL = "no_signal"  # the no-signal indicator
    IMAGE_DATA = "image_data"  # t4-non-ecm-data (a page, or TCF)
    IMAGE_END = "image_end"  # t4-non-ecm-sig-end
    ECM_FRAME = "ecm_frame"  # an HDLC frame on the image modem (FCD/RCP)
    ECM_END = "ecm_end"  # hdlc-sig-end on the image modem
    GARBLED = "garbled"  # a V.21 burst ended with a frame we could not read
    CARRIER_CUT = "carrier_cut"  # a V.21 command came before the fast carrier ended
    UNKNOWN_COMMAND = "unknown_command"  # a final V.21 frame whose FCF T.30 does not define


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


class DecodedPage(Protocol):
    """What a page decoder's ``finish`` gives (``imaging.DecodedPage`` and test doubles)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def bitmap(self) -> bytes: ...
    @property
    def bad_rows(self) -> int: ...
    @property
    def longest_bad_run(self) -> int: ...


class PageDecoder(Protocol):
    """A streaming page decoder: ``imaging.StreamingDecoder`` or a test's stand-in."""

    @property
    def page_ended(self) -> bool: ...
    @property
    def rows(self) -> int: ...
    def feed(self, data: bytes) -> None: ...
    def finish(self) -> DecodedPage: ...


PageDecoderFactory = Callable[[Compression, int], PageDecoder]


def imaging_decoder(compression: Compression, width: int) -> imaging.StreamingDecoder:
    """The imaging package's streaming decoder for T.38 data.

    T.38 carries both non-ECM image data and the HDLC octets of FCD frames with the
    first transmitted bit as the MSB of each octet (see ``frames``), which is T.4's
    transmission order read MSB-first.
    """
    return imaging.StreamingDecoder(_IMAGING_CODING[compression], width, bit_order=imaging.BitOrder.MSB_FIRST)


_IMAGING_CODING = {Compression.MH: imaging.Coding.MH, Compression.MR: imaging.Coding.MR,
                   Compression.MMR: imaging.Coding.MMR}


def non_ecm_decoder(compression: Compression, width: int) -> PageDecoder:
    """The default non-ECM page decoder: the data kept, the page decoded at its end.

    ``imaging.nonecm.NonEcmPageDecoder`` answers ``page_ended`` and ``rows`` as the
    streaming decoder does after every piece, and ``finish`` with its page (libtiff where
    proven equal, else the streaming decoder over the pieces as they came).  MMR never
    comes without ECM (T.30 Table 2); should it, the streaming decoder takes it.
    """
    if compression is Compression.MMR:
        return imaging_decoder(compression, width)
    coding = imaging.Coding.MR if compression is Compression.MR else imaging.Coding.MH
    return NonEcmPageDecoder(coding, width, bit_order=imaging.BitOrder.MSB_FIRST, max_rows=MAX_PAGE_ROWS)


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
        #: An attempt run before the page's end (``T30Receiver.page_decode_ahead``) and its result.
        self.ahead: tuple[LibtiffAttempt, imaging.DecodedPage | None] | None = None

    def feed(self, data: bytes) -> None:
        self.blocks.append(bytes(data))

    def attempt(self, more: bytes = b"") -> LibtiffAttempt:
        """The libtiff decode of the blocks kept (and ``more``, a block not taken yet)."""
        coding = _IMAGING_CODING[self.compression]
        return LibtiffAttempt(b"".join(self.blocks) + more, coding, self.width, imaging.BitOrder.MSB_FIRST,
                              self.max_rows)

    def finish(self) -> imaging.DecodedPage:
        if self.whole:
            page = self.attempt().result(self.ahead)
            if page is not None:
                return page
        decoder = imaging_decoder(self.compression, self.width)
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


# ---------------------------------------------------------------------- result tables
#: T.30 5.3.6.2.8: the response a non-ECM page earns from its quality.
QUALITY_RESPONSE: dict[PageQuality, Fcf] = {
    PageQuality.GOOD: Fcf.MCF, PageQuality.POOR: Fcf.RTP, PageQuality.BAD: Fcf.RTN,
}

#: Where a post-page exchange leads: (command, our response) -> state.  T.30 5.3.6.2.8:
#: after RTP/RTN the sender retrains with a new DCS; after ERR (T.30 A.4: EOR answered)
#: it goes on with the next page, and an EOP answered ERR leaves the page incomplete
#: (a DCN then is RX_DCNDATA).  T.30 Figure 5-2: after any response to EOM both
#: stations return to phase B.
AFTER_PAGE: dict[tuple[Fcf, Fcf], State] = {
    (Fcf.MPS, Fcf.MCF): State.AWAIT_PAGE, (Fcf.MPS, Fcf.ERR): State.AWAIT_PAGE,
    (Fcf.MPS, Fcf.RTP): State.AWAIT_DCS, (Fcf.MPS, Fcf.RTN): State.AWAIT_DCS,
    (Fcf.EOP, Fcf.MCF): State.AWAIT_DCN, (Fcf.EOP, Fcf.RTP): State.AWAIT_DCN,
    (Fcf.EOP, Fcf.ERR): State.AWAIT_PAGE, (Fcf.EOP, Fcf.RTN): State.AWAIT_DCS,
    (Fcf.EOM, Fcf.MCF): State.AWAIT_DCS, (Fcf.EOM, Fcf.RTP): State.AWAIT_DCS,
    (Fcf.EOM, Fcf.ERR): State.AWAIT_DCS, (Fcf.EOM, Fcf.RTN): State.AWAIT_DCS,
}

#: The result of a DCN by state (``_dcn`` first tells apart the AWAIT_DCS cases after our
#: RTN or a failed TCF).  Reasons are formatted with ``state``, ``pages`` and ``tcf``.
DCN_RESULTS: dict[State, tuple[T30Result, str]] = {
    State.AWAIT_DCN: (T30Result.OK, "DCN after EOP"),
    State.ANSWERING: (T30Result.RX_DCNWHY, "DCN in phase B ({state})"),
    State.AWAIT_DCS: (T30Result.RX_DCNWHY, "DCN in phase B ({state})"),
    State.AWAIT_TCF: (T30Result.RX_DCNWHY, "DCN in phase B ({state})"),
    # As SpanDSP reports it (t30.c, DCN in its F_DOC states; TSB-85 OREN01).
    State.AWAIT_PAGE: (T30Result.RX_DCNDATA, "DCN waiting for image data after {pages} page(s)"),
    State.RECEIVER_NOT_READY: (T30Result.RX_DCNRRD, "DCN after RNR"),
    State.AWAIT_POST_PAGE: (T30Result.RX_DCNFAX, "DCN in {state}"),
}
DCN_AFTER_RTN = (T30Result.RX_DCNNORTN, "sender hung up after our RTN")
DCN_AFTER_FTT = (T30Result.CANNOT_TRAIN, "sender hung up after {tcf} failed TCF")

#: The result of T2 running out by state (AWAIT_DCS after EOM and AWAIT_DCN have their
#: own transitions); AWAIT_PAGE says whether a page came before.
T2_RESULTS: dict[State, T30Result] = {
    State.AWAIT_DCS: T30Result.RX_T2EXP,
    State.AWAIT_TCF: T30Result.RX_T2EXP,
    State.TCF: T30Result.RX_T2EXP,
    State.AWAIT_PAGE: T30Result.RX_T2EXPFAX,
    State.AWAIT_POST_PAGE: T30Result.RX_T2EXPD,
    State.NON_ECM_PAGE: T30Result.RX_NOCARRIER,
    State.ECM_BLOCK: T30Result.RX_NOCARRIER,
}
T2_RESULTS_AFTER_A_PAGE: dict[State, T30Result] = {**T2_RESULTS, State.AWAIT_PAGE: T30Result.RX_T2EXPMPS}


# ---------------------------------------------------------------------- transitions
class Command(NamedTuple):
    """A V.21 command: its final frame and the optional frames sent before it."""

    frame: T30Frame
    optional: tuple[T30Frame, ...] = ()


@dataclass(frozen=True, slots=True)
class Ending:
    result: T30Result
    reason: str
    send_dcn: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler decided.

    ``next_state``: where the table offers several next states, the one taken (None:
    the table's only one, or stay where the table allows it).  ``frames`` go out once
    the line is free (or at ``at``); ``remember`` makes them "our last response", sent
    again when the sender repeats its command or asks with CRP/RR.  ``then`` is armed
    when they are out (or from now).  ``events`` are reported; ``end`` ends the call
    (``next_state`` ENDED) after the frames, with DCN unless told otherwise.
    """

    next_state: State | None = None
    frames: tuple[T30Frame, ...] = ()
    remember: bool = True
    then: Timer | None = None
    events: tuple[Event, ...] = ()
    end: Ending | None = None
    at: float | None = None


Input = Fcf | Timer | Signal
#: A handler reads what came: a ``Command`` for an Fcf, the front-end event for a Signal
#: (``ImageDataArrived``, ``HdlcFrameArrived``...; nothing is copied per IFP), None for a
#: Timer.  The property test in tests/t38gw/t30/test_transitions.py feeds every pair.
Handler = Callable[["T30Receiver", Any], "Outcome | None"]
Next = State | frozenset[State]

_STAY = Outcome()
_FCF_OF: dict[int, Fcf] = {int(f): f for f in Fcf}


def _respond(fcf: Fcf, fif: bytes = b"", next_state: State | None = None) -> Outcome:
    """A response we remember, with T2 (waiting for the next command) after it."""
    return Outcome(next_state, (T30Frame(fcf, fif),), then=Timer.T2)


def _ended(result: T30Result, reason: str, *, send_dcn: bool = True, frames: tuple[T30Frame, ...] = (),
           events: tuple[Event, ...] = ()) -> Outcome:
    return Outcome(State.ENDED, frames, events=events, end=Ending(result, reason, send_dcn))


class T30Receiver(TableMachine):
    """The called-station T.30 engine.  See the module docstring.

    Drive it with ``start(now)``, then ``ifp_received``/``ifps_lost``/``handle_timer``;
    after each call send ``ifps_to_send(now)`` and sleep until ``next_deadline()``.
    Every method returns the events it produced.
    """

    _ENDED = State.ENDED
    state: State

    def __init__(self, config: ReceiverConfig | None = None, *, decoder_factory: PageDecoderFactory | None = None) -> None:
        self.config = config or ReceiverConfig()
        self._decoder_factory: PageDecoderFactory = decoder_factory or non_ecm_decoder
        self._ecm_decoder_factory: PageDecoderFactory = decoder_factory or EcmPageDecoder
        self._csi = encode_ident(self.config.local_ident) if self.config.local_ident else None
        self.state = State.IDLE
        self._row = TRANSITIONS[State.IDLE]  # TRANSITIONS[self.state], kept by _apply
        self._demux = t38_io.IfpDemultiplexer()
        self._outgoing: list[OutgoingIfp] = []
        self._tx_free_at = 0.0
        self._deadlines = Deadlines()
        self._durations = {
            Timer.T1: self.config.t1, Timer.T2: self.config.t2, Timer.T4: self.config.t4, Timer.T5: self.config.t5,
            Timer.CARRIER: self.config.carrier_timeout, Timer.LOCAL_TCF: LOCAL_TCF_WAIT,
            Timer.TCF_END: TCF_END_SILENCE, Timer.TCF_MISSING: TCF_MISSING_WAIT,
        }
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
        self._decoder: PageDecoder | None = None
        self._page_rows_seen = False
        # Decoding a page ahead of its end (page_decode_ahead): due once the page's data
        # looks whole (RCP, or RTC), and the result handed back for the page's decoder.
        self._ahead_due = False
        self._ahead: tuple[LibtiffAttempt, imaging.DecodedPage | None] | None = None
        self._ahead_handed: LibtiffAttempt | None = None
        self._page_loss_gaps = 0
        self._loss_before_carrier = self._lost_before_carrier = 0  # non-ECM: gaps before the page's training
        self._fast_carrier_seen = False
        self._stray_data_logged = False
        self._block: EcmBlock | None = None
        self._last_command: tuple[object, ...] | None = None
        self._last_response: tuple[T30Frame, ...] = ()
        self._after_ready: Callable[[], Outcome] | None = None
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
        self._input(Signal.ANSWER)
        return self._take_events()

    def ifp_received(self, packet: IfpPacket, now: float) -> list[Event]:
        """Feed one IFP packet (in sequence order, after UDPTL recovery)."""
        self._now = now
        if self.state is State.ENDED:
            return []
        if self.state is State.IDLE:
            raise LocalProtocolError("ifp_received() before start()")
        for fe_event in self._demux.packet_received(packet):
            if self._front_end(fe_event) is State.ENDED:
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
        elif non_ecm and self.state is State.AWAIT_PAGE and not self._fast_carrier_seen:
            # Lost before the page's training was seen: the tail of what came before (TCF,
            # an indicator) - or the training indicator and the page's first image IFPs
            # together, after which the decoder syncs on a later EOL and a page without its
            # top rows would look whole (issue 14, bench/impairment.py).  Which one shows
            # when the page's data starts: held until then (_page_data_starts).
            self._loss_before_carrier += 1
            self._lost_before_carrier += max(count, 1)
        elif non_ecm and self.state in (State.NON_ECM_PAGE, State.AWAIT_PAGE):
            # Non-ECM has no retransmission: rows in the lost IFPs are gone without a trace
            # the decoder could count, so the page is answered RTN (see _page_complete).
            if not self._page_loss_gaps:
                self._rows_before_loss = self._decoder.rows if self._decoder is not None else 0
            if isinstance(self._decoder, NonEcmPageDecoder):
                self._decoder.note_loss()  # the page goes through the streaming decoder
            self._page_loss_gaps += 1
            self._page_lost_ifps += max(count, 1)
        return self._take_events()

    def handle_timer(self, now: float) -> list[Event]:
        """Fire the timers due at ``now``; one that was re-armed or cleared is a no-op."""
        self._now = now
        for timer, deadline in self._deadlines.in_order():
            if self.state is State.ENDED:
                break
            if self._deadlines.fire(timer, deadline, now):
                self._input(timer)
        return self._take_events()

    def hang_up(self, now: float) -> list[Event]:
        """The call went away underneath us (BYE): end with the pages confirmed so far."""
        self._now = now
        if self.state is State.ENDED:
            return []
        if self.state is State.AWAIT_DCN:
            # EOP was answered MCF: every page is confirmed and the sender is done, many
            # hang up without DCN (T.30 5.3.6.1.7 has DCN follow, but the document is whole).
            outcome = _ended(T30Result.OK, "sender hung up after our MCF to EOP (no DCN); document complete",
                             send_dcn=False)
        else:
            outcome = _ended(T30Result.CALL_DROPPED, f"call dropped in state {self.state.value}", send_dcn=False)
        self._apply(outcome, State.ENDED)
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

    def page_decode_ahead(self) -> LibtiffAttempt | None:
        """The page's libtiff decode, to run now on another thread, or None.

        The page's data is whole as soon as its image carrier ends - RTC (non-ECM), or RCP
        after a block with no frame missing (T.4 A.3.6.2) - but the decode that decides our
        answer runs when the post-page command arrives, ~1 s later (its V.21 preamble
        alone is 1 s, T.30 5.3.1).  Decoded before, the answer costs the event loop almost
        nothing.  Handed out once per page end; give the result to ``page_decoded_ahead``.
        The page's decoder uses it only if it would make that very attempt (same data)."""
        if not self._ahead_due:
            return None
        self._ahead_due = False
        dcs = self.dcs
        decoder = self._decoder
        if dcs is None:
            return None
        if not dcs.ecm:
            return decoder.attempt() if isinstance(decoder, NonEcmPageDecoder) else None
        block = self._block
        if block is None or not block.frames or (decoder is not None and not isinstance(decoder, EcmPageDecoder)):
            return None
        count = max(block.frames) + 1
        frames = [block.frames.get(n) for n in range(count)]
        if any(frame is None or (n < count - 1 and len(frame) != block.frame_size) for n, frame in enumerate(frames)):
            return None  # frames missing: PPR comes first
        if decoder is None:
            decoder = EcmPageDecoder(dcs.compression, dcs.width_px)
            decoder.max_rows = self.config.max_page_rows
        elif not decoder.whole:
            return None
        attempt = decoder.attempt(b"".join(frame for frame in frames if frame is not None))
        if attempt == self._ahead_handed:
            return None  # another RCP of the same block
        self._ahead_handed = attempt
        return attempt

    def page_decoded_ahead(self, attempt: LibtiffAttempt, page: imaging.DecodedPage | None) -> None:
        """The result of ``page_decode_ahead``'s attempt (see there)."""
        self._ahead = (attempt, page)

    def next_deadline(self) -> float | None:
        """When to call ``handle_timer`` or ``ifps_to_send`` next (None: nothing pending)."""
        deadline = self._deadlines.next()
        if self._outgoing and (deadline is None or self._outgoing[0].at < deadline):
            return self._outgoing[0].at
        return deadline

    @property
    def finished(self) -> bool:
        """The call ended and everything to send has been taken."""
        return self.state is State.ENDED and not self._outgoing

    # ------------------------------------------------------------------ the machine
    def _apply(self, outcome: Outcome | None, declared: Next) -> None:
        """Carry out a handler's outcome; the only place the state changes."""
        if outcome is None:
            self._move_without_outcome(declared)
            return
        chosen = self._chosen_state(outcome, declared)
        if outcome.frames:
            self._send_frames(outcome.frames, remember=outcome.remember, start=outcome.at)
        self._events.extend(outcome.events)
        if outcome.end is not None:
            end = outcome.end
            if end.send_dcn:
                self._send_frames((T30Frame(Fcf.DCN),))
            self._discard_page()
            self._deadlines.clear()
            self.state = State.ENDED
            self._row = TRANSITIONS[State.ENDED]
            self._events.append(CallEnded(end.result, self.pages_confirmed, end.reason))
            return
        self.state = chosen
        self._row = TRANSITIONS[chosen]
        if outcome.then is not None:
            self._deadlines.arm(outcome.then, max(self._now, self._tx_free_at) + self._durations[outcome.then])

    # ------------------------------------------------------------------ output helpers
    def _queue(self, packets: list[OutgoingIfp]) -> None:
        self._outgoing.extend(packets)
        self._outgoing.sort(key=lambda p: p.at)

    def _send_frames(self, frames: tuple[T30Frame, ...], *, remember: bool = True, start: float | None = None) -> float:
        """Queue a V.21 burst after the line is free; returns when it ends."""
        at = max(self._now + t38_io.SILENCE_S, self._tx_free_at) if start is None else start
        packets, end = t38_io.hdlc_burst(list(frames), at)
        self._queue(packets)
        self._tx_free_at = end
        if remember:
            self._last_response = frames
        return end

    def _dis(self, next_state: State | None = None, at: float | None = None) -> Outcome:
        """CSI+DIS, with T4 after it (T.30 5.3.6.1: DIS repeats until answered)."""
        frames = []
        if self._csi is not None:
            frames.append(T30Frame(Fcf.CSI, self._csi, final=False))
        frames.append(T30Frame(Fcf.DIS, self.config.capabilities.dis_fif()))
        self._dis_sent += 1
        self._garbled_while_answering = False
        # Not remembered as "the last response": after EOM a repeated EOM must get its
        # MCF again, not the DIS that followed it.
        return Outcome(next_state, tuple(frames), remember=False, then=Timer.T4, at=at)

    def _discard_page(self) -> None:
        self._decoder = None
        self._ahead, self._ahead_due, self._ahead_handed = None, False, None
        self._page_rows_seen = False
        self._page_loss_gaps = 0
        self._page_data_ifps = self._page_lost_ifps = 0
        self._loss_before_carrier = self._lost_before_carrier = 0
        self._fast_carrier_seen = False
        self._ecm_blocks_in_page = 0
        self._err_block_pending = False
        self._page_has_err_block = False

    # ------------------------------------------------------------------ front end
    def _front_end(self, ev: t38_io.FrontEndEvent) -> State:
        """Feed one front-end happening to the machine; returns the state it left us in."""
        if isinstance(ev, t38_io.ImageDataArrived):  # the most frequent: a non-ECM page
            self._input(Signal.IMAGE_DATA, ev)
        elif isinstance(ev, t38_io.HdlcFrameArrived):
            if ev.data_type is T30Data.V21:
                self._control_frame(ev)
            else:
                self._input(Signal.ECM_FRAME, ev)
        elif isinstance(ev, t38_io.HdlcSignalEnded):
            if ev.data_type is T30Data.V21:
                self._control_burst_ended()
            else:
                self._input(Signal.ECM_END)
        elif isinstance(ev, t38_io.ImageSignalEnded):
            self._stray_data_logged = False
            self._input(Signal.IMAGE_END)
        else:
            self._signal_started(ev.indicator)
        return self.state

    def _signal_started(self, indicator: T30Indicator | Unknown) -> None:
        fast = indicator in _TRAINING
        if fast:
            self._input(Signal.TRAINING)
        elif indicator is T30Indicator.NO_SIGNAL:
            self._input(Signal.NO_SIGNAL)
            return
        if indicator is T30Indicator.V21_PREAMBLE or fast:
            # T.30 5.4.1: T2/T4 are reset on detecting flags; the frame or data that follows
            # re-arms them.  A peer that starts a carrier and never finishes is caught by
            # the carrier timeout.
            for timer in (Timer.T2, Timer.T4):
                self._deadlines.extend(timer, self._now + self.config.carrier_timeout)

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
        # The end of a fast carrier (TCF, page, ECM block) was lost: the command ends it.
        self._input(Signal.CARRIER_CUT)
        arrived = Command(frame, tuple(optional))
        if not self._input(_FCF_OF.get(frame.fcf, Signal.UNKNOWN_COMMAND), arrived):
            self.counters["unexpected"] += 1
            self._log(f"unexpected {frame.name} in {self.state.value}")

    def _control_burst_ended(self) -> None:
        if self._pending:
            self._log(f"{len(self._pending)} frame(s) without a final frame")
            self._pending = []
            self._burst_had_bad_frame = True
        if self._burst_had_bad_frame:
            self._burst_had_bad_frame = False
            # Only ANSWERING answers it; elsewhere a garbled command gets no answer: CRP is
            # optional (T.30 5.3.6.1.8) and TSB-85 MRGN17 requires silence; the sender
            # repeats the command after T4.
            self._input(Signal.GARBLED)

    # ------------------------------------------------------------------ handlers
    # Each takes the input and returns an Outcome (None: the table's next state, nothing
    # sent).  See TRANSITIONS for where each runs.

    # ----- answering and carriers
    def _answer(self, arrived: object) -> Outcome:
        now = self._now
        at = now
        if self.config.send_ced:
            self._queue([t38_io.indicator(now, T30Indicator.CED)])
            at = now + t38_io.CED_S
            self._queue([t38_io.indicator(at, T30Indicator.NO_SIGNAL)])
            at += t38_io.SILENCE_S
        self._tx_free_at = at
        self._deadlines.arm(Timer.T1, now + self.config.t1)
        return self._dis(at=at)

    def _garbled(self, arrived: object) -> None:
        # T.30 Figure 5-2: the called terminal answers a command it could not read by
        # sending DIS again (TSB-85 MRGN11) - once a TCF that may follow the garbled DCS
        # is over (see _dis_after_garbled), or shortly.
        self._garbled_while_answering = True
        self._deadlines.arm(Timer.T4, self._now + GARBLED_DIS_WAIT)

    def _dis_after_garbled(self, arrived: object) -> Outcome | None:
        return self._dis() if self._garbled_while_answering else None

    def _carrier_cut_in_tcf(self, arrived: object) -> Outcome:
        # The end of the TCF was lost and the sender, hearing nothing, already repeats
        # its command: answering the old TCF now would collide with it.
        self._deadlines.cancel(Timer.TCF_END)
        self._log("TCF end lost; the sender moved on")
        return Outcome(then=Timer.T2)

    def _carrier_ended(self, arrived: object) -> Outcome:
        self._deadlines.cancel(Timer.CARRIER)
        return Outcome(then=Timer.T2)

    def _ecm_carrier_ended(self, arrived: object) -> Outcome:
        return Outcome(then=Timer.T2)

    def _carrier_stalled(self, arrived: object) -> Outcome:
        self._log("image carrier stalled; page data ended")
        return Outcome(then=Timer.T2)

    def _training_started(self, arrived: object) -> None:
        self._deadlines.cancel(Timer.LOCAL_TCF, Timer.TCF_MISSING)

    def _page_carrier_started(self, arrived: object) -> None:
        self._fast_carrier_seen = True
        self._loss_before_carrier = self._lost_before_carrier = 0  # lost before the page began

    # ----- phase B
    def _dcs(self, arrived: Command) -> Outcome | None:
        try:
            dcs = parse_dcs(arrived.frame.fif)
        except RemoteProtocolError as exc:
            # A DCS that T.30 Table 2 cannot read (too short, a reserved modem code or
            # width) is a command we could not read, answered as a garbled one: while we
            # answer, DIS again once its TCF is over (T.30 Figure 5-2, TSB-85 MRGN11; after
            # MAX_DIS_TRIES, DCN), elsewhere silence, and the sender repeats it or gives up
            # (TSB-85 MRGN17).  A DCS that reads well but asks for a mode our DIS did not
            # offer is refused below (INCOMPATIBLE, as SpanDSP does).
            self.counters["bad_frames"] += 1
            self._log(f"bad DCS: {exc}")
            if self.state is State.ANSWERING:
                self._garbled(None)
            return None
        refusal = dcs_refusal(dcs, self.config.capabilities)
        if refusal:
            return _ended(T30Result.INCOMPATIBLE, refusal)
        for extra in arrived.optional:
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
        self._deadlines.cancel(Timer.T1, Timer.T4)
        self._dis_sent = 0
        self._dis_after_t2 = False
        self._garbled_while_answering = False
        self._last_command = None
        self._tcf_zero_run = self._tcf_longest = 0
        if self.config.transferred_tcf:
            self._deadlines.arm(Timer.TCF_MISSING, self._now + TCF_MISSING_WAIT)
        else:
            # T.38 localTCF: TCF is checked between the fax and its gateway, so nothing
            # is judged here; but a peer may still send a training burst, and CFR must not
            # cross it (SpanDSP's terminal calls that "unexpected CFR").  Answer when the
            # burst is over, or when none has started after LOCAL_TCF_WAIT.
            self._deadlines.arm(Timer.LOCAL_TCF, self._now + LOCAL_TCF_WAIT)
        return Outcome(State.AWAIT_TCF, then=Timer.T2)

    def _tcf_data(self, arrived: t38_io.ImageDataArrived) -> None:
        self._deadlines.cancel(Timer.TCF_MISSING)
        self._deadlines.arm(Timer.T2, self._now + self.config.carrier_timeout)
        # TCF lasts 1.5 s and the sender waits only T4 for our answer: if its end was
        # lost, judge it once the data has stopped for TCF_END_SILENCE.
        self._deadlines.arm(Timer.TCF_END, self._now + TCF_END_SILENCE)
        # TCF is 1.5 s of zeros (T.30 5.3.6.2.3 / 5.4.2.1).  Judge it as SpanDSP does: the
        # longest run of zero octets must last at least one second at the DCS rate, which
        # tolerates the burst of ones some modems send first.
        data = arrived.data
        if not data.strip(b"\x00"):
            self._tcf_zero_run += len(data)
        else:
            leading = len(data) - len(data.lstrip(b"\x00"))
            inner = max((len(run) for run in _ZERO_RUN.findall(data)), default=0)
            self._tcf_longest = max(self._tcf_longest, self._tcf_zero_run + leading, inner)
            self._tcf_zero_run = len(data) - len(data.rstrip(b"\x00"))
        self._tcf_longest = max(self._tcf_longest, self._tcf_zero_run)

    def _tcf_signal_ended(self, arrived: object) -> Outcome:
        return self._tcf_ended()

    def _tcf_end_lost(self, arrived: object) -> Outcome:
        self._log("TCF end lost; judged after the data stopped")
        return self._tcf_ended()

    def _tcf_without_data(self, arrived: object) -> None:
        self._log("TCF signal ended without data")

    def _tcf_missing(self, arrived: object) -> Outcome:
        self._tcf_attempts += 1
        return self._training_failed("DCS without TCF")

    def _local_tcf(self, arrived: object) -> Outcome:
        return self._accept_training()

    def _tcf_ended(self) -> Outcome:
        dcs = self.dcs
        assert dcs is not None
        self._deadlines.cancel(Timer.TCF_END, Timer.LOCAL_TCF)
        if not self.config.transferred_tcf:
            return self._accept_training()
        self._tcf_attempts += 1
        needed = int(dcs.modulation.bit_rate * TCF_MIN_ZERO_RUN) // 8
        if self._tcf_longest >= needed:
            self._last_tcf_failed = False
            return self._accept_training()
        return self._training_failed(f"TCF failed: longest zero run {self._tcf_longest * 8} bits, need {needed * 8}")

    def _training_failed(self, why: str) -> Outcome:
        # T.30 5.3.6.2.3: FTT asks the sender to retrain (a new DCS, perhaps slower).
        self._last_tcf_failed = True
        self._log(why)
        if self._tcf_attempts >= MAX_TCF_ATTEMPTS:
            return _ended(T30Result.CANNOT_TRAIN, f"TCF failed {self._tcf_attempts} times")
        return _respond(Fcf.FTT, next_state=State.AWAIT_DCS)

    def _accept_training(self) -> Outcome:
        dcs = self.dcs
        assert dcs is not None
        phase_b = PhaseBCompleted(
            remote_ident=self.remote_ident, subaddress=self.subaddress, password=self.password,
            modem=dcs.modulation.family, bit_rate=dcs.modulation.bit_rate, ecm=dcs.ecm,
            compression=dcs.compression.value, x_dpi=dcs.resolution.x_dpi, y_dpi=dcs.resolution.y_dpi,
            width_px=dcs.width_px,
        )
        return Outcome(State.AWAIT_PAGE, (T30Frame(Fcf.CFR),), then=Timer.T2, events=(phase_b,))

    def _dtc(self, arrived: Command) -> Outcome:
        # T.30 5.3.6.1.3: DTC asks us to transmit (polling); a receive gateway has no
        # document to send.
        return _ended(T30Result.NO_POLL, "peer sent DTC (polling); nothing to send")

    def _dis_collision(self, arrived: Command) -> None:
        # Both ends answering: T.30 5.3.6.1.1 - keep repeating our DIS; the calling side
        # will give way.
        self._log("DIS received while answering (both ends called?)")

    def _dis_again(self, arrived: object) -> Outcome:
        if self._dis_sent >= MAX_DIS_TRIES:
            return _ended(T30Result.RETRYDCN, f"no answer to {self._dis_sent} DIS")
        return self._dis()

    # ----- phase C (non-ECM image data)
    def _stray_data(self, arrived: object) -> None:
        if not self._stray_data_logged:
            self._stray_data_logged = True
            self._log(f"image data in {self.state.value}")

    def _page_data_starts(self, arrived: t38_io.ImageDataArrived) -> Outcome | None:
        dcs = self.dcs
        if dcs is None or dcs.ecm:
            self._stray_data(arrived)
            return None
        self._decoder = self._decoder_factory(dcs.compression, dcs.width_px)
        if self._loss_before_carrier and not self._fast_carrier_seen:
            # Image data without the training indicator before it, after a loss: the loss
            # took the indicator and perhaps the page's first rows.  Counted as the page's.
            self._log(f"{self._lost_before_carrier} IFP(s) lost before the page's data, its training "
                      "indicator unseen: the page's first rows may be missing")
            self._rows_before_loss = 0
            self._page_loss_gaps += self._loss_before_carrier
            self._page_lost_ifps += self._lost_before_carrier
        self._loss_before_carrier = self._lost_before_carrier = 0
        if self._page_loss_gaps and isinstance(self._decoder, NonEcmPageDecoder):
            self._decoder.note_loss()  # IFPs lost on the page's carrier before its data
        self._page_rows_seen = False
        return self._page_data(arrived) or Outcome(State.NON_ECM_PAGE)

    def _data_after_page(self, arrived: t38_io.ImageDataArrived) -> Outcome | None:
        if self.dcs and not self.dcs.ecm and not self._page_rows_seen:
            # The "page" before had no rows (e.g. a TCF that a localTCF peer sent anyway):
            # it was not a page; this is.  What was lost before it may have been this
            # page's start (its training indicator and first rows): that loss stays counted.
            gaps, lost = self._page_loss_gaps, self._page_lost_ifps
            self._discard_page()
            self._page_loss_gaps, self._page_lost_ifps = gaps, lost
            return self._page_data_starts(arrived)
        self._stray_data(arrived)
        return None

    def _page_data(self, arrived: t38_io.ImageDataArrived) -> Outcome | None:
        deadlines = self._deadlines
        deadlines.pop(Timer.T2, None)
        deadlines[Timer.CARRIER] = self._now + self.config.carrier_timeout
        self._page_data_ifps += 1
        decoder = self._decoder
        assert decoder is not None
        if not decoder.page_ended:
            decoder.feed(arrived.data)
            if decoder.page_ended:
                self._ahead_due = True  # RTC: the page is whole (page_decode_ahead)
            if not self._page_rows_seen and decoder.rows:
                self._page_rows_seen = True
            if decoder.rows >= self.config.max_page_rows:
                return _ended(T30Result.LIMIT_REACHED,
                              f"page taller than the limit of {self.config.max_page_rows} rows; not confirmed")
        return None

    # ----- phase D (non-ECM post-message commands, and the ECM page end)
    def _post_page(self, arrived: Command) -> Outcome:
        frame = arrived.frame
        command = POST_PAGE_COMMANDS[frame.fcf]
        key = ("PMC", command)
        if self.state is not State.AWAIT_POST_PAGE:
            repeated = self._repeat_of_last(key)
            if repeated is not None:
                return repeated
            if self.state in (State.ANSWERING, State.AWAIT_DCN):
                self.counters["unexpected"] += 1
                self._log(f"unexpected {frame.name} in {self.state.value}")
                return _STAY
        if self.dcs is not None and self.dcs.ecm:
            return _ended(T30Result.RX_ECMPHD, f"{frame.name} without PPS in ECM mode")
        self._last_command = key
        if self._decoder is None:
            # MPS/EOP/EOM with no page before it: T.30 5.3.6.1.7 - ask for the page again.
            return _respond(Fcf.RTN, next_state=State.AWAIT_DCS)
        return self._page_complete(command)

    def _invalid_command(self, arrived: Command) -> Outcome:
        # After page data only a post-message command can follow; a frame that is no T.30
        # command at all ends the call, as SpanDSP does (TSB-85 MRGX12).
        self.counters["unexpected"] += 1
        self._log(f"unexpected {arrived.frame.name} in {self.state.value}: not a T.30 command")
        return _ended(T30Result.RX_INVALCMD, f"invalid command {arrived.frame.name} after page data")

    def _page_complete(self, command: Fcf, forced: Fcf | None = None) -> Outcome:
        decoder, self._decoder = self._decoder, None
        dcs = self.dcs
        assert decoder is not None and dcs is not None
        if isinstance(decoder, (EcmPageDecoder, NonEcmPageDecoder)):
            decoder.ahead = self._ahead
        self._ahead, self._ahead_due, self._ahead_handed = None, False, None
        page = decoder.finish()
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
            response = QUALITY_RESPONSE[quality]
        if page.height >= self.config.max_page_rows:
            return _ended(T30Result.LIMIT_REACHED,
                          f"page taller than the limit of {self.config.max_page_rows} rows; not confirmed")
        confirmed = response in (Fcf.MCF, Fcf.RTP)
        events: list[Event] = []
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
                events.append(PageRejected(
                    self._page_number(), page.height, page.bad_rows, page.longest_bad_run,
                    width=page.width, bitmap=page.bitmap, x_dpi=dcs.resolution.x_dpi, y_dpi=dcs.resolution.y_dpi,
                    compression=dcs.compression.value, ecm=dcs.ecm, ifp_loss_gaps=lost_gaps,
                    rows_lost_estimate=rows_lost))
            else:
                events.append(PageRejected(self._page_number(), page.height, page.bad_rows,
                                           page.longest_bad_run, ecm=dcs.ecm))
            if incomplete and confirmed:
                self._ecm_page = (self._ecm_page + 1) & 0xFF  # the sender is done with it
                self._pages_given_up += 1
        else:
            self.pages_confirmed += 1
            self._document_pages += 1
            if dcs.ecm:
                self._ecm_page = (self._ecm_page + 1) & 0xFF
            events.append(PageReceived(
                number=self._page_number() - 1, width=page.width, height=page.height, bitmap=page.bitmap,
                bad_rows=page.bad_rows, longest_bad_run=page.longest_bad_run, quality=quality,
                ifp_loss_gaps=lost_gaps,
                x_dpi=dcs.resolution.x_dpi, y_dpi=dcs.resolution.y_dpi,
                compression=dcs.compression.value, ecm=dcs.ecm, g4=getattr(page, "g4", None),
            ))
        self._page_rows_seen = False
        self._page_loss_gaps = 0
        self._loss_before_carrier = self._lost_before_carrier = 0
        self._page_data_ifps = self._page_lost_ifps = 0
        self._fast_carrier_seen = False
        self._ecm_block = 0
        self._ecm_blocks_in_page = 0
        self._err_block_pending = False
        self._page_has_err_block = False
        self._err_page_pending = response == Fcf.ERR
        if command == Fcf.EOP and confirmed:
            events.append(DocumentEnded(self._document_pages, more_documents=False))
        if command == Fcf.EOM:
            if confirmed:
                events.append(DocumentEnded(self._document_pages, more_documents=True))
                self._document_pages = 0
            # T.30 Figure 5-2: after the response to EOM (MCF, RTP or RTN alike) both
            # stations return to phase B; the called station sends DIS when T2 runs out
            # without a command (TSB-85 MRGN09: MCF to DIS 5-7 s), and a repeated EOM meanwhile
            # gets its response again (MRGN16).
            self._dis_after_t2 = True
        frames = (T30Frame(response),)
        if confirmed and command in (Fcf.MPS, Fcf.EOM) and self.pages_confirmed >= self.config.max_pages:
            return _ended(T30Result.LIMIT_REACHED, f"page limit of {self.config.max_pages} pages per call reached",
                          frames=frames, events=tuple(events))
        return Outcome(AFTER_PAGE[(command, response)], frames, then=Timer.T2, events=tuple(events))

    def _repeat_of_last(self, key: tuple[object, ...]) -> Outcome | None:
        """T.30 5.4.2: a sender that missed our response repeats its command; answer again.
        None: ``key`` is not a repeat of the command we answered last."""
        if key == self._last_command and self._last_response:
            if self._tx_free_at > self._now:
                # Our answer is still going out: it answers the repeat too.  A second copy
                # would reach the sender after it has moved on (into its next page).
                self._log(f"repeated command {key[0]} while our response is still being sent")
                return _STAY
            self.counters["responses_repeated"] += 1
            self._log(f"repeated command {key[0]}: response sent again")
            return Outcome(frames=self._last_response, then=Timer.T2)
        return None

    def _repeat_response(self, why: str) -> Outcome:
        if self._last_response:
            self.counters["responses_repeated"] += 1
            return Outcome(frames=self._last_response, then=Timer.T2)
        self._log(f"{why} with nothing to repeat")
        return _STAY

    def _crp(self, arrived: Command) -> Outcome:
        # T.30 5.3.6.1.8: CRP asks us to repeat our last signal.
        if self.state is State.ANSWERING:
            self._dis_sent = 0  # CRP is an answer: the DIS repeat count starts again
            return self._dis()
        return self._repeat_response("CRP")

    def _dcn(self, arrived: Command) -> Outcome:
        state = self.state
        if state is State.AWAIT_DCS and self._last_response and self._last_response[-1].fcf == Fcf.RTN:
            result, reason = DCN_AFTER_RTN
        elif state is State.AWAIT_DCS and self._last_tcf_failed:
            result, reason = DCN_AFTER_FTT
        else:
            result, reason = DCN_RESULTS.get(state, (T30Result.RX_DCNFAX, "DCN in {state}"))
        reason = reason.format(state=state.value, pages=self.pages_confirmed, tcf=self._tcf_attempts)
        return _ended(result, reason, send_dcn=False)

    # ----- timers that end the call or start phase B again
    def _t1_expired(self, arrived: object) -> Outcome:
        return _ended(T30Result.T1_EXPIRED, "no DCS within T1")

    def _t5_expired(self, arrived: object) -> Outcome:
        return _ended(T30Result.RX_T5EXP, "receiver not ready for longer than T5")

    def _t2_expired(self, arrived: object) -> Outcome:
        results = T2_RESULTS_AFTER_A_PAGE if self.pages_confirmed else T2_RESULTS
        return _ended(results[self.state], f"T2 expired in {self.state.value}")

    def _t2_after_eom(self, arrived: object) -> Outcome:
        if not self._dis_after_t2:
            return self._t2_expired(arrived)
        # EOM answered and no command within T2: phase B, we send DIS (T.30 Figure 5-2).
        self._dis_after_t2 = False
        self._dis_sent = 0
        self._deadlines.arm(Timer.T1, self._now + self.config.t1)
        return self._dis(State.ANSWERING)

    def _t2_after_eop(self, arrived: object) -> Outcome:
        # Every page was confirmed and EOP answered: only the DCN was lost.  SpanDSP
        # would say RX_T2EXPDCN; for the document that is a success.
        return _ended(T30Result.OK, "T2 expired waiting for DCN after EOP; document complete", send_dcn=False)

    # ----- ECM (T.4 Annex A)
    def _ecm_frame_elsewhere(self, arrived: object) -> None:
        if self.dcs is None or not self.dcs.ecm:
            self._log("HDLC on the image modem without ECM")
        else:
            self._log(f"ECM frame in {self.state.value}")

    def _ecm_frame(self, arrived: t38_io.HdlcFrameArrived) -> Outcome | None:
        dcs = self.dcs
        if dcs is None or not dcs.ecm:
            self._log("HDLC on the image modem without ECM")
            return None
        if not arrived.fcs_ok:
            self.counters["bad_frames"] += 1  # it will be in the PPR map
            # Frames are arriving, good or not: T2 stops, the carrier watch starts (an
            # ECM block whose first frame is corrupted must not end the call mid-block).
            self._deadlines.cancel(Timer.T2)
            self._deadlines.arm(Timer.CARRIER, self._now + self.config.carrier_timeout)
            return _IN_BLOCK
        try:
            frame = T30Frame.from_wire(arrived.wire)
        except RemoteProtocolError as exc:
            self.counters["bad_frames"] += 1
            self._log(str(exc))
            return None
        self._deadlines.cancel(Timer.T2)
        self._deadlines.arm(Timer.CARRIER, self._now + self.config.carrier_timeout)
        if frame.fcf == Fcf.FCD:
            if not frame.fif:
                self._log("FCD frame without a frame number")
                return _IN_BLOCK
            if self._block is None:
                self._block = EcmBlock(page=-1, block=-1, frame_size=dcs.ecm_frame_size)
            # The image octets stay in T.38 order for the decoder (first bit = MSB).
            if not self._block.frame_received(frame.fif[0], arrived.wire[4:]):
                self.counters["bad_frames"] += 1  # longer than an FCD can be: asked for again
                self._log(f"FCD frame {frame.fif[0]} with {len(arrived.wire) - 4} octets "
                          f"(frame size {dcs.ecm_frame_size}): not kept")
        elif frame.fcf == Fcf.RCP:  # T.4 A.3.6.2, end of the partial page; PPS follows on V.21
            self._ahead_due = True
        else:
            self._log(f"{frame.name} on the image modem")
        return None if self.state is State.ECM_BLOCK else _IN_BLOCK

    def _pps(self, arrived: Command) -> Outcome:
        frame = arrived.frame
        self._deadlines.cancel(Timer.CARRIER)
        if len(frame.fif) < 4:
            self._log(f"PPS with {len(frame.fif)}-octet FIF")
            return _STAY  # no answer: the sender repeats it (T.30 5.3.6.1.8, CRP is optional)
        fcf2 = frame.fif[0] & 0xFE
        page, block_no, count = frame.fif[1], frame.fif[2], frame.fif[3] + 1
        key = ("PPS", fcf2, page, block_no)
        # No frames since our last answer: the sender did not hear it.
        if self.state in _ANSWERED_STATES:
            repeated = self._repeat_of_last(key)
            if repeated is not None:
                return repeated
        dcs = self.dcs
        if self.state in (State.ANSWERING, State.AWAIT_DCN) or dcs is None or not dcs.ecm:
            self.counters["unexpected"] += 1
            self._log(f"unexpected PPS in {self.state.value}")
            return _STAY
        if fcf2 != PPS_NULL and fcf2 not in POST_PAGE_COMMANDS:
            return _ended(T30Result.RX_ECMPHD, f"PPS with unknown post-page command 0x{fcf2:02X}")
        if self._names_confirmed_block(page, block_no):
            # T.30 A.4.1 numbers pages and blocks: a PPS naming the block (or page) we
            # already confirmed is the sender repeating itself because our MCF was lost.
            # Confirm it again and store nothing (else the archive holds a page twice).
            self._log(f"PPS for page {page} block {block_no}, already confirmed: MCF again, nothing stored")
            self._block = None
            self._last_command = key
            return _respond(Fcf.MCF, next_state=State.AWAIT_PAGE)
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
                return _ended(T30Result.RX_ECMPHD, f"PPS names page {page} block {block_no}, "
                                                   f"expected page {self._ecm_page} block {self._ecm_block}")
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
            block = self._block = EcmBlock(page, block_no, dcs.ecm_frame_size)
        if block.page < 0:
            block.page, block.block = page, block_no
        block.set_frame_count(count)
        missing = block.missing()
        self._last_command = key
        if missing:
            block.ppr_count += 1
            self.counters["ppr_sent"] += 1
            return _respond(Fcf.PPR, block.ppr_map(), next_state=State.AWAIT_PAGE)
        return self._block_complete(fcf2)

    def _eor(self, arrived: Command) -> Outcome:
        frame = arrived.frame
        fcf2 = (frame.fif[0] & 0xFE) if frame.fif else PPS_NULL
        key = ("EOR", fcf2)
        if self.state in _ANSWERED_STATES:
            repeated = self._repeat_of_last(key)
            if repeated is not None:
                return repeated
        if self.state in (State.ANSWERING, State.AWAIT_DCN) or self.dcs is None or not self.dcs.ecm:
            self.counters["unexpected"] += 1
            self._log(f"unexpected EOR in {self.state.value}")
            return _STAY
        self._last_command = key
        if fcf2 != PPS_NULL and fcf2 not in POST_PAGE_COMMANDS:
            return _ended(T30Result.RX_ECMPHD, f"EOR with unknown post-page command 0x{fcf2:02X}")
        missing = self._block.missing() if self._block else []
        self._log(f"EOR: block kept with {len(missing)} frame(s) missing")
        return self._block_complete(fcf2, with_errors=True)

    def _page_number(self) -> int:
        """The number of the page being received: a page we reject and the sender sends again
        keeps it; a page the sender went past keeps its own, and the next page gets the
        next number.  ECM pages say which they are (T.30 A.4.1 page numbers); for non-ECM
        see ``_same_page_again``."""
        return self.pages_confirmed + self._pages_given_up + 1

    def _same_page_again(self, page: DecodedPage) -> bool:
        """Non-ECM pages carry no number, and after RTN to MPS a sender may resend the page
        or go on to the next (T.30 5.3.6.2.8 leaves it open).  It is the same page when the
        rows we had intact before the loss come again identically - and they show some
        black (two pages both opening with a white margin prove nothing).  In doubt the
        answer is no, so the rejected copy is never mistaken for a page that replaced it."""
        assert self._rejected_copy is not None
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

    def _block_complete(self, fcf2: int, *, with_errors: bool = False) -> Outcome:
        """The block is whole (or the sender gave up on it with EOR): take its data."""
        dcs = self.dcs
        assert dcs is not None
        block = self._block
        self._block = None
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = self._ecm_decoder_factory(dcs.compression, dcs.width_px)
            if isinstance(decoder, EcmPageDecoder):
                decoder.max_rows = self.config.max_page_rows
        if block is not None:
            data = block.data()
            if data and not decoder.page_ended and decoder.rows < self.config.max_page_rows:
                decoder.feed(data)
        self._ecm_blocks_in_page += 1
        if self._ecm_blocks_in_page > self.config.max_ecm_blocks_per_page:
            return _ended(T30Result.LIMIT_REACHED, f"page of more than {self.config.max_ecm_blocks_per_page} "
                                                   "ECM blocks; not confirmed")
        if with_errors and isinstance(decoder, EcmPageDecoder):
            decoder.whole = False  # frames are missing: not a clean page any more
        if with_errors:
            self._err_block_pending = fcf2 == PPS_NULL
        else:
            self._ecm_block = (self._ecm_block + 1) & 0xFF
        response = Fcf.ERR if with_errors else Fcf.MCF
        if not self._receiver_ready and not with_errors:
            # T.30 A.4.4: RNR while we cannot take more; the sender polls with RR.
            self._after_ready = lambda: self._finish_block(fcf2, response)
            self._deadlines.arm(Timer.T5, self._now + self.config.t5)
            return Outcome(State.RECEIVER_NOT_READY, (T30Frame(Fcf.RNR),), remember=False)
        return self._finish_block(fcf2, response)

    def _finish_block(self, fcf2: int, response: Fcf) -> Outcome:
        if fcf2 == PPS_NULL:
            return _respond(response, next_state=State.AWAIT_PAGE)
        return self._page_complete(POST_PAGE_COMMANDS[fcf2], forced=response)

    def _rr(self, arrived: Command) -> Outcome:
        if self.state is State.RECEIVER_NOT_READY:
            if self._receiver_ready and self._after_ready is not None:
                action, self._after_ready = self._after_ready, None
                self._deadlines.cancel(Timer.T5)
                return action()
            return Outcome(frames=(T30Frame(Fcf.RNR),), remember=False)
        return self._repeat_response("RR")

    def _ctc(self, arrived: Command) -> Outcome:
        # T.30 A.4.3: continue to correct, possibly at a new rate (CTC FIF bits 11-14).
        if self.dcs is None or not self.dcs.ecm:
            self.counters["unexpected"] += 1
            self._log(f"unexpected CTC in {self.state.value}")
            return _STAY
        self._last_command = ("CTC",)
        return _respond(Fcf.CTR, next_state=State.AWAIT_PAGE)


_IN_BLOCK = Outcome(State.ECM_BLOCK)
#: States in which our last response went out and nothing new has arrived since.
_ANSWERED_STATES = frozenset({State.AWAIT_PAGE, State.ANSWERING, State.AWAIT_DCN, State.AWAIT_DCS})

# ---------------------------------------------------------------------- the table
S = State
_H = T30Receiver
#: Where a post-page exchange (MPS/EOP/EOM, PPS, EOR, RR after RNR) can lead.
_PAGE_ENDS = frozenset({S.AWAIT_PAGE, S.AWAIT_DCS, S.AWAIT_DCN, S.ENDED})
_BLOCK_ENDS = _PAGE_ENDS | {S.RECEIVER_NOT_READY}


def _row(state: State, entries: dict[Input, tuple[Handler, Next]]) -> dict[Input, tuple[Handler, Next]]:
    """A state's row: ``entries`` over what every live state understands.

    Every state: T5 ends the call (T.30 A.4.4; it runs only after our RNR), image data and
    ECM frames out of place are logged.  Every state that reads commands: DCN ends the
    call, CRP has our last signal repeated (T.30 5.3.6.1.8).
    """
    common: dict[Input, tuple[Handler, Next]] = {
        Timer.T5: (_H._t5_expired, S.ENDED),
        Signal.IMAGE_DATA: (_H._stray_data, state),
        Signal.ECM_FRAME: (_H._ecm_frame_elsewhere, state),
    }
    if Signal.CARRIER_CUT not in entries:
        common[Fcf.DCN] = (_H._dcn, S.ENDED)
        common[Fcf.CRP] = (_H._crp, state)
    return {**common, **entries}


def _post_page_row(state: State) -> dict[Input, tuple[Handler, Next]]:
    """MPS/EOP/EOM and their PRI-Q forms (T.30 5.3.6.1.6: answered as the plain Q)."""
    return {Fcf(fcf): (_H._post_page, _PAGE_ENDS | {state}) for fcf in POST_PAGE_COMMANDS}


#: The engine: state -> {input -> (handler, next state or the states the handler picks from)}.
TRANSITIONS: dict[State, dict[Input, tuple[Handler, Next]]] = {
    S.IDLE: {
        Signal.ANSWER: (_H._answer, S.ANSWERING),
    },
    S.ANSWERING: _row(S.ANSWERING, {
        Fcf.DCS: (_H._dcs, frozenset({S.AWAIT_TCF, S.ENDED, S.ANSWERING})),
        Fcf.DTC: (_H._dtc, S.ENDED),
        Fcf.DIS: (_H._dis_collision, S.ANSWERING),
        **_post_page_row(S.ANSWERING),
        Fcf.PPS: (_H._pps, _BLOCK_ENDS | {S.ANSWERING}),
        Fcf.EOR: (_H._eor, _BLOCK_ENDS | {S.ANSWERING}),
        Timer.T1: (_H._t1_expired, S.ENDED),
        Timer.T4: (_H._dis_again, frozenset({S.ANSWERING, S.ENDED})),
        Signal.GARBLED: (_H._garbled, S.ANSWERING),
        Signal.IMAGE_END: (_H._dis_after_garbled, S.ANSWERING),
    }),
    S.AWAIT_DCS: _row(S.AWAIT_DCS, {
        Fcf.DCS: (_H._dcs, frozenset({S.AWAIT_TCF, S.ENDED, S.AWAIT_DCS})),
        Fcf.DTC: (_H._dtc, S.ENDED),
        **_post_page_row(S.AWAIT_DCS),
        Fcf.PPS: (_H._pps, _BLOCK_ENDS),
        Timer.T2: (_H._t2_after_eom, frozenset({S.ANSWERING, S.ENDED})),
    }),
    S.AWAIT_TCF: _row(S.AWAIT_TCF, {
        Fcf.DCS: (_H._dcs, frozenset({S.AWAIT_TCF, S.ENDED})),
        Signal.TRAINING: (_H._training_started, S.TCF),
        Signal.IMAGE_DATA: (_H._tcf_data, S.TCF),
        Signal.IMAGE_END: (_H._tcf_without_data, S.AWAIT_TCF),
        Timer.TCF_MISSING: (_H._tcf_missing, frozenset({S.AWAIT_DCS, S.ENDED})),
        Timer.LOCAL_TCF: (_H._local_tcf, S.AWAIT_PAGE),
        Timer.T2: (_H._t2_expired, S.ENDED),
    }),
    S.TCF: _row(S.TCF, {
        Signal.IMAGE_DATA: (_H._tcf_data, S.TCF),
        Signal.IMAGE_END: (_H._tcf_signal_ended, frozenset({S.AWAIT_PAGE, S.AWAIT_DCS, S.ENDED})),
        Signal.NO_SIGNAL: (_H._tcf_signal_ended, frozenset({S.AWAIT_PAGE, S.AWAIT_DCS, S.ENDED})),
        Timer.TCF_END: (_H._tcf_end_lost, frozenset({S.AWAIT_PAGE, S.AWAIT_DCS, S.ENDED})),
        Signal.CARRIER_CUT: (_H._carrier_cut_in_tcf, S.AWAIT_DCS),
        Timer.T2: (_H._t2_expired, S.ENDED),
    }),
    S.AWAIT_PAGE: _row(S.AWAIT_PAGE, {
        # A DCS here means the sender did not hear our CFR/MCF and starts phase B again.
        Fcf.DCS: (_H._dcs, frozenset({S.AWAIT_TCF, S.ENDED, S.AWAIT_PAGE})),
        **_post_page_row(S.AWAIT_PAGE),
        Fcf.PPS: (_H._pps, _BLOCK_ENDS),
        Fcf.EOR: (_H._eor, _BLOCK_ENDS),
        Fcf.CTC: (_H._ctc, S.AWAIT_PAGE),
        Fcf.RR: (_H._rr, S.AWAIT_PAGE),
        Signal.TRAINING: (_H._page_carrier_started, S.AWAIT_PAGE),
        Signal.IMAGE_DATA: (_H._page_data_starts, frozenset({S.NON_ECM_PAGE, S.AWAIT_PAGE, S.ENDED})),
        Signal.ECM_FRAME: (_H._ecm_frame, frozenset({S.ECM_BLOCK, S.AWAIT_PAGE})),
        Timer.T2: (_H._t2_expired, S.ENDED),
    }),
    S.NON_ECM_PAGE: _row(S.NON_ECM_PAGE, {
        Signal.IMAGE_DATA: (_H._page_data, frozenset({S.NON_ECM_PAGE, S.ENDED})),
        Signal.IMAGE_END: (_H._carrier_ended, S.AWAIT_POST_PAGE),
        Signal.CARRIER_CUT: (_H._carrier_ended, S.AWAIT_POST_PAGE),
        Timer.CARRIER: (_H._carrier_stalled, S.AWAIT_POST_PAGE),
        Timer.T2: (_H._t2_expired, S.ENDED),
    }),
    S.ECM_BLOCK: _row(S.ECM_BLOCK, {
        Signal.ECM_FRAME: (_H._ecm_frame, S.ECM_BLOCK),
        Signal.ECM_END: (_H._ecm_carrier_ended, S.AWAIT_POST_PAGE),
        Signal.CARRIER_CUT: (_H._carrier_ended, S.AWAIT_POST_PAGE),
        Timer.CARRIER: (_H._ecm_carrier_ended, S.AWAIT_POST_PAGE),
        Timer.T2: (_H._t2_expired, S.ENDED),
    }),
    S.AWAIT_POST_PAGE: _row(S.AWAIT_POST_PAGE, {
        **_post_page_row(S.AWAIT_POST_PAGE),
        Fcf.PPS: (_H._pps, _BLOCK_ENDS | {S.AWAIT_POST_PAGE}),
        Fcf.EOR: (_H._eor, _BLOCK_ENDS | {S.AWAIT_POST_PAGE}),
        Fcf.CTC: (_H._ctc, frozenset({S.AWAIT_PAGE, S.AWAIT_POST_PAGE})),
        Fcf.RR: (_H._rr, S.AWAIT_POST_PAGE),
        Fcf.DCS: (_H._dcs, frozenset({S.AWAIT_TCF, S.ENDED, S.AWAIT_POST_PAGE})),
        Signal.UNKNOWN_COMMAND: (_H._invalid_command, S.ENDED),
        Signal.IMAGE_DATA: (_H._data_after_page, frozenset({S.NON_ECM_PAGE, S.AWAIT_POST_PAGE, S.ENDED})),
        Signal.ECM_FRAME: (_H._ecm_frame, frozenset({S.ECM_BLOCK, S.AWAIT_POST_PAGE})),
        Timer.T2: (_H._t2_expired, S.ENDED),
    }),
    S.RECEIVER_NOT_READY: _row(S.RECEIVER_NOT_READY, {
        Fcf.RR: (_H._rr, _BLOCK_ENDS),
        Fcf.PPS: (_H._pps, _BLOCK_ENDS),
        Fcf.EOR: (_H._eor, _BLOCK_ENDS),
    }),
    S.AWAIT_DCN: _row(S.AWAIT_DCN, {
        **_post_page_row(S.AWAIT_DCN),
        Fcf.DCS: (_H._dcs, frozenset({S.AWAIT_TCF, S.ENDED, S.AWAIT_DCN})),
        Fcf.PPS: (_H._pps, _BLOCK_ENDS),
        Fcf.EOR: (_H._eor, _BLOCK_ENDS),
        Timer.T2: (_H._t2_after_eop, S.ENDED),
    }),
    S.ENDED: {},
}

T30Receiver._TRANSITIONS = TRANSITIONS
