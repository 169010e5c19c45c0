"""Call control for one fax call, sans-IO: SIP events and media facts in, commands out.

How it works
------------
One :class:`CallControl` per SIP call.  Its inputs are the ``sip.ua`` events of that
call (``InviteReceived``, ``CallEstablished``, ``MediaChanged``, ``ReinviteFailed``,
``SessionRefreshed``, ``CallTerminated``; for an outbound call ``CallProgressed`` and
``CallAnswered``), facts from the gateway's runtime edge (a UDPTL port
was opened or could not be, T.30 phase B named the sender, the fax is over, the gateway
is shutting down, a command could not be carried out) and ``now``.  Its outputs are
commands (:class:`Ring`, :class:`Accept`, :class:`Answer`, :class:`Refuse`,
:class:`RejectOffer`, :class:`Reinvite`, :class:`Hangup`, :class:`StartMedia`,
:class:`StopMedia`, :class:`CloseMedia`, :class:`Reroute`; outbound :class:`Dial` and
:class:`CallFailed`) and :class:`Note` (a line for
the log), plus its next deadline.  The edge (``t38gw.gateway``) executes the commands
against the UA, the port pool and the ``FaxSession``; nothing here touches a socket,
a clock or a file.

The machine is a table, ``TABLE[state][input] -> Transition(handler, next_state)``, in
the shape of ``sip.transaction``: the handler returns the commands and never assigns the
state (a handler whose outcome picks the state - admission, SDP checks - returns it
with the commands; the table's state is the default).  A missing key means the input
does not matter in that state and is absorbed (a late event of a call we already hung
up, a second ``CallTerminated``...).  Timers are armed by name; entering a state drops the
timers that do not belong to it (``TIMERS_BY_STATE``), so a superseded timer cannot
fire: ``handle_timer`` at a stale deadline is a no-op.

Policy (from README "What a call does" and DESIGN.md "Interop conventions")
---------------------------------------------------------------------------
- At the INVITE: 503 while shutting down, at ``limits.max_calls`` or while the webhook
  spool cannot be written (:func:`admission_refusal`); 603 when the first matching
  route rejects; 488 for SDP that cannot be read or offers neither T.38 nor G.711.
  With ``answer_after`` the call rings first (180) and is answered when it elapses,
  unless CANCEL came meanwhile (nothing is opened for it) or shutdown began (503).
- A T.38 offer is answered with T.38 and the media starts at once; an audio offer is
  answered with G.711; an INVITE without SDP gets our T.38 offer in the 2xx (RFC 3261
  13.2.1) and the media starts with the answer in the ACK.
- On audio, once the ACK came, we re-INVITE to T.38 after ``t38_reinvite_after``
  seconds (``< 0``: never, the peer's re-INVITE is awaited).  A peer's re-INVITE to
  T.38 is accepted in any state (also in glare: the UA answers 491 and retries, RFC
  3261 14.1; if the peer's wins, our superseded one is dropped and T.38 stays).  A
  re-INVITE back to audio is answered with audio and the fax side ends by T.30.
- Without T.38 ``T38_WAIT_SECONDS`` after answering, or when the peer refuses our
  T.38 re-INVITE (or answers it without T.38), the call fails and is hung up.
- Phase B names the sender (TSI): the routes are matched again with the call's own
  did, caller and *trunk* (forgetting the trunk sent trunk-routed faxes to another
  folder and webhook: hardening review) and a different, non-rejecting rule wins.
- When the fax is over we hang up; when the dialog ends first the media is stopped.

Outbound calls (the UAC side of sending)
----------------------------------------
The same controller places a call: :meth:`CallControl.dial` (a
:class:`t38gw.outbound.DialTarget` from the dial plan, and the UDPTL port the edge opened
for it) emits :class:`Dial` - the edge runs ``ua.invite(...)`` with its fields - offering
T.38 or G.711 per ``CallSettings.initial_offer`` (``[send] initial_offer``).  In
``DIALING``, ``CallProgressed`` (100 is not reported, 180/183 are) is a ``Note``;
``CallAnswered`` with T.38 starts the media (``T38``), with G.711 goes to ``AUDIO`` with
the same timers as an answered inbound audio call (our re-INVITE after
``t38_reinvite_after``, the peer's accepted at any time, ``t38_wait``); everything from
``AUDIO`` on is shared.  ``ring_timeout`` after the INVITE without an answer we CANCEL
(``CANCELLING``) and the call is "no answer".  A digest challenge (401/407) is answered by
the UA with ``Dial.credentials`` and never reaches this core.

An outbound call that ends before T.38 media ran produces exactly one
:class:`CallFailed` (``cause``, ``reason``, ``status``, ``retryable``; see
:func:`dial_failure` and :data:`RETRYABLE_CAUSES`) and no ``StopMedia``: there is no
media session to stop.  Once ``StartMedia`` was issued the call ends as an inbound one
does (``fax_ended`` -> BYE, or ``StopMedia`` when the dialog ends first).

Growing it
----------
An audio media leg (audio
fax) is a command ``StartAudio(AudioSession)`` from :mod:`t38gw.negotiation`: the rows
that today fail the call on ``T38_WAIT`` or a refused re-INVITE go to an ``AUDIO_FAX``
state instead when ``CallSettings.audio_fallback`` is set, and ``fax_ended`` ends it
like a T.38 fax.  Neither needs a second controller.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sip import sdp as sdpmod
from sip.errors import RemoteProtocolError, SipParseError
from sip.message import parse_name_addr
from sip.ua import (
    CallAnswered,
    CallProgressed,
    CallTerminated,
    CallEstablished,
    InviteReceived,
    MediaChanged,
    ReinviteFailed,
    SessionRefreshed,
)
from sip.uri import parse_uri

from t38gw import negotiation
from t38gw.negotiation import AudioSession, LocalMedia, T38Answer, T38Session
from t38gw.outbound import DialTarget

# An audio call that never turns into T.38 is ended this long after we answered it.
T38_WAIT_SECONDS = 60.0
# An outbound call not answered this long after our INVITE is cancelled: "no answer".
RING_TIMEOUT_SECONDS = 60.0


# ----------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class CallFacts:
    """What routing matches on (``[[routes]]``)."""

    did: str  # Request-URI user part
    caller: str  # P-Asserted-Identity, else From, user part
    trunk: str  # trunk or listener the call came in on
    tsi: str | None = None  # remote fax ident, after phase B


@dataclass(frozen=True)
class RouteChoice:
    """A routing decision: the rule's index (None: the default route), the rule itself
    (opaque here) and whether it rejects the call."""

    index: int | None
    route: Any
    reject: bool = False


Router = Callable[[CallFacts], RouteChoice]


@dataclass(frozen=True)
class Load:
    """What admission looks at when an INVITE arrives."""

    accepting: bool = True  # False once shutdown began
    calls: int = 0  # calls in progress (media running, ringing or being set up)
    max_calls: int = 500
    spool_healthy: bool = True
    spool_error: str = ""
    # Why the process cannot carry one more call now (event-loop lag, CPU: t38gw.overload),
    # or "" when it can.
    overloaded: str = ""
    retry_after: int = 0  # > 0: the Retry-After of an admission 503 (RFC 3261 21.5.4)


@dataclass(frozen=True)
class CallSettings:
    """The gateway-wide policy a call follows (from the config)."""

    route_at_invite: Router
    route_after_phase_b: Router
    local_t38: sdpmod.T38Params
    answer_after: float = 0.0  # > 0: ring (180) this long before answering
    t38_reinvite_after: float = 0.0  # < 0: wait for the peer's re-INVITE
    t38_wait: float = T38_WAIT_SECONDS
    media_latching: str = "strict"
    trunk_latching: Mapping[str, str] = field(default_factory=dict)  # trunk name -> its own setting
    trunk_hosts: tuple[tuple[str, str], ...] = ()  # (registrar host address, trunk name)
    initial_offer: str = "audio"  # outbound: "audio" | "t38" in our first INVITE ([send] initial_offer)
    # [t38] audio_fallback (and SpanDSP present): an audio call carries the fax as G.711
    # until (unless) T.38 is negotiated, instead of failing without T.38.
    audio_fallback: bool = False
    ring_timeout: float = RING_TIMEOUT_SECONDS  # outbound: CANCEL an INVITE unanswered this long


def admission_refusal(load: Load) -> str | None:
    """Why a new call cannot be taken now (503), or None.

    A call we cannot finish properly is worse than one refused: the sender's machine
    retries a 503 later, but a fax we answer and then cannot store is lost to it.
    """
    if not load.accepting:
        return "shutting down"
    if load.calls >= load.max_calls:
        return f"limits.max_calls ({load.max_calls}) calls in progress"
    if not load.spool_healthy:
        return f"the webhook spool cannot be written ({load.spool_error})"
    if load.overloaded:
        # Never damage the calls in progress to admit another (issue 14): a caller refused
        # with 503 tries again later; one answered on an overloaded loop loses datagrams.
        return f"overloaded: {load.overloaded}"
    return None


def user_of(uri_text: str | None) -> str:
    """The user part of a SIP URI ("" when there is none or it cannot be read)."""
    if not uri_text:
        return ""
    try:
        return parse_uri(uri_text).user or ""
    except (SipParseError, ValueError):
        return ""


def user_of_name_addr(value: str | None) -> str:
    """The user part of a name-addr header value (From, P-Asserted-Identity)."""
    if not value:
        return ""
    try:
        return parse_name_addr(value).uri.user or ""
    except (SipParseError, ValueError, AttributeError):
        return ""


def facts_of_invite(event: InviteReceived, trunk_hosts: tuple[tuple[str, str], ...]) -> CallFacts:
    """did, caller and trunk of an incoming call.  The trunk is the configured trunk whose
    registrar the INVITE came from, else the listener's transport."""
    invite = event.call.invite
    pai = invite.headers.get("P-Asserted-Identity") if invite is not None else None
    caller = user_of_name_addr(pai) or user_of_name_addr(event.from_)
    trunk = next((name for host, name in trunk_hosts if host == event.source.host), event.transport)
    return CallFacts(did=user_of(event.request_uri), caller=caller, trunk=trunk)


