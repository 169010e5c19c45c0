"""SIP transactions (RFC 3261 section 17, with the RFC 6026 "Accepted" states), sans-IO.

How it works
------------
A transaction is one request and the responses to it.  There are four kinds: client and
server, INVITE and non-INVITE.  Each kind is a state machine written as a table,
``TABLES[kind][state][input] -> Transition(next_state, actions)``: the inputs are what
can happen to a transaction (a response of some class arrives, the TU hands down a
response, a timer fires, the transport fails), the actions are small named side
effects (send the stored request again, back a timer off, pass a response up).  A
missing key means the input is not allowed there: for something the *peer* did that is
a stray we absorb silently (RFC 3261 17.1.3/17.2.3 say such messages are simply not
delivered), for something *our TU* did it is a :class:`LocalProtocolError`.

Timers are outputs.  Each transaction holds its armed timers as ``{name: deadline}``;
``next_deadline()`` is the earliest of them and ``handle_timer(now)`` fires every timer
that is due.  Re-arming a timer replaces its deadline and leaving a state drops the
timers that do not belong to the new state (``TIMERS_BY_STATE``), so a superseded
timer can never fire: calling ``handle_timer`` at a stale deadline is a no-op.

Nothing here touches a socket or a clock.  Every method that can produce output
returns a list of outputs: :class:`SendMessage` (give this message to the transport,
towards the transaction's ``destination``) and the TU events
:class:`ResponseReceived`, :class:`AckReceived`, :class:`TransactionTimedOut`,
:class:`TransportFailed` and :class:`TransactionTerminated`.

:class:`TransactionLayer` keeps the live transactions, matches incoming messages to
them (RFC 3261 17.1.3 for responses, 17.2.3 for requests) and forgets transactions
once they terminate.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sip.address import Address
from sip.errors import LocalProtocolError
from sip.header_values import Via
from sip.message import Headers, Request, Response

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 8.1.1.7: branch ids of RFC 3261 elements start with it


@dataclass(frozen=True)
class TimerSettings:
    """RFC 3261 17.1.1.1 / Table 4 base values, in seconds."""

    t1: float = 0.5  # round-trip estimate
    t2: float = 4.0  # longest retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # longest time a message stays in the network


class Kind(enum.Enum):
    CLIENT_INVITE = "client-invite"
    CLIENT_NON_INVITE = "client-non-invite"
    SERVER_INVITE = "server-invite"
    SERVER_NON_INVITE = "server-non-invite"


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"  # RFC 6026 7.1/7.2
    TERMINATED = "terminated"


class Input(enum.Enum):
    # from the wire
    RESPONSE_1XX = "1xx"
    RESPONSE_2XX = "2xx"
    RESPONSE_3XX_6XX = "3xx-6xx"
    REQUEST_AGAIN = "request retransmission"
    ACK = "ACK"
    # from the TU (server side)
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_3XX_6XX = "TU sends 3xx-6xx"
    # from the transport
    TRANSPORT_ERROR = "transport error"
    # timers (RFC 3261 Table 4, RFC 6026 Table 1)
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


class Act(enum.Enum):
    SEND_REQUEST = "send the stored request"
    SEND_RESPONSE = "store and send the TU's response"
    RESEND_RESPONSE = "send the stored response again"
    SEND_ACK = "send ACK for the non-2xx final response"  # RFC 3261 17.1.1.3
    PASS_UP = "pass the response to the TU"
    PASS_ACK_UP = "pass the ACK to the TU"
    REPORT_TIMEOUT = "report a timeout to the TU"
    REPORT_TRANSPORT_ERROR = "report a transport error to the TU"
    ARM_A = "arm A at T1"
    BACK_OFF_A = "double A"
    ARM_B = "arm B"
    ARM_D = "arm D"
    ARM_E = "arm E at T1"
    BACK_OFF_E = "double E up to T2"
    ARM_E_AT_T2 = "arm E at T2"
    ARM_F = "arm F"
    ARM_G = "arm G at T1"
    BACK_OFF_G = "double G up to T2"
    ARM_H = "arm H"
    ARM_I = "arm I"
    ARM_J = "arm J"
    ARM_K = "arm K"
    ARM_L = "arm L"
    ARM_M = "arm M"


@dataclass(frozen=True)
class Transition:
    next_state: State
    actions: tuple[Act, ...] = ()


def _t(state: State, *actions: Act) -> Transition:
    return Transition(state, actions)


S, I, A = State, Input, Act  # noqa: E741 (the table reads as S/I/A; I is Input)

# RFC 3261 17.1.1.2 (Figure 5) with RFC 6026 7.2 (a 2xx moves to Accepted, further 2xx
# responses go to the TU so it can ACK each of them).
_CLIENT_INVITE = {
    S.CALLING: {
        I.TIMER_A: _t(S.CALLING, A.SEND_REQUEST, A.BACK_OFF_A),
        I.TIMER_B: _t(S.TERMINATED, A.REPORT_TIMEOUT),
        I.RESPONSE_1XX: _t(S.PROCEEDING, A.PASS_UP),
        I.RESPONSE_2XX: _t(S.ACCEPTED, A.PASS_UP, A.ARM_M),
        I.RESPONSE_3XX_6XX: _t(S.COMPLETED, A.SEND_ACK, A.PASS_UP, A.ARM_D),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.PROCEEDING: {
        I.RESPONSE_1XX: _t(S.PROCEEDING, A.PASS_UP),
        I.RESPONSE_2XX: _t(S.ACCEPTED, A.PASS_UP, A.ARM_M),
        I.RESPONSE_3XX_6XX: _t(S.COMPLETED, A.SEND_ACK, A.PASS_UP, A.ARM_D),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.COMPLETED: {
        # 17.1.1.2: retransmitted final responses are ACKed again but not passed up.
        I.RESPONSE_3XX_6XX: _t(S.COMPLETED, A.SEND_ACK),
        I.TIMER_D: _t(S.TERMINATED),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.ACCEPTED: {
        I.RESPONSE_2XX: _t(S.ACCEPTED, A.PASS_UP),
        I.TIMER_M: _t(S.TERMINATED),
    },
}

# RFC 3261 17.1.2.2 (Figure 6).
_CLIENT_NON_INVITE = {
    S.TRYING: {
        I.TIMER_E: _t(S.TRYING, A.SEND_REQUEST, A.BACK_OFF_E),
        I.TIMER_F: _t(S.TERMINATED, A.REPORT_TIMEOUT),
        I.RESPONSE_1XX: _t(S.PROCEEDING, A.PASS_UP),
        I.RESPONSE_2XX: _t(S.COMPLETED, A.PASS_UP, A.ARM_K),
        I.RESPONSE_3XX_6XX: _t(S.COMPLETED, A.PASS_UP, A.ARM_K),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.PROCEEDING: {
        # 17.1.2.2: in Proceeding, E is reset to T2 each time it fires.
        I.TIMER_E: _t(S.PROCEEDING, A.SEND_REQUEST, A.ARM_E_AT_T2),
        I.TIMER_F: _t(S.TERMINATED, A.REPORT_TIMEOUT),
        I.RESPONSE_1XX: _t(S.PROCEEDING, A.PASS_UP),
        I.RESPONSE_2XX: _t(S.COMPLETED, A.PASS_UP, A.ARM_K),
        I.RESPONSE_3XX_6XX: _t(S.COMPLETED, A.PASS_UP, A.ARM_K),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.COMPLETED: {
        I.TIMER_K: _t(S.TERMINATED),
    },
}

# RFC 3261 17.2.1 (Figure 7) with RFC 6026 7.1 (a 2xx moves to Accepted; the TU
# retransmits its 2xx through the transaction until the ACK, RFC 3261 13.3.1.4).
_SERVER_INVITE = {
    S.PROCEEDING: {
        I.REQUEST_AGAIN: _t(S.PROCEEDING, A.RESEND_RESPONSE),
        I.SEND_1XX: _t(S.PROCEEDING, A.SEND_RESPONSE),
        I.SEND_2XX: _t(S.ACCEPTED, A.SEND_RESPONSE, A.ARM_L),
        I.SEND_3XX_6XX: _t(S.COMPLETED, A.SEND_RESPONSE, A.ARM_G, A.ARM_H),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.COMPLETED: {
        I.REQUEST_AGAIN: _t(S.COMPLETED, A.RESEND_RESPONSE),
        I.ACK: _t(S.CONFIRMED, A.ARM_I),
        I.TIMER_G: _t(S.COMPLETED, A.RESEND_RESPONSE, A.BACK_OFF_G),
        I.TIMER_H: _t(S.TERMINATED, A.REPORT_TIMEOUT),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.CONFIRMED: {
        I.REQUEST_AGAIN: _t(S.CONFIRMED),
        I.ACK: _t(S.CONFIRMED),
        I.TIMER_I: _t(S.TERMINATED),
    },
    S.ACCEPTED: {
        # RFC 6026 7.1: INVITE retransmissions are absorbed, the TU's own 2xx
        # retransmissions go out, an ACK that matches is passed up.
        I.REQUEST_AGAIN: _t(S.ACCEPTED),
        I.SEND_2XX: _t(S.ACCEPTED, A.SEND_RESPONSE),
        I.ACK: _t(S.ACCEPTED, A.PASS_ACK_UP),
        I.TIMER_L: _t(S.TERMINATED),
    },
}

# RFC 3261 17.2.2 (Figure 8).
_SERVER_NON_INVITE = {
    S.TRYING: {
        I.REQUEST_AGAIN: _t(S.TRYING),
        I.SEND_1XX: _t(S.PROCEEDING, A.SEND_RESPONSE),
        I.SEND_2XX: _t(S.COMPLETED, A.SEND_RESPONSE, A.ARM_J),
        I.SEND_3XX_6XX: _t(S.COMPLETED, A.SEND_RESPONSE, A.ARM_J),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.PROCEEDING: {
        I.REQUEST_AGAIN: _t(S.PROCEEDING, A.RESEND_RESPONSE),
        I.SEND_1XX: _t(S.PROCEEDING, A.SEND_RESPONSE),
        I.SEND_2XX: _t(S.COMPLETED, A.SEND_RESPONSE, A.ARM_J),
        I.SEND_3XX_6XX: _t(S.COMPLETED, A.SEND_RESPONSE, A.ARM_J),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
    S.COMPLETED: {
        I.REQUEST_AGAIN: _t(S.COMPLETED, A.RESEND_RESPONSE),
        I.TIMER_J: _t(S.TERMINATED),
        I.TRANSPORT_ERROR: _t(S.TERMINATED, A.REPORT_TRANSPORT_ERROR),
    },
}

TABLES: dict[Kind, dict[State, dict[Input, Transition]]] = {
    Kind.CLIENT_INVITE: _CLIENT_INVITE,
    Kind.CLIENT_NON_INVITE: _CLIENT_NON_INVITE,
    Kind.SERVER_INVITE: _SERVER_INVITE,
    Kind.SERVER_NON_INVITE: _SERVER_NON_INVITE,
}

INITIAL_STATE = {
    Kind.CLIENT_INVITE: S.CALLING,
    Kind.CLIENT_NON_INVITE: S.TRYING,
    Kind.SERVER_INVITE: S.PROCEEDING,  # RFC 3261 17.2.1: a server INVITE tx starts in Proceeding
    Kind.SERVER_NON_INVITE: S.TRYING,
}

# Which timers may keep running in a state; entering a state drops the others.
TIMERS_BY_STATE: dict[Kind, dict[State, frozenset[Input]]] = {
    Kind.CLIENT_INVITE: {
        S.CALLING: frozenset({I.TIMER_A, I.TIMER_B}),
        S.PROCEEDING: frozenset(),
        S.COMPLETED: frozenset({I.TIMER_D}),
        S.ACCEPTED: frozenset({I.TIMER_M}),
    },
    Kind.CLIENT_NON_INVITE: {
        S.TRYING: frozenset({I.TIMER_E, I.TIMER_F}),
        S.PROCEEDING: frozenset({I.TIMER_E, I.TIMER_F}),
        S.COMPLETED: frozenset({I.TIMER_K}),
    },
    Kind.SERVER_INVITE: {
        S.PROCEEDING: frozenset(),
        S.COMPLETED: frozenset({I.TIMER_G, I.TIMER_H}),
        S.CONFIRMED: frozenset({I.TIMER_I}),
        S.ACCEPTED: frozenset({I.TIMER_L}),
    },
    Kind.SERVER_NON_INVITE: {
        S.TRYING: frozenset(),
        S.PROCEEDING: frozenset(),
        S.COMPLETED: frozenset({I.TIMER_J}),
    },
}

_WIRE_INPUTS = frozenset(
    {I.RESPONSE_1XX, I.RESPONSE_2XX, I.RESPONSE_3XX_6XX, I.REQUEST_AGAIN, I.ACK}
)

del S, I, A


# ----------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class SendMessage:
    """Hand ``message`` to the transport, towards ``transaction.destination``."""

    transaction: Transaction
    message: Request | Response


@dataclass(frozen=True)
class ResponseReceived:
    transaction: Transaction
    response: Response


@dataclass(frozen=True)
class AckReceived:
    transaction: Transaction
    ack: Request


@dataclass(frozen=True)
class TransactionTimedOut:
    """Timer B, F or H fired: the TU treats it like a 408 (RFC 3261 8.1.3.1)."""

    transaction: Transaction
    timer: str


@dataclass(frozen=True)
class TransportFailed:
    transaction: Transaction


@dataclass(frozen=True)
class TransactionTerminated:
    transaction: Transaction


# What a transaction (and the layer) hands the TU.
TxOutput = SendMessage | ResponseReceived | AckReceived | TransactionTimedOut | TransportFailed | TransactionTerminated


# ----------------------------------------------------------------------------- helpers


def response_input(status: int) -> Input:
    """The table input for a response status code."""
    if 100 <= status < 200:
        return Input.RESPONSE_1XX
    if 200 <= status < 300:
        return Input.RESPONSE_2XX
    return Input.RESPONSE_3XX_6XX


def _tu_input(status: int) -> Input:
    if 100 <= status < 200:
        return Input.SEND_1XX
    if 200 <= status < 300:
        return Input.SEND_2XX
    if 300 <= status < 700:
        return Input.SEND_3XX_6XX
    raise LocalProtocolError(f"status {status} is not a SIP status code")


def top_via(message: Request | Response) -> Via:
    vias = message.vias
    if not vias:
        raise LocalProtocolError("message has no Via")
    return vias[0]


def build_ack_for_error(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (RFC 3261 17.1.1.3).

    Request-URI, Call-ID, From, CSeq number and the top Via come from the INVITE, the
    To (with the tag the UAS chose) from the response, Route headers from the INVITE.
    """
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq[0]} ACK")
    return Request("ACK", request.uri, headers, b"")


