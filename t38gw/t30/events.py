"""What the T.30 engine tells its user: frozen dataclasses named in the past tense."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class T30Result(enum.Enum):
    """How a T.30 call ended.  Names and meanings follow the T.30 result codes that
    SpanDSP and its users (Asterisk, FreeSWITCH) report, so operators see familiar text."""

    OK = "OK"
    T1_EXPIRED = "T1_EXPIRED"  # no valid DCS within T1 of our first DIS
    CANNOT_TRAIN = "CANNOT_TRAIN"  # TCF kept failing and the sender gave up
    INCOMPATIBLE = "INCOMPATIBLE"  # DCS asked for a mode we did not offer
    NO_POLL = "NO_POLL"  # peer asked to poll us (DTC); we have nothing to send
    RX_ECMPHD = "RX_ECMPHD"  # invalid ECM phase D from the sender
    RX_INVALCMD = "RX_INVALCMD"  # unexpected command after a page
    RX_NOCARRIER = "RX_NOCARRIER"  # carrier lost during a page and nothing followed
    RX_T2EXPD = "RX_T2EXPD"  # T2 expired waiting for phase D (post-page command)
    RX_T2EXPFAX = "RX_T2EXPFAX"  # T2 expired waiting for the first page
    RX_T2EXPMPS = "RX_T2EXPMPS"  # T2 expired waiting for the next page
    RX_T2EXPRR = "RX_T2EXPRR"  # T2 expired waiting for RR
    RX_T2EXP = "RX_T2EXP"  # T2 expired waiting for DCS after CFR/FTT or a new phase B
    RX_T5EXP = "RX_T5EXP"  # receiver stayed not-ready longer than T5
    RX_DCNWHY = "RX_DCNWHY"  # DCN while waiting for DCS
    RX_DCNDATA = "RX_DCNDATA"  # DCN while waiting for image data
    RX_DCNFAX = "RX_DCNFAX"  # DCN while waiting for EOM/EOP/MPS
    RX_DCNPHD = "RX_DCNPHD"  # DCN after MPS/EOM before the next page
    RX_DCNRRD = "RX_DCNRRD"  # DCN after an RR/RNR exchange
    RX_DCNNORTN = "RX_DCNNORTN"  # DCN after our RTN: the sender gave up on the page
    RETRYDCN = "RETRYDCN"  # our DIS went unanswered three times, then DCN (TSB-85 MRGX01)
    LIMIT_REACHED = "LIMIT_REACHED"  # a ReceiverConfig limit (pages, rows, ECM blocks) ended the call
    CALL_DROPPED = "CALL_DROPPED"  # the session ended the call (BYE) before phase E
    # The calling (sending) side, named after SpanDSP's T30_ERR_TX_* codes.
    TX_T1EXPIRED = "TX_T1EXPIRED"  # no DIS within T1 of the call starting
    TX_BADDCS = "TX_BADDCS"  # DCN (or another bad response) to our DCS/TCF
    TX_BADPG = "TX_BADPG"  # DCN in answer to our EOP (the last page was not confirmed)
    RX_INCAPABLE = "RX_INCAPABLE"  # the far end's DIS says it cannot receive (bit 10)
    TX_PHBDEAD = "TX_PHBDEAD"  # no answer to DCS/TCF after three tries
    TX_PHDDEAD = "TX_PHDDEAD"  # no answer to a post-page command after three tries
    TX_GOTDCN = "TX_GOTDCN"  # the receiver sent DCN before the document was done
    TX_INVALRSP = "TX_INVALRSP"  # a response T.30 does not allow there
    TX_T5EXP = "TX_T5EXP"  # ECM: the receiver stayed not ready (RNR) longer than T5
    TX_PAGES_INVALID = "TX_PAGES_INVALID"  # a page cannot be sent in any mode the receiver offers


class PageQuality(enum.Enum):
    """Our verdict on a received page, and the post-message response it earned."""

    GOOD = "MCF"
    POOR = "RTP"
    BAD = "RTN"


@dataclass(frozen=True)
class PhaseBCompleted:
    """A DCS was accepted (CFR sent): the page parameters of what follows.

    ``remote_ident`` is the TSI, ``subaddress`` the SUB (T.30 5.3.6.2.9, for routing) and
    ``password`` the SID or PWD that came with the DCS (5.3.6.2.10-11)."""

    remote_ident: str
    subaddress: str
    password: str
    modem: str
    bit_rate: int
    ecm: bool
    compression: str
    x_dpi: int
    y_dpi: int
    width_px: int


@dataclass(frozen=True)
class PageReceived:
    """A page we confirmed (MCF or RTP sent).  ``bitmap`` holds packed rows MSB-first,
    1 = black; ``bad_rows`` are rows the decoder had to repair.  ``ifp_loss_gaps`` counts
    runs of IFPs lost during a non-ECM page (their rows are missing; quality is then at
    best POOR)."""

    number: int
    width: int
    height: int
    bitmap: bytes
    bad_rows: int
    longest_bad_run: int
    quality: PageQuality
    x_dpi: int
    y_dpi: int
    compression: str
    ecm: bool
    ifp_loss_gaps: int = 0
    #: The page's T.6 coding as the archive stores it, when the decoder had it (see
    #: ``imaging.DecodedPage.g4``); the archive codes the bitmap itself otherwise.
    g4: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class PageRejected:
    """A page we did not confirm (RTN, or ERR to an ECM EOR): the sender may send it again,
    and if it does and we confirm it, that ``PageReceived`` carries the same ``number``.
    (ECM pages are numbered by the sender, so when it goes on to its next page instead,
    that page gets the next number; non-ECM pages carry no number, and a sender may move
    on after RTN to MPS, so there the next confirmed page takes the rejected one's number.)

    ``bitmap`` (with ``width``, ``x_dpi``, ``y_dpi``, ``compression``, ``ecm``) is set only
    for a non-ECM page during which UDPTL lost image data beyond recovery
    (``ifp_loss_gaps`` > 0): the best copy received, to keep provisionally in case the
    sender gives up.  ``rows_lost_estimate`` is the rows the lost IFPs held, estimated
    from their share of the page's data at the modem rate (see the receiver)."""

    number: int
    height: int
    bad_rows: int
    longest_bad_run: int
    width: int = 0
    bitmap: bytes | None = None
    x_dpi: int = 0
    y_dpi: int = 0
    compression: str = ""
    ecm: bool = False
    ifp_loss_gaps: int = 0
    rows_lost_estimate: int = 0


@dataclass(frozen=True)
class PageSent:
    """The calling side's page ``number`` (1-based) went out and the receiver answered
    ``response`` (MCF, RTP, RTN, or ERR after our EOR).  ``confirmed``: the receiver kept it
    (MCF/RTP; ERR keeps a page with frames missing).  ``attempt`` counts sends of it."""

    number: int
    response: str
    confirmed: bool
    attempt: int = 1


@dataclass(frozen=True)
class DocumentEnded:
    """EOP or EOM was confirmed: ``pages`` pages form one document."""

    pages: int
    more_documents: bool


@dataclass(frozen=True)
class CallEnded:
    """The engine is done.  ``pages`` counts confirmed pages, which are all kept."""

    result: T30Result
    pages: int
    reason: str


@dataclass(frozen=True)
class ProtocolEventLogged:
    """Something unexpected that the engine handled (a bad frame, an out-of-place
    command...): for logs and counters, never a reason to raise."""

    state: str
    what: str


Event = (PhaseBCompleted | PageReceived | PageRejected | PageSent | DocumentEnded | CallEnded
         | ProtocolEventLogged)
