"""Hypothesis drives the engine from every state with arbitrary IFPs: nothing escapes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from t38gw.t30 import (
    CallEnded,
    Compression,
    Fcf,
    Modulation,
    PageReceived,
    ProtocolEventLogged,
    ReceiverConfig,
    State,
    T30Frame,
    T30Receiver,
)
from t38gw.t30.events import DocumentEnded, PageRejected, PhaseBCompleted
from tests.t38gw.t30 import scripted as s
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown

PAGE = s.coded_page(bytes(216 * 8), 1728, 8, Compression.MH)
MMR_PAGE = s.coded_page(bytes(216 * 8), 1728, 8, Compression.MMR)


def script(name: str) -> list[list]:
    """Steps (lists of packets) that bring a fresh engine to a given state."""
    m = Modulation.V17_14400
    non_ecm = [s.dcs_sequence(m), s.tcf(m)]
    ecm = [s.dcs_sequence(m, ecm=True, compression=Compression.MMR), s.tcf(m)]
    block = s.ecm_burst(m, {0: MMR_PAGE})
    return {
        "answering": [],
        "await_tcf": [s.dcs_sequence(m)],
        "await_page": non_ecm,
        "non_ecm_page": non_ecm + [s.image_carrier(m, PAGE, chunk=20)[:-1]],  # data, no sig-end yet
        "await_post_page": non_ecm + [s.image_carrier(m, PAGE)],
        "await_dcn": non_ecm + [s.image_carrier(m, PAGE), s.control(s.frame(Fcf.EOP))],
        "ecm_block": ecm + [block[:-4]],
        "ecm_post": ecm + [block],
        "ecm_ppr": ecm + [block, s.pps(0, 0, 0, 3)],
    }[name]


fcfs = st.sampled_from(list(Fcf)).map(int) | st.integers(0, 255)
data_types = st.sampled_from(list(T30Data)) | st.builds(Unknown, st.just(T30Data), st.integers(0, 20))
field_types = st.sampled_from(list(FieldType)) | st.builds(Unknown, st.just(FieldType), st.integers(0, 20))


@st.composite
def ifps(draw):
    kind = draw(st.integers(0, 4))
    if kind == 0:
        indicator = draw(st.sampled_from(list(T30Indicator)) | st.builds(Unknown, st.just(T30Indicator), st.integers(0, 9)))
        return [IfpPacket(indicator)]
    if kind == 1:  # a V.21 control frame, good or bad
        fcf = draw(fcfs)
        frame = T30Frame(fcf, draw(st.binary(max_size=40)), final=draw(st.booleans()), x_bit=True)
        return s.control(frame, fcs_ok=draw(st.booleans()))
    if kind == 2:  # an ECM frame on the image modem
        number = draw(st.integers(0, 255))
        return s.ecm_burst(Modulation.V17_14400, {number: draw(st.binary(max_size=300))})
    if kind == 3:  # image data of any kind
        return s.image_carrier(draw(st.sampled_from(list(Modulation))), draw(st.binary(max_size=300)))
    fields = draw(st.lists(st.builds(DataField, field_types, st.binary(max_size=20)), max_size=3))
    return [IfpPacket(draw(data_types), tuple(fields) if fields else draw(st.sampled_from([None, ()])))]


KNOWN_EVENTS = (CallEnded, PageReceived, PageRejected, ProtocolEventLogged, DocumentEnded, PhaseBCompleted)


@given(
    st.sampled_from(["answering", "await_tcf", "await_page", "non_ecm_page", "await_post_page", "await_dcn",
                     "ecm_block", "ecm_post", "ecm_ppr"]),
    st.lists(st.tuples(ifps(), st.floats(0, 8)), max_size=6),
)
@settings(deadline=None, max_examples=250)
def test_any_input_in_any_state(start, steps):
    engine = T30Receiver(ReceiverConfig(local_ident="1"))
    driver = s.Driver(engine)
    driver.wait(6.0)
    for packets in script(start):
        driver.feed(packets)
    for packets, pause in steps:
        driver.feed(packets)
        driver.wait(pause)
    assert all(isinstance(e, KNOWN_EVENTS) for e in driver.events)
    ended = [e for e in driver.events if isinstance(e, CallEnded)]
    assert len(ended) <= 1
    # Whatever happened, the engine ends by its timers within T1 + T2 + T5, and then stays quiet.
    driver.wait(200.0)
    driver.flush()
    assert engine.state is State.ENDED and engine.finished and engine.next_deadline() is None
    assert len([e for e in driver.events if isinstance(e, CallEnded)]) == 1
    assert engine.ifp_received(IfpPacket(T30Indicator.CED), driver.now + 1) == []


def test_each_script_reaches_its_state():
    for name in ("answering", "await_tcf", "await_page", "non_ecm_page", "await_post_page", "await_dcn",
                 "ecm_block", "ecm_post", "ecm_ppr"):
        engine = T30Receiver(ReceiverConfig(local_ident="1"))
        driver = s.Driver(engine)
        driver.wait(6.0)
        for packets in script(name):
            driver.feed(packets)
        expected = {"ecm_post": State.AWAIT_POST_PAGE, "ecm_ppr": State.AWAIT_PAGE}.get(name) or State(name)
        assert engine.state is expected, name


def test_unexpected_input_is_a_logged_event_per_state():
    for start in ("answering", "await_page", "await_dcn", "ecm_post"):
        engine = T30Receiver()
        driver = s.Driver(engine)
        driver.wait(6.0)
        for packets in script(start):
            driver.feed(packets)
        before = len(driver.events)
        driver.feed(s.control(s.frame(Fcf.CFR)))
        new = driver.events[before:]
        assert any(isinstance(e, ProtocolEventLogged) and "CFR" in e.what for e in new), start
