"""DIS/DCS facsimile information fields (T.30 Table 2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from t38gw.t30 import Compression, Modulation, PaperWidth, RemoteProtocolError, Resolution
from t38gw.t30.dcs import (
    BIT_ECM,
    BIT_RECEIVE,
    BIT_T6,
    ReceiveCapabilities,
    announced_length,
    build_dcs,
    get_bit,
    parse_dcs,
)

RESOLUTIONS = [r for r in Resolution]


@given(
    st.sampled_from(list(Modulation)),
    st.sampled_from(RESOLUTIONS),
    st.sampled_from(list(PaperWidth)),
    st.sampled_from(list(Compression)),
    st.booleans(),
    st.sampled_from([64, 256]),
)
@settings(deadline=None, max_examples=200)
def test_dcs_round_trip(modulation, resolution, width, compression, ecm, frame_size):
    if compression is Compression.MMR and not ecm:
        compression = Compression.MR
    fif = build_dcs(modulation, resolution, width, compression, ecm=ecm, ecm_frame_size=frame_size)
    dcs = parse_dcs(fif)
    assert (dcs.modulation, dcs.resolution, dcs.paper_width, dcs.compression, dcs.ecm) == (
        modulation, resolution, width, compression, ecm)
    assert dcs.ecm_frame_size == (frame_size if ecm else 256)
    assert dcs.unsupported_bits == ()
    assert dcs.width_px == resolution.widths[width]


def test_modem_codes_are_table_2():
    # T.30 Table 2, DCS bits 11-14.
    codes = {m: tuple(int(get_bit(build_dcs(m), b)) for b in (11, 12, 13, 14)) for m in Modulation}
    assert codes[Modulation.V27TER_2400] == (0, 0, 0, 0)
    assert codes[Modulation.V29_9600] == (1, 0, 0, 0)
    assert codes[Modulation.V17_14400] == (0, 0, 0, 1)
    assert codes[Modulation.V17_7200] == (1, 1, 0, 1)


def test_extend_bits_limit_what_is_read():
    fif = bytearray(build_dcs(Modulation.V17_14400, Resolution.INCH_300_300))
    assert len(fif) == 6 and announced_length(bytes(fif)) == 6
    # Clear the extend bit of octet 3 (bit 24): octets 4 on are not there, 300x300 (bit 42) goes.
    fif[2] &= 0x7F
    assert announced_length(bytes(fif)) == 3
    assert parse_dcs(bytes(fif)).resolution is Resolution.R8_STANDARD


def test_mmr_without_ecm_is_flagged():
    fif = bytearray(build_dcs(Modulation.V17_14400, compression=Compression.MR))
    fif = bytearray(fif) + bytes(1)
    fif[2] |= 0x80
    fif[3] |= 1 << ((BIT_T6 - 1) & 7)
    dcs = parse_dcs(bytes(fif))
    assert dcs.compression is Compression.MR and BIT_T6 in dcs.unsupported_bits


@given(st.binary(max_size=20))
@settings(deadline=None, max_examples=300)
def test_fuzzed_dcs_parses_or_raises_remote_error(fif):
    try:
        dcs = parse_dcs(fif)
    except RemoteProtocolError:
        return
    assert dcs.width_px > 0


def test_our_dis_offers_what_we_can_take():
    fif = ReceiveCapabilities().dis_fif()
    assert get_bit(fif, BIT_RECEIVE) and get_bit(fif, BIT_ECM) and get_bit(fif, BIT_T6)
    assert all(get_bit(fif, b) for b in (11, 12, 14)) and not get_bit(fif, 13)  # V.27ter+V.29+V.17
    assert announced_length(fif) == len(fif)
    plain = ReceiveCapabilities(ecm=False, compressions=frozenset({Compression.MH}), modems=frozenset({"V.27ter"}))
    fif = plain.dis_fif()
    assert not get_bit(fif, BIT_ECM) and not get_bit(fif, BIT_T6) and not get_bit(fif, 16)
    assert [get_bit(fif, b) for b in (11, 12, 13, 14)] == [False, True, False, False]
