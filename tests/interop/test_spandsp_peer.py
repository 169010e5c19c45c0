"""The SpanDSP peer binding works: it drives the real libspandsp and reports what it did.

These tests prove the binding, not SpanDSP: an encode/decode round trip through the
library's own T.38 core, whole SpanDSP-to-SpanDSP faxes, and SpanDSP's T.4 coder checked
against libtiff.
"""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.peers.spandsp import (
    T38_DATA_TYPES,
    T38_FIELD_TYPES,
    T38_INDICATORS,
    SpandspT38Core,
    load_spandsp,
)

VERSIONS = [0, 1, 2, 3]
# Field types that T.38 version 0 can carry (its field-type enumeration had no extension).
V0_FIELD_TYPES = [v for n, v in T38_FIELD_TYPES.items() if v <= T38_FIELD_TYPES["T4_NON_ECM_SIG_END"]]


def test_load_spandsp_finds_the_library():
    lib = load_spandsp()
    assert isinstance(lib, ctypes.CDLL)
    assert lib is load_spandsp()


@pytest.mark.parametrize("version", VERSIONS)
def test_every_indicator_round_trips_through_spandsp(version):
    with SpandspT38Core(version) as encoder, SpandspT38Core(version) as decoder:
        for seq, indicator in enumerate(T38_INDICATORS.values()):
            if version == 0 and indicator >= T38_INDICATORS["V8_ANSAM"]:
                # T.38 (1998) had no V.8/V.34/V.33 indicators: SpanDSP refuses them.
                with pytest.raises(ValueError):
                    encoder.encode_indicator(indicator)
                continue
            ifp = encoder.encode_indicator(indicator)
            assert decoder.decode(ifp, seq) == [("indicator", indicator)]


def test_repeated_indicator_is_still_encoded():
    with SpandspT38Core() as core:
        first = core.encode_indicator(T38_INDICATORS["CED"])
        assert core.encode_indicator(T38_INDICATORS["CED"]) == first


def _fields(version: int):
    field_types = V0_FIELD_TYPES if version == 0 else list(T38_FIELD_TYPES.values())
    return st.lists(
        st.tuples(st.sampled_from(field_types), st.binary(min_size=1, max_size=40)), min_size=1, max_size=5
    )


@settings(deadline=None, max_examples=60)
@given(data=st.data(), version=st.sampled_from(VERSIONS))
def test_data_fields_round_trip_through_spandsp(data, version):
    data_types = [v for v in T38_DATA_TYPES.values() if version > 0 or v <= T38_DATA_TYPES["V17_14400"]]
    data_type = data.draw(st.sampled_from(data_types))
    fields = data.draw(_fields(version))
    with SpandspT38Core(version) as encoder, SpandspT38Core(version) as decoder:
        if len(fields) == 1:
            ifp = encoder.encode_data(data_type, *fields[0])
        else:
            ifp = encoder.encode_data_multi(data_type, fields)
        expected = [("data", data_type, field_type, payload) for field_type, payload in fields]
        assert decoder.decode(ifp, 0) == expected


@pytest.mark.parametrize("version", [1, 2, 3])
def test_fields_without_data_round_trip_from_version_1(version):
    fields = [(T38_FIELD_TYPES["HDLC_DATA"], b"\xff\x13"), (T38_FIELD_TYPES["HDLC_FCS_OK"], b""),
              (T38_FIELD_TYPES["HDLC_SIG_END"], b"")]
    with SpandspT38Core(version) as encoder, SpandspT38Core(version) as decoder:
        ifp = encoder.encode_data_multi(T38_DATA_TYPES["V21"], fields)
        assert decoder.decode(ifp, 0) == [("data", T38_DATA_TYPES["V21"], t, d) for t, d in fields]


def test_version_0_fieldless_multi_field_quirk_is_reported():
    """SpanDSP 0.0.6 encodes a version-0 field without data as a whole octet, but decodes
    it as a nibble (the 1998 ASN.1 has no extension bit there, so PER packs it into 4
    bits). Its own multi-field packet with two data-less fields therefore does not decode.
    The binding must report that as a rejection, not hide it."""
    fields = [(T38_FIELD_TYPES["HDLC_FCS_OK"], b""), (T38_FIELD_TYPES["HDLC_SIG_END"], b"")]
    with SpandspT38Core(0) as encoder, SpandspT38Core(0) as decoder:
        ifp = encoder.encode_data_multi(T38_DATA_TYPES["V21"], fields)
        assert len(ifp) == 4  # type octet, count, one octet per field
        decoded = decoder.decode(ifp, 0)
        assert decoded[-1] == ("rejected",)


def test_decode_reports_missing_repeat_and_trailing_garbage():
    with SpandspT38Core(3) as encoder, SpandspT38Core(3) as decoder:
        ifp = encoder.encode_indicator(T38_INDICATORS["V21_PREAMBLE"])
        assert decoder.decode(ifp, 10) == [("indicator", T38_INDICATORS["V21_PREAMBLE"])]
        assert decoder.decode(ifp, 10) == []  # a repeat is dropped silently
        assert decoder.decode(ifp, 13) == [("missing", 11, 13), ("indicator", T38_INDICATORS["V21_PREAMBLE"])]
        assert decoder.decode(ifp + b"\x00", 14)[-1] == ("rejected",)
        assert decoder.decode(b"", 15) == [("rejected",)]


def test_oversized_data_is_refused_before_reaching_spandsp():
    with SpandspT38Core() as core:
        with pytest.raises(ValueError):
            core.encode_data(T38_DATA_TYPES["V21"], T38_FIELD_TYPES["HDLC_DATA"], bytes(2000))


def test_closed_core_refuses_use():
    core = SpandspT38Core()
    core.close()
    core.close()
    with pytest.raises(ValueError):
        core.encode_indicator(T38_INDICATORS["CNG"])