# ----------------------------------------------------------------------------- transaction


class Transaction:
    """One SIP transaction.  Create through :class:`TransactionLayer` or directly.

    ``request`` is the request that opened it (parsed or built); ``destination`` is
    where its messages go (this class only hands it back); ``reliable`` says whether the transport is TCP/TLS, which turns off the
    retransmission timers and zeroes the wait timers (RFC 3261 17.1.1.2, 17.1.2.2,
    17.2.1, 17.2.2).
    """

    def __init__(
        self,
        kind: Kind,
        request: Request,
        destination: Address,
        *,
        reliable: bool,
        timers: TimerSettings = TimerSettings(),
    ) -> None:
        self.kind = kind
        self.request = request
        self.destination = destination
        self.reliable = reliable
        self.settings = timers
        self.state = INITIAL_STATE[kind]
        self.last_response: Response | None = None
        self.final_response: Response | None = None
        self._armed: dict[Input, float] = {}
        self._interval: dict[Input, float] = {}
        # Told about every newly armed deadline (the layer keeps a heap of them).
        self.on_armed: Callable[[Transaction, float], None] | None = None
        self.on_terminated: Callable[[Transaction], None] | None = None

    def __repr__(self) -> str:
        return f"<Transaction {self.kind.value} {self.request.method} {self.state.value}>"

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def branch(self) -> str:
        return top_via(self.request).branch or ""

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    # -- timers ---------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest armed timer, or None."""
        return min(self._armed.values()) if self._armed else None

    def armed_timers(self) -> dict[str, float]:
        """Timer name -> deadline, for tests and diagnostics."""
        return {timer.value: deadline for timer, deadline in self._armed.items()}

    def handle_timer(self, now: float) -> list[TxOutput]:
        """Fire every timer that is due at ``now``; stale calls do nothing."""
        outputs: list[TxOutput] = []
        while self.state is not State.TERMINATED:
            due = [t for t, deadline in self._armed.items() if deadline <= now]
            if not due:
                break
            timer = min(due, key=lambda t: self._armed[t])
            del self._armed[timer]
            outputs += self._apply(timer, now, None)
        return outputs

    # -- client side ----------------------------------------------------------

    def start(self, now: float) -> list[TxOutput]:
        """Send the request for the first time (client transactions only)."""
        if self.kind not in (Kind.CLIENT_INVITE, Kind.CLIENT_NON_INVITE):
            raise LocalProtocolError("only client transactions are started")
        outputs: list[TxOutput] = [SendMessage(self, self.request)]
        if self.kind is Kind.CLIENT_INVITE:
            if not self.reliable:
                self._run(Act.ARM_A, now)
            self._run(Act.ARM_B, now)
        else:
            if not self.reliable:
                self._run(Act.ARM_E, now)
            self._run(Act.ARM_F, now)
        return outputs

    def receive_response(self, response: Response, now: float) -> list[TxOutput]:
        """Feed a response that matched this client transaction."""
        return self._apply(response_input(response.status), now, response)

    # -- server side ----------------------------------------------------------

    def receive_request(self, request: Request, now: float) -> list[TxOutput]:
        """Feed a retransmitted request or the ACK that matched this server transaction."""
        kind = Input.ACK if request.method == "ACK" else Input.REQUEST_AGAIN
        return self._apply(kind, now, request)

    def send_response(self, response: Response, now: float) -> list[TxOutput]:
        """The TU's response to the request (server transactions only).

        Raises :class:`LocalProtocolError` when the state does not allow it (e.g. a
        second final response).
        """
        if self.kind not in (Kind.SERVER_INVITE, Kind.SERVER_NON_INVITE):
            raise LocalProtocolError("only server transactions send responses")
        return self._apply(_tu_input(response.status), now, response)

    # -- transport ------------------------------------------------------------

    def transport_failed(self, now: float) -> list[TxOutput]:
        """The transport could not deliver a message of this transaction (RFC 3261 17.1.4)."""
        return self._apply(Input.TRANSPORT_ERROR, now, None)

    # -- engine ---------------------------------------------------------------

    def _apply(self, event: Input, now: float, message: Request | Response | None) -> list[TxOutput]:
        if self.state is State.TERMINATED:
            return []
        transition = TABLES[self.kind][self.state].get(event)
        if transition is None:
            if event in _WIRE_INPUTS or event is Input.TRANSPORT_ERROR:
                return []  # a stray or late message: absorbed
            if event.name.startswith("TIMER_"):
                return []
            raise LocalProtocolError(
                f"{event.value} not allowed in a {self.kind.value} transaction in state {self.state.value}"
            )
        old_state = self.state
        self.state = transition.next_state
        if self.state is not old_state:
            keep = TIMERS_BY_STATE[self.kind].get(self.state, frozenset())
            self._armed = {t: d for t, d in self._armed.items() if t in keep}
        outputs: list[TxOutput] = []
        for act in transition.actions:
            outputs += self._run(act, now, message)
        if self.state is State.TERMINATED:
            self._armed.clear()
            outputs.append(TransactionTerminated(self))
            if self.on_terminated is not None:
                self.on_terminated(self)
        return outputs

    def _arm(self, timer: Input, now: float, delay: float) -> None:
        self._interval[timer] = delay
        self._armed[timer] = now + delay
        if self.on_armed is not None:
            self.on_armed(self, now + delay)

    def has_deadline(self, deadline: float) -> bool:
        """Whether some armed timer is due exactly at ``deadline`` (heap entry check)."""
        return deadline in self._armed.values()

    def _run(self, act: Act, now: float, message: Request | Response | None = None) -> list[TxOutput]:
        t1, t2, t4 = self.settings.t1, self.settings.t2, self.settings.t4
        reliable = self.reliable
        if act is Act.SEND_REQUEST:
            return [SendMessage(self, self.request)]
        if act is Act.SEND_RESPONSE:
            assert isinstance(message, Response)
            self.last_response = message
            if message.status >= 200 and self.final_response is None:
                self.final_response = message
            return [SendMessage(self, message)]
        if act is Act.RESEND_RESPONSE:
            return [SendMessage(self, self.last_response)] if self.last_response is not None else []
        if act is Act.SEND_ACK:
            assert isinstance(message, Response)
            return [SendMessage(self, build_ack_for_error(self.request, message))]
        if act is Act.PASS_UP:
            assert isinstance(message, Response)
            self.last_response = message
            if message.status >= 200 and self.final_response is None:
                self.final_response = message
            return [ResponseReceived(self, message)]
        if act is Act.PASS_ACK_UP:
            assert isinstance(message, Request)
            return [AckReceived(self, message)]
        if act is Act.REPORT_TIMEOUT:
            return [TransactionTimedOut(self, self._last_fired_name())]
        if act is Act.REPORT_TRANSPORT_ERROR:
            return [TransportFailed(self)]
        # timers
        if act is Act.ARM_A:
            self._arm(Input.TIMER_A, now, t1)
        elif act is Act.BACK_OFF_A:
            # 17.1.1.2: A doubles without a cap; B (64*T1) ends it.
            self._arm(Input.TIMER_A, now, self._interval[Input.TIMER_A] * 2)
        elif act is Act.ARM_B:
            self._arm(Input.TIMER_B, now, 64 * t1)
        elif act is Act.ARM_D:
            self._arm(Input.TIMER_D, now, 0.0 if reliable else max(32.0, 64 * t1))
        elif act is Act.ARM_E:
            self._arm(Input.TIMER_E, now, t1)
        elif act is Act.BACK_OFF_E:
            # 17.1.2.2: E doubles up to T2.
            self._arm(Input.TIMER_E, now, min(self._interval[Input.TIMER_E] * 2, t2))
        elif act is Act.ARM_E_AT_T2:
            self._arm(Input.TIMER_E, now, t2)
        elif act is Act.ARM_F:
            self._arm(Input.TIMER_F, now, 64 * t1)
        elif act is Act.ARM_G:
            if not reliable:
                self._arm(Input.TIMER_G, now, t1)
        elif act is Act.BACK_OFF_G:
            # 17.2.1: G doubles up to T2.
            self._arm(Input.TIMER_G, now, min(self._interval[Input.TIMER_G] * 2, t2))
        elif act is Act.ARM_H:
            self._arm(Input.TIMER_H, now, 64 * t1)
        elif act is Act.ARM_I:
            self._arm(Input.TIMER_I, now, 0.0 if reliable else t4)
        elif act is Act.ARM_J:
            self._arm(Input.TIMER_J, now, 0.0 if reliable else 64 * t1)
        elif act is Act.ARM_K:
            self._arm(Input.TIMER_K, now, 0.0 if reliable else t4)
        elif act is Act.ARM_L:
            self._arm(Input.TIMER_L, now, 64 * t1)
        elif act is Act.ARM_M:
            self._arm(Input.TIMER_M, now, 64 * t1)
        else:  # pragma: no cover - every Act is handled above
            raise AssertionError(act)
        return []

    def _last_fired_name(self) -> str:
        return {
            Kind.CLIENT_INVITE: "B",
            Kind.CLIENT_NON_INVITE: "F",
            Kind.SERVER_INVITE: "H",
            Kind.SERVER_NON_INVITE: "J",
        }[self.kind]


