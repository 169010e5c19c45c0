"""Fuzz: UDPTL datagrams and the IFPs they carry, every T.38 version (issue #14).

``decode_udptl``/``decode_ifp`` may raise only ``MalformedPacket`` (a
``RemoteProtocolError``) for bad bytes; ``ifp_length`` never raises.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from udptl.codec import encode_udptl
from tests.fuzz import TARGETS, check, fuzz_settings, mutants
from tests.udptl.strategies import udptl_packets

UDPTL = TARGETS["udptl"]


def test_seeds_are_the_capture_and_spandsp_packets():
    seeds = UDPTL.seeds()
    assert len(seeds) >= 100
    for data in seeds:
        check(UDPTL, data)


@fuzz_settings(1500)
@given(mutants(UDPTL))
def test_udptl_mutants(data):
    check(UDPTL, data)


@fuzz_settings(200)
@given(udptl_packets(), st.data())
def test_structured_packets_cut_and_flipped(packet, data):
    raw = bytearray(encode_udptl(packet))
    if raw:
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] ^= data.draw(st.integers(1, 255))
    check(UDPTL, bytes(raw[: data.draw(st.integers(0, len(raw)))]))


@fuzz_settings(200)
@given(st.binary(max_size=300))
def test_udptl_bytes(data):
    check(UDPTL, data)
