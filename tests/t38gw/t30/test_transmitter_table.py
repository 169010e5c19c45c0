"""The transmitter's transition table, driven over every (state, input) pair.

Each state is reached by feeding the engine real response frames (IFPs as a T.38 peer
sends them); from a copy of it every FCF 0-255 arrives as a final V.21 response, every
``Timer`` runs out (armed or not: a stray timer must be harmless), a garbled frame, IFP
loss and hang-up.  After each input the engine must not have raised, must be in a state
of the table and must have a deadline or have ended; with time let run it always ends,
exactly once.
"""

from __future__ import annotations

import copy
import random

import pytest

import imaging
from t38gw.t30 import CallEnded, Fcf, T30Frame
from t38gw.t30.dcs import ReceiveCapabilities
from t38gw.t30.ecm import PPR_MAP_OCTETS
from t38gw.t30.timers import Timer
from t38gw.t30.transmitter import TRANSITIONS, State, T30Transmitter, TransmitterConfig
from tests.t38gw.t30.pages import random_page
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator

PAGES = [imaging.Page(1728, 30, 204, 98, random_page(random.Random(5), 1728, 30))]
DIS = ReceiveCapabilities().dis_fif()
PPR_ALL = b"\xff" * PPR_MAP_OCTETS


class Driver:
    def __init__(self, engine: T30Transmitter) -> None:
        self.engine = engine
        self.now = 0.0
        self.events = list(engine.start(0.0))

    def run_until(self, t: float) -> None:
        for _ in range(100_000):  # bounded: an engine that never moves on fails, not hangs
            deadline = self.engine.next_deadline()
            if deadline is None or deadline > t:
                break
            self.now = max(self.now, deadline)
            self.events += self.engine.handle_timer(self.now)
            self.engine.ifps_to_send(self.now)
        self.now = max(self.now, t)
        self.engine.ifps_to_send(self.now)

    def respond(self, fcf: int, fif: bytes = b"", *, good: bool = True) -> None:
        """A V.21 response from the far end once our output is out."""
        self.run_until(max(self.now, (self.engine.next_deadline() or self.now) - 0.01, self._line_free()) + 0.1)
        wire = T30Frame(fcf, fif).to_wire()
        end = FieldType.HDLC_FCS_OK_SIG_END if good else FieldType.HDLC_FCS_BAD_SIG_END
        for packet in (IfpPacket(T30Indicator.V21_PREAMBLE), IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_DATA, wire),)),
                       IfpPacket(T30Data.V21, (DataField(end),)), IfpPacket(T30Indicator.NO_SIGNAL)):
            self.events += self.engine.ifp_received(packet, self.now)
        self.run_until(self.now + 0.01)

    def _line_free(self) -> float:
        queue = self.engine._outgoing
        return queue[-1].at if queue else self.now


def _engine(**config) -> Driver:
    return Driver(T30Transmitter(TransmitterConfig(local_ident="1", **config), PAGES))


def _reach(state: State) -> Driver:
    ecm = state in (State.AWAIT_PPS_RESPONSE, State.AWAIT_RR_RESPONSE, State.AWAIT_CTR, State.AWAIT_ERR)
    d = _engine(ecm=ecm, max_bit_rate=2400 if state is State.AWAIT_ERR else 14400)
    if state is State.AWAIT_DIS:
        return d
    if state is State.ENDED:
        d.respond(Fcf.DCN)
        return d
    d.respond(Fcf.DIS, DIS)
    if state is State.AWAIT_CFR:
        return d
    d.respond(Fcf.CFR)
    if state is State.AWAIT_RR_RESPONSE:
        d.respond(Fcf.RNR)
    if state in (State.AWAIT_CTR, State.AWAIT_ERR):
        for _ in range(4):
            d.respond(Fcf.PPR, PPR_ALL)
    return d


_REACHED: dict[State, Driver] = {}


def reached(state: State) -> Driver:
    if state not in _REACHED:
        driver = _reach(state)
        assert driver.engine.state is state, f"script for {state} reached {driver.engine.state}"
        _REACHED[state] = driver
    return copy.deepcopy(_REACHED[state])


def _check_alive(driver: Driver) -> None:
    engine = driver.engine
    assert engine.state in TRANSITIONS
    assert engine.state is State.ENDED or engine.next_deadline() is not None, engine.state
    driver.run_until(driver.now + 2000.0)
    assert engine.state is State.ENDED, f"never ended from {engine.state}"
    assert sum(isinstance(e, CallEnded) for e in driver.events) == 1


LIVE = [s for s in State if s is not State.IDLE]


def _fif(fcf: int) -> bytes:
    return {Fcf.DIS: DIS, Fcf.PPR: PPR_ALL}.get(fcf & 0xFE, b"\x00\x00\x00\x00")


@pytest.mark.parametrize("state", LIVE, ids=[s.value for s in LIVE])
def test_every_response_in_every_state(state: State) -> None:
    for fcf in range(256):
        driver = reached(state)
        driver.respond(fcf & 0xFE if fcf & 0x0E else fcf, _fif(fcf))
        _check_alive(driver)


@pytest.mark.parametrize("state", LIVE, ids=[s.value for s in LIVE])
def test_every_timer_garble_loss_and_hang_up_in_every_state(state: State) -> None:
    for timer in Timer:
        driver = reached(state)
        driver.engine._deadlines.arm(timer, driver.now)
        driver.events += driver.engine.handle_timer(driver.now)
        _check_alive(driver)
    driver = reached(state)
    driver.respond(Fcf.MCF, good=False)
    _check_alive(driver)
    driver = reached(state)
    driver.events += driver.engine.ifps_lost(3, driver.now)
    _check_alive(driver)
    driver = reached(state)
    driver.events += driver.engine.hang_up(driver.now)
    assert driver.engine.finished
    assert sum(isinstance(e, CallEnded) for e in driver.events) == 1