# ----------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Ring:
    """Send 180 Ringing."""


@dataclass(frozen=True)
class Accept:
    """Take the call: open a UDPTL port, create its record and session under ``route``,
    then call :meth:`CallControl.media_ready` (or :meth:`CallControl.media_unavailable`)."""

    facts: CallFacts
    route: RouteChoice
    offer: str  # "t38" | "audio" | "none (delayed offer)": for the log


@dataclass(frozen=True)
class Answer:
    """Answer the INVITE (``first``: the media side starts running now), or the peer's
    pending re-INVITE, with ``sdp``."""

    sdp: bytes
    first: bool = False


@dataclass(frozen=True)
class Refuse:
    """Refuse the call (the INVITE) with ``status``; counted as ``refused_<status>``."""

    status: int
    reason: str
    retry_after: int | None = None  # seconds, sent as Retry-After (a 503 for load)


@dataclass(frozen=True)
class RejectOffer:
    """Refuse the peer's re-INVITE with ``status``; the call goes on."""

    status: int
    reason: str


@dataclass(frozen=True)
class Reinvite:
    """Send our re-INVITE offering ``sdp``."""

    sdp: bytes


@dataclass(frozen=True)
class Hangup:
    """End the dialog (BYE, or whatever its state needs)."""


@dataclass(frozen=True)
class StartMedia:
    """T.38 is negotiated: start (or re-point) the UDPTL media and the T.30 engine."""

    t38: T38Session


