"""Fuzz: T.30 HDLC frames as T.38 delivers them, and the FIF readers (issue #14).

``T30Frame.from_wire``, ``parse_dis`` and ``parse_dcs`` may raise only the T.30
``RemoteProtocolError``; ``decode_ident`` and ``frames_in_ppr_map`` never raise.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from t38gw.t30.frames import Fcf, T30Frame
from tests.fuzz import TARGETS, check, fuzz_settings, mutants

T30 = TARGETS["t30"]


def test_seeds_are_the_frames_spandsp_sent():
    seeds = T30.seeds()
    assert len(seeds) >= 10
    names = {T30Frame.from_wire(frame).name for frame in seeds}
    assert {"DIS", "DCS", "CFR", "MCF"} <= names
    for frame in seeds:
        check(T30, frame)


@fuzz_settings(1000)
@given(mutants(T30, max_input=512))
def test_frame_mutants(data):
    check(T30, data)


@fuzz_settings(300)
@given(st.sampled_from(list(Fcf)), st.binary(max_size=80), st.booleans(), st.booleans())
def test_every_fcf_with_any_fif(fcf, fif, final, x_bit):
    check(T30, T30Frame(int(fcf), fif, final, x_bit).to_wire())


T30_RX = TARGETS["t30_rx"]


def test_receive_path_seeds_are_whole_spandsp_calls():
    seeds = T30_RX.seeds()
    assert len(seeds) >= 6
    for data in seeds:
        check(T30_RX, data)


@fuzz_settings(200)
@given(mutants(T30_RX, max_input=24 * 1024))
def test_receive_path_mutants(data):
    """UDPTL datagrams through UdptlReceiver into T30Receiver: nothing escapes."""
    check(T30_RX, data)
