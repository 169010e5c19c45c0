"""The receiver's transition table, driven over every (state, input) pair.

Each reachable state is reached by a real scripted sender (tests/t38gw/t30/scripted.py); from
a copy of it every input is fed: every FCF 0-255 as a final V.21 command (the ones T.30
does not define included), a garbled command, every ``Timer`` running out (armed at
``now`` whether or not the state arms it: a stray timer must be harmless), every
indicator, image data and its end, ECM frames good and bad, IFP loss, hang-up and flow
control.  After each input the engine must not have raised, must be in a state of the
table, and must either have a deadline (it will be woken) or have ended; and with time
let run it always ends, once.  Hypothesis then feeds random sequences of the same
inputs with random FIFs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t38gw.t30 import CallEnded, Compression, Fcf, Modulation, ReceiverConfig, State, T30Frame, T30Receiver
from t38gw.t30.dcs import build_dcs
from t38gw.t30.events import DocumentEnded, PageReceived, PageRejected, PhaseBCompleted, ProtocolEventLogged
from t38gw.t30.frames import PPS_NULL
from t38gw.t30.receiver import TRANSITIONS, Outcome, Signal
from t38gw.t30.timers import Timer
from tests.t38gw.t30 import scripted as s
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown

M = Modulation.V17_14400
PAGE = s.coded_page(bytes(216 * 40), 1728, 40, Compression.MH)
MMR_PAGE = s.coded_page(bytes(216 * 40), 1728, 40, Compression.MMR)
KNOWN_EVENTS = (CallEnded, PageReceived, PageRejected, ProtocolEventLogged, DocumentEnded, PhaseBCompleted)
_NON_ECM = [s.dcs_sequence(M), s.tcf(M)]
_ECM = [s.dcs_sequence(M, ecm=True, compression=Compression.MMR), s.tcf(M)]
_BLOCK = s.ecm_burst(M, {0: MMR_PAGE})
_DATA = [p for p in s.image_carrier(M, PAGE, chunk=20) if p.fields and p.fields[0].field_type is FieldType.T4_NON_ECM_DATA]

#: How to reach each state: packets to feed, then whether the receiver is made not ready.
REACH: dict[State, tuple[list[list[IfpPacket]], bool]] = {
    State.ANSWERING: ([], True),
    State.AWAIT_TCF: ([s.dcs_sequence(M)], True),
    State.TCF: ([s.dcs_sequence(M), [IfpPacket(M.indicator), *_DATA[:1]]], True),
    State.AWAIT_DCS: ([s.dcs_sequence(M), s.tcf(M, good=False)], True),
    State.AWAIT_PAGE: (_NON_ECM, True),
    State.NON_ECM_PAGE: ([*_NON_ECM, [IfpPacket(M.indicator), *_DATA[:3]]], True),
    State.AWAIT_POST_PAGE: ([*_NON_ECM, s.image_carrier(M, PAGE)], True),
    State.AWAIT_DCN: ([*_NON_ECM, s.image_carrier(M, PAGE), s.control(s.frame(Fcf.EOP))], True),
    State.ECM_BLOCK: ([*_ECM, _BLOCK[:-4]], True),
    State.RECEIVER_NOT_READY: ([*_ECM, _BLOCK, s.pps(PPS_NULL, 0, 0, 1)], False),
    State.ENDED: ([s.control(s.frame(Fcf.DCN))], True),
}


def _reach(state: State) -> s.Driver:
    engine = T30Receiver(ReceiverConfig(local_ident="1"))
    driver = s.Driver(engine)
    driver.wait(6.0)
    steps, ready = REACH[state]
    if not ready:
        engine.set_receiver_ready(False, driver.now)
    for packets in steps:
        driver.feed(packets)
    assert engine.state is state, f"script for {state} reached {engine.state}"
    return driver


_REACHED: dict[State, s.Driver] = {}


def reached(state: State) -> s.Driver:
    """A fresh copy of an engine brought to ``state`` (reached once, then copied)."""
    if state not in _REACHED:
        _REACHED[state] = _reach(state)
    return copy.deepcopy(_REACHED[state])


def _fif_for(fcf: int) -> bytes:
    if fcf in (Fcf.DCS, Fcf.DTC, Fcf.DIS):
        return build_dcs(M)
    if fcf in (Fcf.PPS, Fcf.EOR):
        return bytes([PPS_NULL, 0, 0, 0])
    return b""


def _command(fcf: int, fif: bytes) -> Callable[[s.Driver], None]:
    return lambda d: d.feed(s.control(T30Frame(fcf, fif, x_bit=True)))


def _timer(timer: Timer) -> Callable[[s.Driver], None]:
    def fire(d: s.Driver) -> None:
        d.now += 0.01
        if d.engine.state is State.ENDED:
            return  # nothing is armed after the end
        d.engine._deadlines.arm(timer, d.now)  # this timer runs out now, armed or not
        d.events += d.engine.handle_timer(d.now)
        d.sent += d.engine.ifps_to_send(d.now)
    return fire


def _packets(packets: list[IfpPacket]) -> Callable[[s.Driver], None]:
    return lambda d: d.feed(packets)


def _call(name: str, *args: object) -> Callable[[s.Driver], None]:
    def run(d: s.Driver) -> None:
        d.now += 0.01
        d.events += getattr(d.engine, name)(*args, d.now)
    return run


INDICATORS = [*T30Indicator, Unknown(T30Indicator, 20)]
INPUTS: dict[str, Callable[[s.Driver], None]] = {
    **{f"fcf 0x{n:02X}": _command(n, _fif_for(n)) for n in range(256)},
    "garbled command": _packets(s.control(s.frame(Fcf.DCS, build_dcs(M)), fcs_ok=False)),
    "non-final frame alone": _packets(s.control(s.frame(Fcf.TSI, b"1", final=False))),
    **{f"timer {t.name}": _timer(t) for t in Timer},
    **{f"indicator {i}": _packets([IfpPacket(i)]) for i in INDICATORS},
    "image data": _packets(_DATA[:2]),
    "image carrier": _packets(s.image_carrier(M, PAGE)),
    "image sig-end": _packets([IfpPacket(M.data_type, (DataField(FieldType.T4_NON_ECM_SIG_END),))]),
    "ecm frame": _packets(_BLOCK[1:3]),
    "ecm frame bad fcs": _packets(s.ecm_burst(M, {1: MMR_PAGE[:64]}, bad=frozenset({1}))[1:3]),
    "ecm block": _packets(_BLOCK),
    "ecm sig-end": _packets([IfpPacket(M.data_type, (DataField(FieldType.HDLC_SIG_END),))]),
    "v21 sig-end": _packets([IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_SIG_END),))]),
    "unknown data type": _packets([IfpPacket(Unknown(T30Data, 15), (DataField(FieldType.HDLC_DATA, b"\x01"),))]),
    "ifp loss": _call("ifps_lost", 3),
    "hang up": _call("hang_up"),
    "not ready": _call("set_receiver_ready", False),
    "ready": _call("set_receiver_ready", True),
}


def check_live(driver: s.Driver) -> None:
    engine = driver.engine
    assert engine.state in TRANSITIONS
    assert all(isinstance(e, KNOWN_EVENTS) for e in driver.events)
    assert engine.state is State.ENDED or engine.next_deadline() is not None, engine.state
    assert len([e for e in driver.events if isinstance(e, CallEnded)]) <= 1


def check_ends(driver: s.Driver) -> None:
    engine = driver.engine
    engine.set_receiver_ready(True, driver.now)  # else RR polls could go on for T5 only
    driver.wait(300.0)
    driver.flush()
    assert engine.state is State.ENDED and engine.finished and engine.next_deadline() is None
    assert len([e for e in driver.events if isinstance(e, CallEnded)]) == 1


def test_every_state_has_a_row_and_every_transition_names_states():
    assert set(TRANSITIONS) == set(State)
    for state, row in TRANSITIONS.items():
        for key, (handler, declared) in row.items():
            assert isinstance(key, Fcf | Timer | Signal), (state, key)
            targets = {declared} if isinstance(declared, State) else declared
            assert targets and all(isinstance(t, State) for t in targets), (state, key)
            assert callable(handler)
    # A command is only looked up in states that read commands; the fast-carrier states
    # first take their CARRIER_CUT transition to one of those.
    for state in (State.TCF, State.NON_ECM_PAGE, State.ECM_BLOCK):
        assert not any(isinstance(k, Fcf) for k in TRANSITIONS[state])
        _, declared = TRANSITIONS[state][Signal.CARRIER_CUT]
        assert isinstance(declared, State) and Fcf.DCN in TRANSITIONS[declared]


@pytest.mark.parametrize("state", list(REACH), ids=lambda st: st.value)
def test_every_input_from_every_state(state):
    for name, feed in INPUTS.items():
        driver = reached(state)
        feed(driver)
        check_live(driver)
        check_ends(driver)
        assert driver.engine.ifp_received(IfpPacket(T30Indicator.CED), driver.now + 1) == [], name


def test_a_handler_cannot_pick_a_state_the_table_does_not_name():
    driver = reached(State.AWAIT_PAGE)
    with pytest.raises(Exception, match="not in the transition table"):
        driver.engine._apply(Outcome(State.AWAIT_DCN, then=Timer.T2), frozenset({State.AWAIT_PAGE}))
    assert driver.engine.state is State.AWAIT_PAGE


inputs = st.sampled_from(sorted(INPUTS))
commands = st.builds(lambda fcf, fif, final, x: _packets(s.control(T30Frame(fcf, fif, final=final, x_bit=x))),
                     st.integers(0, 255), st.binary(max_size=40), st.booleans(), st.booleans())


@given(st.sampled_from(list(REACH)),
       st.lists(st.tuples(st.one_of(inputs.map(INPUTS.__getitem__), commands), st.floats(0, 8)), max_size=8))
@settings(deadline=None, max_examples=300)
def test_any_sequence_of_inputs_from_any_state(state, steps):
    driver = reached(state)
    for feed, pause in steps:
        feed(driver)
        check_live(driver)
        driver.wait(pause)
        check_live(driver)
    check_ends(driver)
