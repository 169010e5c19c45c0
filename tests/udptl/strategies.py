"""Hypothesis strategies for IFP and UDPTL packets of every T.38 version."""

from __future__ import annotations

from hypothesis import strategies as st

from udptl.codec import FecInfo, UdptlPacket
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown

from tests.udptl.oracle import MAX_ORACLE_EXTENSION

VERSIONS = st.sampled_from([0, 1, 2, 3])

_ROOTS = {T30Indicator: 16, T30Data: 9, FieldType: 8}


def enum_values(kind: type, version: int) -> st.SearchStrategy:
    """Every value of ``kind`` that ``version`` can carry, plus Unknown extension values."""
    root = _ROOTS[kind]
    members = [member for member in kind if member < root or version > 0]
    if kind is FieldType and version == 0:
        return st.sampled_from(members)  # not extensible in the 1998 module
    first_unknown = 0 if version == 0 else len(kind) - root
    unknown = st.integers(first_unknown, MAX_ORACLE_EXTENSION).map(lambda index: Unknown(kind, index))
    return st.one_of(st.sampled_from(members), unknown)


def data_fields(version: int, *, max_items: int = 4, max_data: int = 64) -> st.SearchStrategy:
    """Data-Field items; only the last may be data-less (what encode_ifp accepts)."""
    with_data = st.builds(DataField, enum_values(FieldType, version), st.binary(min_size=1, max_size=max_data))
    last = st.one_of(with_data, st.builds(DataField, enum_values(FieldType, version)))
    return st.tuples(st.lists(with_data, max_size=max_items - 1), last, st.booleans()).map(
        lambda parts: tuple(parts[0]) + ((parts[1],) if parts[2] else ())
    )


def any_data_fields(version: int, *, max_items: int = 5) -> st.SearchStrategy:
    """Data-Field items with data-less ones anywhere (valid PER; for decoding only)."""
    item = st.builds(
        DataField, enum_values(FieldType, version), st.one_of(st.just(b""), st.binary(min_size=1, max_size=16))
    )
    return st.lists(item, max_size=max_items).map(tuple)


@st.composite
def ifp_packets(draw, version: int, *, encodable: bool = True) -> IfpPacket:
    kind = draw(st.sampled_from([T30Indicator, T30Data]))
    msg = draw(enum_values(kind, version))
    fields = draw(st.one_of(st.none(), data_fields(version) if encodable else any_data_fields(version)))
    return IfpPacket(msg, fields)


@st.composite
def versioned_ifp_packets(draw, *, encodable: bool = True) -> tuple[int, IfpPacket]:
    version = draw(VERSIONS)
    return version, draw(ifp_packets(version, encodable=encodable))


def udptl_packets(*, max_secondaries: int = 6, max_ifp: int = 120) -> st.SearchStrategy:
    ifp = st.binary(max_size=max_ifp)
    secondaries = st.builds(
        UdptlPacket, st.integers(0, 0xFFFF), ifp, st.lists(ifp, max_size=max_secondaries).map(tuple)
    )
    fec = st.builds(
        lambda seq, primary, info: UdptlPacket(seq, primary, fec=info),
        st.integers(0, 0xFFFF),
        ifp,
        st.builds(
            FecInfo,
            st.one_of(st.integers(0, 8), st.integers(-(2**40), 2**40)),
            st.lists(ifp, max_size=max_secondaries).map(tuple),
        ),
    )
    return st.one_of(secondaries, fec)