# ----------------------------------------------------------------------------- layer


# A transaction's key in the layer: client_key or server_key.
TxKey = tuple[object, ...]


def client_key(branch: str, method: str) -> TxKey:
    """RFC 3261 17.1.3: a response matches on the top Via branch and the CSeq method."""
    return ("client", branch, method)


def server_key(request: Request) -> TxKey:
    """RFC 3261 17.2.3: a request matches on branch, sent-by and method (ACK -> INVITE).

    Requests whose branch lacks the magic cookie come from RFC 2543 elements; for
    them the key is built from Call-ID, CSeq number, From tag and the top Via.
    """
    via = top_via(request)
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("server", branch, via.host.lower(), via.port, method)
    from_tag = request.from_.tag
    return ("server-2543", request.call_id, request.cseq[0], from_tag, str(via), method)


class TransactionLayer:
    """The set of live transactions of one UA, with RFC 3261 17.1.3/17.2.3 matching."""

    def __init__(self, timers: TimerSettings = TimerSettings()) -> None:
        self.timers = timers
        self._transactions: dict[TxKey, Transaction] = {}
        # (deadline, seq, tx), cleaned lazily: an entry whose tx no longer has that
        # deadline armed (fired, superseded, terminated, forgotten) is skipped.
        self._heap: list[tuple[float, int, Transaction]] = []
        self._live: set[int] = set()
        self._keys: dict[int, TxKey] = {}
        self._finished: list[Transaction] = []
        self._seq = itertools.count()

    def _track(self, tx: Transaction, key: TxKey) -> None:
        self._live.add(id(tx))
        self._keys[id(tx)] = key
        tx.on_armed = self._armed
        tx.on_terminated = self._terminated
        for deadline in tx.armed_timers().values():
            self._armed(tx, deadline)

    def _terminated(self, tx: Transaction) -> None:
        self._finished.append(tx)

    def _armed(self, tx: Transaction, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), tx))

    def _valid(self, entry: tuple[float, int, Transaction]) -> bool:
        deadline, _, tx = entry
        return id(tx) in self._live and not tx.terminated and tx.has_deadline(deadline)

    def __len__(self) -> int:
        return len(self._transactions)

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._transactions.values()))

    def start_client(self, request: Request, destination: Address, *, reliable: bool, now: float) -> tuple[Transaction, list[TxOutput]]:
        """Create a client transaction for ``request`` and send it."""
        kind = Kind.CLIENT_INVITE if request.method == "INVITE" else Kind.CLIENT_NON_INVITE
        if request.method == "ACK":
            raise LocalProtocolError("ACK is not sent in a client transaction")
        tx = Transaction(kind, request, destination, reliable=reliable, timers=self.timers)
        key = client_key(tx.branch, request.method)
        if key in self._transactions:
            raise LocalProtocolError(f"branch {tx.branch} already in use")
        self._transactions[key] = tx
        self._track(tx, key)
        return tx, tx.start(now)

    def create_server(self, request: Request, reply_to: Address, *, reliable: bool) -> Transaction:
        """Create the server transaction for a new request (not ACK)."""
        kind = Kind.SERVER_INVITE if request.method == "INVITE" else Kind.SERVER_NON_INVITE
        tx = Transaction(kind, request, reply_to, reliable=reliable, timers=self.timers)
        key = server_key(request)
        self._transactions[key] = tx
        self._track(tx, key)
        return tx

    def match_response(self, response: Response) -> Transaction | None:
        """The client transaction ``response`` belongs to, or None (a stray)."""
        vias = response.vias
        if not vias:
            return None
        return self._transactions.get(client_key(vias[0].branch or "", response.cseq[1]))

    def match_request(self, request: Request) -> Transaction | None:
        """The server transaction a retransmitted request (or an ACK for a non-2xx) belongs to."""
        return self._transactions.get(server_key(request))

    def find_server_invite(self, cancel: Request) -> Transaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2)."""
        key = server_key(cancel)
        return self._transactions.get(key[:-1] + ("INVITE",))

    def next_deadline(self) -> float | None:
        """The earliest timer of any live transaction, or None."""
        heap = self._heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        if len(heap) > 4 * len(self._transactions) + 64:
            self._heap = [entry for entry in heap if self._valid(entry)]
            heapq.heapify(self._heap)
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> list[TxOutput]:
        """Fire the due timers of every transaction; returns their outputs in order."""
        outputs: list[TxOutput] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, tx = heapq.heappop(self._heap)
            outputs += tx.handle_timer(now)
        self.collect()
        return outputs

    def discard(self, tx: Transaction) -> None:
        """Forget ``tx`` now (a request we could not even answer)."""
        self._forget(tx)

    def collect(self) -> None:
        """Forget the transactions that terminated since the last call."""
        finished, self._finished = self._finished, []
        for tx in finished:
            self._forget(tx)

    def _forget(self, tx: Transaction) -> None:
        key = self._keys.pop(id(tx), None)
        self._live.discard(id(tx))
        if key is not None and self._transactions.get(key) is tx:
            del self._transactions[key]