@dataclass(frozen=True)
class StartAudio:
    """The call is on G.711 and the fax is carried as audio (``[t38] audio_fallback``):
    start (or re-point) the RTP leg and the T.30 engine behind SpanDSP's modems.  A later
    :class:`StartMedia` moves the same T.30 engine to UDPTL."""

    audio: AudioSession


@dataclass(frozen=True)
class StopMedia:
    """End the fax side: ``failed`` - we give up on the call with ``reason``; otherwise
    the dialog ended (``reason`` from the UA)."""

    reason: str
    failed: bool


@dataclass(frozen=True)
class CloseMedia:
    """The port opened for :class:`Accept` is not needed (the caller left meanwhile)."""


@dataclass(frozen=True)
class Reroute:
    """The TSI moved the call to another route: deliver under ``route``."""

    route: RouteChoice
    tsi: str


@dataclass(frozen=True)
class Dial:
    """Place the outbound call: ``ua.invite(uri, sdp, now, from_user=..., from_domain=...,
    credentials=..., proxy=...)``; the returned ``Call``'s events are this core's."""

    uri: str
    sdp: bytes
    proxy: str | None = None
    from_user: str | None = None
    from_domain: str | None = None
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    offer: str = "audio"  # "audio" | "t38": for the log


@dataclass(frozen=True)
class CallFailed:
    """The outbound call ended before T.38 media ran (the job's attempt failed).

    ``cause``: one of :data:`FAILURE_CAUSES`; ``reason``: a sentence for ``meta.json`` and
    the log; ``status``: the SIP final response when there was one; ``retryable``: the
    job may dial again later (``[send] retries``/``retry_after``)."""

    cause: str
    reason: str
    status: int | None
    retryable: bool


@dataclass(frozen=True)
class Note:
    """A line for the log: ``event`` at ``level`` with ``fields``."""

    event: str
    level: str = "info"
    fields: Mapping[str, object] = field(default_factory=dict)


Command = (Ring | Accept | Answer | Refuse | RejectOffer | Reinvite | Hangup | StartMedia | StartAudio | StopMedia
           | CloseMedia | Reroute | Dial | CallFailed | Note)


# ----------------------------------------------------------------------------- outbound outcomes

# cause -> what it means (README "Sending": the reasons a user sees)
FAILURE_CAUSES: Mapping[str, str] = {
    "busy": "the far end is busy",  # 486, 600
    "no_answer": "no answer",  # 408, 480, no response at all, or ring_timeout (we CANCEL)
    "not_found": "the number does not exist or is incomplete",  # 404, 484
    "forbidden": "the trunk refused the call",  # 403
    "auth_failed": "the trunk did not accept our credentials",  # 401/407 after our credentials
    "not_acceptable": "the far end refused our media offer",  # 488 (and 415)
    "server_error": "the trunk or far end had a server error",  # 5xx
    "declined": "the far end declined the call",  # 603, 604, 606 and other 6xx
    "rejected": "the call was rejected",  # any other 3xx/4xx
    "unreachable": "the trunk could not be reached",  # transport error
    "no_t38": "T.38 was not negotiated",  # answered, but no T.38 (refused, not offered in time)
    "remote_hangup": "the far end hung up before T.38",
    "shutdown": "the gateway shut down",
    "bad_target": "the call could not be placed",  # the UA refused the Dial (bad URI)
}
# Issue 12: busy, no answer and 5xx are retried; so are a trunk we could not reach and
# an attempt our own shutdown interrupted (the job is retried from the start).
RETRYABLE_CAUSES = frozenset({"busy", "no_answer", "server_error", "unreachable", "shutdown"})


def dial_failure(status: int | None, reason: str = "") -> CallFailed:
    """The :class:`CallFailed` for an INVITE that ended with ``status`` (the UA's
    ``CallTerminated``; ``reason`` "transport error" when no status could be had)."""
    if reason == "transport error":
        cause = "unreachable"
    elif status in (486, 600):
        cause = "busy"
    elif status in (408, 480) or status is None:
        cause = "no_answer"
    elif status in (404, 484):
        cause = "not_found"
    elif status == 403:
        cause = "forbidden"
    elif status in (401, 407):
        cause = "auth_failed"
    elif status in (415, 488):
        cause = "not_acceptable"
    elif 500 <= status < 600:
        cause = "server_error"
    elif status >= 600:
        cause = "declined"
    else:
        cause = "rejected"
    return failure(cause, status)


def failure(cause: str, status: int | None = None, detail: str = "") -> CallFailed:
    text = FAILURE_CAUSES[cause]
    if status is not None:
        text += f" (SIP {status})"
    if detail:
        text += f": {detail}"
    return CallFailed(cause, text, status, cause in RETRYABLE_CAUSES)


# ----------------------------------------------------------------------------- the table


class State(enum.Enum):
    NEW = "new"  # created, the INVITE not seen yet
    RINGING = "ringing"  # 180 sent, answering after answer_after
    RINGING_REFUSE = "ringing, then 503"  # shutdown began while ringing
    ACCEPTING = "accepting"  # Accept issued, the port is being opened
    CANCELLED = "cancelled"  # the caller left while the port was being opened
    AUDIO_ANSWERED = "audio answered"  # 2xx with G.711 sent, no ACK yet
    AUDIO = "audio"  # on G.711, waiting for T.38 (our re-INVITE or the peer's)
    REINVITING = "reinviting"  # our T.38 re-INVITE in flight
    T38_OFFERED = "t38 offered"  # delayed offer: our T.38 offer in the 2xx, the answer comes in the ACK
    T38 = "t38"  # T.38 media running: the fax
    DIALING = "dialing"  # outbound: our INVITE sent, no final response yet
    CANCELLING = "cancelling"  # outbound: we gave up (ring_timeout, shutdown); waiting for the INVITE to end
    MEDIA_ENDING = "media ending"  # the dialog is over; waiting for the fax side to finish
    DONE = "done"


