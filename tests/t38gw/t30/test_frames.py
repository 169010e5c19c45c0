"""T.30 frames and identities: round trips, fuzzing, and SpanDSP's own frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t38gw.t30 import Fcf, RemoteProtocolError, T30Frame
from t38gw.t30.frames import REVERSE_BITS, decode_ident, encode_ident


def test_reverse_bits_is_an_involution_and_reverses():
    assert bytes(range(256)).translate(REVERSE_BITS).translate(REVERSE_BITS) == bytes(range(256))
    assert bytes([0x01, 0x80, 0x03, 0x13]).translate(REVERSE_BITS) == bytes([0x80, 0x01, 0xC0, 0xC8])


def test_fcf_values_follow_the_t30_bit_strings():
    # T.30 writes FCFs first transmitted bit first; the comment on each member is that string.
    import inspect

    source = inspect.getsource(Fcf)
    checked = 0
    for member in Fcf:
        line = next(text for text in source.splitlines() if text.strip().startswith(f"{member.name} = "))
        bits = line.split("[")[1].split("]")[0].replace(" ", "").replace("X", "0")
        assert int(bits[::-1], 2) == member.value, member.name
        checked += 1
    assert checked == len(Fcf)


def test_dis_on_the_wire_is_what_wireshark_shows():
    # Over T.38, octets are MSB first: a final DIS frame starts ff c8 01.
    assert T30Frame(Fcf.DIS, b"\x00\x00\x00").to_wire()[:3] == b"\xff\xc8\x01"


@given(st.integers(0, 255), st.binary(max_size=40), st.booleans())
@settings(deadline=None, max_examples=200)
def test_frame_round_trip(raw_fcf, fif, final):
    octets = bytes([0xFF, 0x13 if final else 0x03, raw_fcf]) + fif
    frame = T30Frame.from_octets(octets)
    assert frame.to_octets() == octets
    assert T30Frame.from_wire(frame.to_wire()) == frame


@given(st.binary(max_size=12))
@settings(deadline=None, max_examples=300)
def test_fuzzed_frames_parse_or_raise_remote_error(data):
    try:
        frame = T30Frame.from_octets(data)
    except RemoteProtocolError as exc:
        assert str(exc)
    else:
        assert frame.to_octets() == data


@pytest.mark.parametrize("octets", [b"", b"\xff", b"\xff\x13", b"\xfe\x13\x80", b"\xff\x12\x80"])
def test_short_or_wrong_header_is_refused(octets):
    with pytest.raises(RemoteProtocolError):
        T30Frame.from_octets(octets)


def test_x_bit_is_kept_apart_except_for_the_identification_group():
    dcs = T30Frame.from_octets(b"\xff\x13\x83")
    assert dcs.fcf == Fcf.DCS and dcs.x_bit
    dtc = T30Frame.from_octets(b"\xff\x13\x81")
    assert dtc.fcf == Fcf.DTC and not dtc.x_bit
    assert T30Frame.from_octets(b"\xff\x13\x80").fcf == Fcf.DIS


@given(st.text(alphabet="0123456789+ ", max_size=20))
@settings(deadline=None, max_examples=100)
def test_ident_round_trip(ident):
    fif = encode_ident(ident)
    assert len(fif) == 20
    assert decode_ident(fif) == ident.strip()


def test_ident_is_sent_last_character_first():
    # T.30 5.3.6.2.4: the last character of the number goes first, then the space fill
    # (TSB-85 MRGN01's CSI: 9C 1C ... D4 04 04 ... = "9876543210+" then spaces).
    assert encode_ident("+12") == b"21+" + b" " * 17


@pytest.mark.parametrize("bad", ["x" * 3, "1" * 21])
def test_ident_outside_table_3_is_refused(bad):
    with pytest.raises(ValueError):
        encode_ident(bad)


def test_decode_ident_never_fails_on_junk():
    assert decode_ident(bytes(range(0, 256, 13))) .isprintable()