class Input(enum.Enum):
    OFFERED = "InviteReceived"
    ANSWER_NOW = "answer_after elapsed"  # timer
    SHUTDOWN = "shutdown began"
    MEDIA_READY = "port opened"
    MEDIA_UNAVAILABLE = "no port"
    ESTABLISHED = "CallEstablished"
    PEER_OFFER = "MediaChanged(needs_answer)"
    PEER_ANSWER = "MediaChanged(answer)"
    REINVITE_FAILED = "ReinviteFailed"
    REFRESHED = "SessionRefreshed"
    REINVITE_NOW = "t38_reinvite_after elapsed"  # timer
    T38_WAIT_OVER = "no T.38 in time"  # timer
    PHASE_B = "T.30 phase B"
    FAX_ENDED = "the fax side ended"
    ENDED = "CallTerminated"
    ANSWER_FAILED = "Answer could not be sent"
    REINVITE_NOT_SENT = "Reinvite could not be sent"
    DIAL = "dial()"
    PROGRESSED = "CallProgressed"
    ANSWERED = "CallAnswered"
    NO_ANSWER = "ring_timeout elapsed"  # timer
    DIAL_NOT_SENT = "Dial could not be sent"


class Timer(enum.Enum):
    ANSWER = Input.ANSWER_NOW
    REINVITE = Input.REINVITE_NOW
    T38_WAIT = Input.T38_WAIT_OVER
    RING = Input.NO_ANSWER


@dataclass(frozen=True)
class Transition:
    handler: str  # name of a CallControl method: (now, payload) -> commands [, state]
    next_state: State | None  # None: stay in the state


def _t(handler: str, state: State | None = None) -> Transition:
    return Transition(handler, state)


S, I = State, Input  # noqa: E741 (I is Input, as in sip.transaction)

# Rows every answered, not yet ended call shares.
_LIVE: dict[Input, Transition] = {
    I.PEER_OFFER: _t("_peer_offer"),  # to T38 when it offers T.38
    I.REFRESHED: _t("_refreshed"),
    I.FAX_ENDED: _t("_hang_up", S.DONE),
    I.ENDED: _t("_dialog_ended", S.MEDIA_ENDING),
}
_WAITING_FOR_T38: dict[Input, Transition] = {
    **_LIVE,
    I.T38_WAIT_OVER: _t("_no_t38_in_time", S.MEDIA_ENDING),
}

TABLE: dict[State, dict[Input, Transition]] = {
    S.NEW: {
        I.OFFERED: _t("_offered", S.ACCEPTING),  # or RINGING, or DONE (refused)
        I.DIAL: _t("_dial", S.DIALING),
    },
    S.DIALING: {
        I.PROGRESSED: _t("_progressed"),
        I.ANSWERED: _t("_answered"),  # to T38, AUDIO, or DONE (no usable media in the answer)
        I.ENDED: _t("_dial_ended", S.DONE),
        I.NO_ANSWER: _t("_ring_timeout", S.CANCELLING),
        I.SHUTDOWN: _t("_shutdown_dialing", S.CANCELLING),
        I.DIAL_NOT_SENT: _t("_dial_not_sent", S.DONE),
    },
    S.CANCELLING: {
        # RFC 3261 9.1: a 2xx crossing our CANCEL is ACKed and BYEd by the UA itself.
        I.ENDED: _t("_cancelled", S.DONE),
    },
    S.RINGING: {
        I.ANSWER_NOW: _t("_accept", S.ACCEPTING),
        I.SHUTDOWN: _t("_nothing", S.RINGING_REFUSE),
        I.ENDED: _t("_cancelled_while_ringing", S.DONE),
    },
    S.RINGING_REFUSE: {
        I.ANSWER_NOW: _t("_refuse_shutting_down", S.DONE),
        I.ENDED: _t("_cancelled_while_ringing", S.DONE),
    },
    S.ACCEPTING: {
        I.MEDIA_READY: _t("_answer"),  # to T38, AUDIO_ANSWERED, T38_OFFERED, or DONE (488)
        I.MEDIA_UNAVAILABLE: _t("_no_port", S.DONE),
        I.ENDED: _t("_nothing", S.CANCELLED),
    },
    S.CANCELLED: {
        I.MEDIA_READY: _t("_close_media", S.DONE),
        I.MEDIA_UNAVAILABLE: _t("_nothing", S.DONE),
    },
    S.AUDIO_ANSWERED: {
        **_WAITING_FOR_T38,
        I.ESTABLISHED: _t("_established_on_audio", S.AUDIO),
        I.ANSWER_FAILED: _t("_gone_before_answer", S.DONE),
    },
    S.AUDIO: {
        **_WAITING_FOR_T38,
        I.REINVITE_NOW: _t("_reinvite", S.REINVITING),
        I.REINVITE_FAILED: _t("_reinvite_refused", S.MEDIA_ENDING),
    },
    S.REINVITING: {
        **_WAITING_FOR_T38,
        I.PEER_ANSWER: _t("_peer_answered", S.T38),  # or MEDIA_ENDING: no T.38 in it
        I.REINVITE_FAILED: _t("_reinvite_refused", S.MEDIA_ENDING),
        I.REINVITE_NOT_SENT: _t("_reinvite_not_sent", S.MEDIA_ENDING),
    },
    S.T38_OFFERED: {
        **_WAITING_FOR_T38,
        I.ESTABLISHED: _t("_established"),
        I.PEER_ANSWER: _t("_peer_answered", S.T38),  # or MEDIA_ENDING: no T.38 in it
        I.ANSWER_FAILED: _t("_gone_before_answer", S.DONE),
    },
    S.T38: {
        **_LIVE,
        I.ESTABLISHED: _t("_established"),
        I.PEER_ANSWER: _t("_peer_answered"),  # a repeated negotiation re-points the media
        I.PHASE_B: _t("_phase_b"),
        I.ANSWER_FAILED: _t("_gone_before_answer", S.DONE),
        # Our re-INVITE lost a glare to the peer's T.38 one, which we accepted: T.38 stays.
        I.REINVITE_FAILED: _t("_reinvite_superseded"),
    },
    S.MEDIA_ENDING: {
        I.FAX_ENDED: _t("_nothing", S.DONE),
    },
    S.DONE: {},
}

# Which timers may keep running in a state; entering a state drops the others.
TIMERS_BY_STATE: dict[State, frozenset[Timer]] = {
    S.RINGING: frozenset({Timer.ANSWER}),
    S.DIALING: frozenset({Timer.RING}),
    S.RINGING_REFUSE: frozenset({Timer.ANSWER}),
    S.AUDIO_ANSWERED: frozenset({Timer.T38_WAIT}),
    S.AUDIO: frozenset({Timer.T38_WAIT, Timer.REINVITE}),
    S.REINVITING: frozenset({Timer.T38_WAIT}),
    S.T38_OFFERED: frozenset({Timer.T38_WAIT}),
}

del S, I

Handled = list[Command] | tuple[list[Command], State]


# ----------------------------------------------------------------------------- the core


class CallControl:
    """One call's control: inbound (:meth:`offered`) or outbound (:meth:`dial`).  Feed it
    with the methods below; each returns the commands to carry out, in order.  ``next_deadline()`` / ``handle_timer(now)`` as in
    ``sip.transaction``."""

    def __init__(self, settings: CallSettings, *, sdp_session_id: int) -> None:
        self.settings = settings
        self.sdp_session_id = sdp_session_id
        self.state = State.NEW
        self.facts: CallFacts | None = None
        self.route: RouteChoice | None = None
        self.local: LocalMedia | None = None
        self.sip_source_host = ""
        self.offer: sdpmod.SessionDescription | None = None
        self.sdp_version = 0
        self.reinvite_sent = False
        self.media: T38Session | None = None
        self.audio: AudioSession | None = None  # the audio fax leg, once started
        self.outbound = False
        self.target: DialTarget | None = None
        self.progress: list[int] = []  # provisional statuses seen (outbound)
        self._giving_up: CallFailed | None = None
        self._armed: dict[Timer, float] = {}

    def __repr__(self) -> str:
        return f"<CallControl {self.state.value}>"

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    # -- inputs ---------------------------------------------------------------

    def offered(self, event: InviteReceived, load: Load, now: float) -> list[Command]:
        """A new INVITE (``InviteReceived``), with the gateway's load at that moment."""
        return self._apply(Input.OFFERED, now, (event, load))

    def dial(self, target: DialTarget, host: str, port: int, now: float) -> list[Command]:
        """Place an outbound call to ``target``; ``host``/``port``: the UDPTL port the edge
        opened for it, as advertised in our SDP.  Returns ``[Note, Dial]``."""
        return self._apply(Input.DIAL, now, (target, host, port))

    def sip_event(self, event: object, now: float) -> list[Command]:
        """Any later ``sip.ua`` event of this call."""
        if isinstance(event, CallProgressed):
            return self._apply(Input.PROGRESSED, now, event)
        if isinstance(event, CallAnswered):
            return self._apply(Input.ANSWERED, now, event)
        if isinstance(event, CallEstablished):
            return self._apply(Input.ESTABLISHED, now, event)
        if isinstance(event, MediaChanged):
            return self._apply(Input.PEER_OFFER if event.needs_answer else Input.PEER_ANSWER, now, event)
        if isinstance(event, ReinviteFailed):
            return self._apply(Input.REINVITE_FAILED, now, event)
        if isinstance(event, SessionRefreshed):
            return self._apply(Input.REFRESHED, now, event)
        if isinstance(event, CallTerminated):
            return self._apply(Input.ENDED, now, event)
        return []

    def media_ready(self, host: str, port: int, now: float) -> list[Command]:
        """The port for :class:`Accept` is open: ``host`` is the address we advertise."""
        return self._apply(Input.MEDIA_READY, now, (host, port))

    def media_unavailable(self, reason: str, now: float) -> list[Command]:
        """No port could be opened for :class:`Accept`."""
        return self._apply(Input.MEDIA_UNAVAILABLE, now, reason)

    def phase_b(self, tsi: str, now: float) -> list[Command]:
        """T.30 phase B named the sender (before any page was confirmed)."""
        return self._apply(Input.PHASE_B, now, tsi)

    def fax_ended(self, now: float) -> list[Command]:
        """The fax side is over (T.30 ended, failed, or never started)."""
        return self._apply(Input.FAX_ENDED, now, None)

    def shutdown_started(self, now: float) -> list[Command]:
        return self._apply(Input.SHUTDOWN, now, None)

    def command_failed(self, command: Command, error: str, now: float) -> list[Command]:
        """The UA refused a command (``LocalProtocolError``: e.g. the caller left)."""
        if isinstance(command, Answer) and command.first:
            return self._apply(Input.ANSWER_FAILED, now, error)
        if isinstance(command, Reinvite):
            return self._apply(Input.REINVITE_NOT_SENT, now, error)
        if isinstance(command, Dial):
            return self._apply(Input.DIAL_NOT_SENT, now, error)
        return []

    # -- timers ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return min(self._armed.values()) if self._armed else None

    def armed_timers(self) -> dict[str, float]:
        return {timer.name: deadline for timer, deadline in self._armed.items()}

    def handle_timer(self, now: float) -> list[Command]:
        """Fire every timer due at ``now``; a stale call does nothing."""
        commands: list[Command] = []
        while True:
            due = [t for t, deadline in self._armed.items() if deadline <= now]
            if not due:
                return commands
            timer = min(due, key=lambda t: self._armed[t])
            del self._armed[timer]
            commands += self._apply(timer.value, now, None)

    def _arm(self, timer: Timer, deadline: float) -> None:
        self._armed[timer] = deadline

    # -- engine ---------------------------------------------------------------

    def _apply(self, event: Input, now: float, payload: Any) -> list[Command]:
        transition = TABLE[self.state].get(event)
        if transition is None:
            return []  # does not matter in this state (a late or repeated event)
        handled: Handled = getattr(self, transition.handler)(now, payload)
        if isinstance(handled, tuple):
            commands, state = handled
        else:
            commands, state = handled, transition.next_state or self.state
        if state is not self.state:
            keep = TIMERS_BY_STATE.get(state, frozenset())
            self._armed = {t: d for t, d in self._armed.items() if t in keep}
            self.state = state
        return commands

    def _next_version(self) -> int:
        self.sdp_version += 1
        return self.sdp_version

    def _local(self) -> LocalMedia:
        assert self.local is not None, "no port yet"
        return self.local

    def _latching(self) -> str:
        trunk = self.facts.trunk if self.facts is not None else ""
        return self.settings.trunk_latching.get(trunk) or self.settings.media_latching

    def _start_audio(self, remote: sdpmod.SessionDescription, chosen: bytes | sdpmod.SessionDescription
                     ) -> list[Command]:
        """With ``audio_fallback``: the fax runs as G.711 from now on (and moves to T.38 if
        that is negotiated later).  Without it, the audio leg carries nothing."""
        if not self.settings.audio_fallback:
            return []
        try:
            answer = sdpmod.parse_sdp(chosen) if isinstance(chosen, bytes) else chosen
        except SipParseError:
            return []
        audio = negotiation.audio_session(remote, answer, sip_source_host=self.sip_source_host,
                                          media_latching=self._latching())
        if audio is None:
            return [Note("audio_fax_not_possible", "warning", {"reason": "no G.711 in the answer"})]
        first = self.audio is None
        self.audio = audio
        return [Note("audio_fax_selected" if first else "audio_fax_repointed",
                     fields={"media": audio.media, "remote": f"{audio.remote[0]}:{audio.remote[1]}"}),
                StartAudio(audio)]

    def _on_audio(self, note: Note) -> tuple[list[Command], State] | None:
        """The T.38 attempt failed but the fax is running as audio: stay on it."""
        if self.audio is None or self.media is not None:
            return None
        return [note], State.AUDIO

    def _start(self, answer: T38Answer) -> StartMedia:
        self.media = negotiation.t38_session(answer, sip_source_host=self.sip_source_host,
                                             media_latching=self._latching())
        return StartMedia(self.media)

    def _fail(self, reason: str, *notes: Note, cause: str = "no_t38",
              status: int | None = None) -> tuple[list[Command], State]:
        """Give up on the call: hang up, and stop the media (or, for an outbound call whose
        media never ran, report :class:`CallFailed` and be done)."""
        if self.outbound and self.media is None and self.audio is None:
            return [*notes, failure(cause, status, reason), Note("sip_hangup_sent"), Hangup()], State.DONE
        return [*notes, StopMedia(reason, failed=True), Note("sip_hangup_sent"), Hangup()], State.MEDIA_ENDING

    # -- handlers (return commands, or (commands, state)) ---------------------

    def _nothing(self, now: float, payload: Any) -> list[Command]:
        return []

    def _offered(self, now: float, payload: tuple[InviteReceived, Load]) -> Handled:
        event, load = payload
        facts = self.facts = facts_of_invite(event, self.settings.trunk_hosts)
        self.sip_source_host = event.source.host
        who = {"did": facts.did, "caller": facts.caller}
        refusal = admission_refusal(load)
        if refusal is not None:
            return self._refuse(503, refusal, level="warning", who=who, retry_after=load.retry_after or None)
        route = self.route = self.settings.route_at_invite(facts)
        if route.reject:
            return self._refuse(603, f"routes[{route.index}] rejects", who=who)
        try:
            offer = self.offer = sdpmod.parse_sdp(event.offer) if event.offer else None
        except SipParseError as exc:
            return self._refuse(488, f"bad SDP: {exc}")
        if offer is not None and not negotiation.offers_t38(offer) and not negotiation.offers_audio(offer):
            return self._refuse(488, "no T.38 or G.711 offered")
        if self.settings.answer_after > 0:
            # Ring first (some PBXs and carriers expect it, and it gives a CANCEL room).
            self._arm(Timer.ANSWER, now + self.settings.answer_after)
            return [Ring(), Note("call_ringing", fields={**who, "answer_after": self.settings.answer_after})], \
                State.RINGING
        return self._accept(now, None)

    def _refuse(self, status: int, reason: str, level: str = "info", *, who: Mapping[str, str] | None = None,
                retry_after: int | None = None) -> tuple[list[Command], State]:
        fields: dict[str, object] = dict(who or {})
        if retry_after is not None:
            fields["retry_after"] = retry_after
        return [Note("call_refused", level, {"reason": reason, "status": status, **fields}),
                Refuse(status, reason, retry_after)], State.DONE

    def _refuse_shutting_down(self, now: float, payload: Any) -> Handled:
        return self._refuse(503, "shutting down")

    def _accept(self, now: float, payload: Any) -> list[Command]:
        assert self.facts is not None and self.route is not None
        offer = self.offer
        kind = ("none (delayed offer)" if offer is None else "t38" if negotiation.offers_t38(offer) else "audio")
        return [Accept(self.facts, self.route, kind)]

    def _cancelled_while_ringing(self, now: float, event: CallTerminated) -> list[Command]:
        return [Note("call_cancelled_while_ringing", fields={"reason": event.reason})]

    def _no_port(self, now: float, reason: str) -> Handled:
        return self._refuse(503, reason, level="error")

    def _close_media(self, now: float, payload: Any) -> list[Command]:
        return [Note("call_gone_before_answer"), CloseMedia()]

    def _answer(self, now: float, payload: tuple[str, int]) -> Handled:
        host, port = payload
        self.local = LocalMedia(host, port, self.sdp_session_id, self.settings.local_t38)
        offer = self.offer
        try:
            if offer is None:
                # RFC 3261 13.2.1: an INVITE without SDP gets our offer in the 2xx and the
                # caller's answer in the ACK (MediaChanged(needs_answer=False)).  A fax
                # gateway offers T.38 straight away.
                self._arm(Timer.T38_WAIT, now + self.settings.t38_wait)
                return [Answer(negotiation.offer_t38(self.local, self._next_version()), first=True)], \
                    State.T38_OFFERED
            if negotiation.offers_t38(offer):
                answer = negotiation.answer_t38(offer, self.local, self._next_version())
                return [Answer(answer.sdp, first=True), self._start(answer)], State.T38
            self._arm(Timer.T38_WAIT, now + self.settings.t38_wait)
            sdp = negotiation.answer_audio(offer, self.local, self._next_version())
            return [Answer(sdp, first=True), *self._start_audio(offer, sdp)], State.AUDIO_ANSWERED
        except RemoteProtocolError as exc:
            self._armed.clear()
            commands, state = self._refuse(488, str(exc))
            return [CloseMedia(), *commands], state

    def _gone_before_answer(self, now: float, error: str) -> list[Command]:
        # The caller gave up (CANCEL) while we were taking a port: the media never ran.
        return [Note("call_gone_before_answer", fields={"error": error}), CloseMedia()]

    def _established(self, now: float, payload: Any) -> list[Command]:
        return [Note("sip_call_established", fields={"t38": self.state is State.T38})]

    def _established_on_audio(self, now: float, payload: Any) -> list[Command]:
        after = self.settings.t38_reinvite_after
        if after >= 0:
            self._arm(Timer.REINVITE, now + after)
        return [Note("sip_call_established", fields={"t38": False})]

    def _reinvite(self, now: float, payload: Any) -> list[Command]:
        self.reinvite_sent = True
        return [Note("t38_reinvite_sent"), Reinvite(negotiation.offer_t38(self._local(), self._next_version()))]

    def _reinvite_not_sent(self, now: float, error: str) -> Handled:
        staying = self._on_audio(Note("t38_reinvite_not_sent", "warning", {"error": error, "media": "audio"}))
        return staying or self._fail(f"could not re-INVITE to T.38: {error}")

    def _reinvite_refused(self, now: float, event: ReinviteFailed) -> Handled:
        staying = self._on_audio(Note("t38_reinvite_refused", "warning", {
            "status": event.status, "reason": event.reason, "media": "audio (the fax goes on as G.711)"}))
        if staying is not None:
            return staying
        return self._fail(f"the peer refused our T.38 re-INVITE ({event.status} {event.reason})",
                          Note("t38_reinvite_refused", "warning", {"status": event.status, "reason": event.reason}),
                          status=event.status)

    def _reinvite_superseded(self, now: float, event: ReinviteFailed) -> list[Command]:
        return [Note("t38_reinvite_superseded", fields={"status": event.status, "reason": event.reason})]

    def _peer_offer(self, now: float, event: MediaChanged) -> Handled:
        try:
            remote = sdpmod.parse_sdp(event.remote_sdp)
        except SipParseError as exc:
            return [Note("bad_remote_sdp", "warning", {"error": str(exc)}), RejectOffer(488, f"bad SDP: {exc}")]
        try:
            if negotiation.offers_t38(remote):
                answer = negotiation.answer_t38(remote, self._local(), self._next_version())
                return [Note("peer_reinvite", fields={"to": "t38"}), Answer(answer.sdp), self._start(answer)], State.T38
            # Back to audio (typically after the fax): accept; the fax side ends by T.30.
            # On an audio fax leg (no T.38 yet) the new address and codec are followed.
            sdp = negotiation.answer_audio(remote, self._local(), self._next_version())
            repoint = self._start_audio(remote, sdp) if self.audio is not None and self.media is None else []
            return [Note("peer_reinvite", fields={"to": "audio"}), Answer(sdp), *repoint]
        except RemoteProtocolError as exc:
            return [Note("peer_reinvite_refused", "warning", {"error": str(exc)}), RejectOffer(488, str(exc))]

    def _peer_answered(self, now: float, event: MediaChanged) -> Handled:
        try:
            answer = negotiation.t38_answered(sdpmod.parse_sdp(event.remote_sdp))
        except SipParseError as exc:
            return [Note("bad_remote_sdp", "warning", {"error": str(exc)})], self.state
        if answer is None:
            staying = self._on_audio(Note("t38_reinvite_answered_without_t38", "warning", {"media": "audio"}))
            return staying or self._fail("the peer answered our T.38 re-INVITE without T.38")
        note = Note("t38_reinvite_accepted" if self.reinvite_sent else "t38_answer_in_ack")
        return [note, self._start(answer)]

    def _refreshed(self, now: float, payload: Any) -> list[Command]:
        return [Note("sip_session_refreshed", "debug")]

    def _no_t38_in_time(self, now: float, payload: Any) -> Handled:
        if self.audio is not None and self.media is None:
            # The fax runs as audio; its own T.30 timers (and max_call_seconds) bound it.
            return [Note("t38_not_negotiated", fields={"seconds": self.settings.t38_wait,
                                                       "media": self.audio.media})], self.state
        return self._fail(f"no T.38 negotiated within {self.settings.t38_wait:.0f} s of answering")

    def _phase_b(self, now: float, tsi: str) -> list[Command]:
        if self.outbound:
            return []  # an outbound fax is not routed: its job says where it is archived
        assert self.facts is not None and self.route is not None
        # The trunk is the one the INVITE came in on: without it every ``trunk =`` rule
        # would fall through to a later one (another folder, webhook and secret).
        choice = self.settings.route_after_phase_b(CallFacts(self.facts.did, self.facts.caller, self.facts.trunk,
                                                             tsi=tsi))
        if choice.index == self.route.index or choice.reject:
            return []
        self.route = choice
        return [Reroute(choice, tsi)]

    def _hang_up(self, now: float, payload: Any) -> list[Command]:
        return [Note("sip_hangup_sent"), Hangup()]

    def _dialog_ended(self, now: float, event: CallTerminated) -> Handled:
        note = Note("sip_call_ended", fields={"reason": event.reason, "status": event.status})
        if self.outbound and self.media is None and self.audio is None:
            # The far end hung up (or the dialog failed) while still on audio.
            cause = "remote_hangup" if event.reason == "remote hangup" else "no_t38"
            return [note, failure(cause, None, event.reason)], State.DONE
        return [note, StopMedia(event.reason, failed=False)]

    # -- outbound handlers ----------------------------------------------------

    def _dial(self, now: float, payload: tuple[DialTarget, str, int]) -> list[Command]:
        target, host, port = payload
        self.outbound = True
        self.target = target
        self.facts = CallFacts(did=target.number or user_of(target.uri), caller=target.from_user or "",
                               trunk=target.trunk)
        self.local = LocalMedia(host, port, self.sdp_session_id, self.settings.local_t38)
        if self.settings.initial_offer == "t38":
            offer, sdp = "t38", negotiation.offer_t38(self.local, self._next_version())
        else:
            offer, sdp = "audio", negotiation.offer_audio(self.local, self._next_version())
        self._arm(Timer.RING, now + self.settings.ring_timeout)
        return [Note("call_dialing", fields={"uri": target.uri, "trunk": target.trunk, "offer": offer}),
                Dial(target.uri, sdp, proxy=target.proxy or None, from_user=target.from_user,
                     from_domain=target.from_domain, credentials=target.credentials, offer=offer)]

    def _dial_not_sent(self, now: float, error: str) -> list[Command]:
        return [Note("call_not_placed", "warning", {"error": error}), failure("bad_target", None, error)]

    def _progressed(self, now: float, event: CallProgressed) -> list[Command]:
        self.progress.append(event.status)
        return [Note("call_progress", fields={"status": event.status, "reason": event.reason,
                                              "early_media": bool(event.sdp)})]

    def _answered(self, now: float, event: CallAnswered) -> Handled:
        self.sip_source_host = event.call.peer.host
        try:
            answer = sdpmod.parse_sdp(event.answer)
        except SipParseError as exc:
            return self._fail(f"bad SDP in the 200: {exc}", cause="not_acceptable")
        t38 = negotiation.t38_answered(answer)
        if t38 is not None:
            return [Note("call_answered", fields={"media": "t38"}), self._start(t38)], State.T38
        if negotiation.offers_audio(answer) and self.settings.initial_offer != "t38":
            # RFC 3264: the answer mirrors our G.711 offer.  T.38 comes by re-INVITE:
            # ours after t38_reinvite_after, or the peer's at any time.
            self._arm(Timer.T38_WAIT, now + self.settings.t38_wait)
            after = self.settings.t38_reinvite_after
            if after >= 0:
                self._arm(Timer.REINVITE, now + after)
            return [Note("call_answered", fields={"media": "audio"}), *self._start_audio(answer, answer)], State.AUDIO
        return self._fail("the answer has no T.38 (nor the G.711 we offered)")

    def _dial_ended(self, now: float, event: CallTerminated) -> list[Command]:
        outcome = dial_failure(event.status, event.reason)
        return [Note("call_failed", "info", {"cause": outcome.cause, "status": event.status,
                                             "reason": event.reason, "retryable": outcome.retryable}), outcome]

    def _ring_timeout(self, now: float, payload: Any) -> list[Command]:
        return self._give_up(failure("no_answer", None, f"not answered within {self.settings.ring_timeout:.0f} s"))

    def _shutdown_dialing(self, now: float, payload: Any) -> list[Command]:
        return self._give_up(failure("shutdown"))

    def _give_up(self, outcome: CallFailed) -> list[Command]:
        # RFC 3261 9.1: the UA sends CANCEL once a provisional response came (at once if
        # one did); the INVITE then ends with 487, or with Timer B if nothing ever answered.
        self._giving_up = outcome
        return [Note("call_cancelled", fields={"cause": outcome.cause}), Hangup()]

    def _cancelled(self, now: float, event: CallTerminated) -> list[Command]:
        outcome = self._giving_up or failure("no_answer")
        return [Note("call_failed", "info", {"cause": outcome.cause, "status": event.status,
                                             "reason": event.reason, "retryable": outcome.retryable}), outcome]
