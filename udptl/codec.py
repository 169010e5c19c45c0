"""ALIGNED PER (ITU-T X.691) codec for T.38 Annex A IFP packets and clause 9 UDPTL packets.

Hand-written for speed: the receive path decodes every datagram, and asn1tools (the
test oracle, see tests/udptl/) decodes about a tenth as many per second.

How the bits are laid out (T.38 Annex A ASN.1, ALIGNED PER):

* ``IFPPacket`` is a SEQUENCE without extension marker: one presence bit for
  ``data-field``, one bit choosing ``t30-indicator``/``t30-data``, then an extensible
  ENUMERATED: an extension bit and either the 4-bit root index (X.691 13.2) or a
  "normally small non-negative whole number" for the extension index (X.691 13.3,
  10.6).  ``Data-Field`` is a SEQUENCE OF with an octet-aligned length determinant
  (X.691 10.9, 20.6) followed by its items.
* Each Data-Field item is a SEQUENCE: a presence bit for ``field-data``, then
  ``field-type``.  In the 1998 module (T.38 version 0) field-type is *not* extensible:
  3 bits, so an item header is 4 bits.  From T.38 version 1 on (the 2002 module) it has
  an extension bit: 5 bits for root values, 9 for extension values.  ``field-data`` is
  OCTET STRING (SIZE (1..65535)): octet-aligned, a 16-bit constrained length (length - 1)
  and the octets (X.691 17.8, 10.9.3.3).
* Strict PER packs a data-less item into the bits right after the previous one.
  SpanDSP instead starts every item on an octet boundary (``c0022010`` where PER says
  ``c00221`` at version 0).  ``decode_ifp`` accepts both: the strict reading is tried
  first and the octet-per-item reading only when the strict one does not end exactly at
  the end of the packet.  ``encode_ifp`` only lets the last item be data-less, the one
  case where both readings give the same octets, so every deployed decoder reads us
  right.
* ``UDPTLPacket``: seq-number INTEGER (0..65535) in two octets, the primary IFP as an
  open type (length determinant + octets, X.691 10.2), then a two-way CHOICE bit
  followed by either ``secondary-ifp-packets`` (SEQUENCE OF open type) or ``fec-info``
  (an unconstrained INTEGER ``fec-npackets`` and a SEQUENCE OF OCTET STRING).  Length
  determinants of 16384 and more are fragmented (X.691 10.9.3.8); both directions
  handle that.

Padding bits are not checked on decode (X.691 says encoders write zeros; being lenient
costs nothing).  Every malformed input raises ``MalformedPacket`` and nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

from udptl.errors import LocalProtocolError, MalformedPacket
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown

__all__ = [
    "FecInfo",
    "UdptlPacket",
    "decode_ifp",
    "decode_udptl",
    "encode_ifp",
    "encode_udptl",
    "SUPPORTED_VERSIONS",
]

SUPPORTED_VERSIONS = (0, 1, 2, 3)

_INDICATOR_ROOT = 16  # no-signal .. v17-14400-long-training
_DATA_ROOT = 9  # v21 .. v17-14400
_FIELD_ROOT = 8  # hdlc-data .. t4-non-ecm-sig-end

_INDICATORS = tuple(T30Indicator)
_DATAS = tuple(T30Data)
_FIELDS = tuple(FieldType)
_FRAGMENT = 16384


# --------------------------------------------------------------------------- helpers


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise LocalProtocolError(f"T.38 version {version!r} is not one of {SUPPORTED_VERSIONS}")


def _read_length(data: bytes, pos: int) -> tuple[int, int, bool]:
    """Read an octet-aligned length determinant (X.691 10.9.3.6-8) at ``pos``.

    Returns (length, new position, more-fragments-follow).
    """
    if pos >= len(data):
        raise MalformedPacket("length determinant missing", offset=pos)
    first = data[pos]
    if first < 0x80:
        return first, pos + 1, False
    if first < 0xC0:
        if pos + 1 >= len(data):
            raise MalformedPacket("two-octet length determinant cut short", offset=pos)
        return ((first & 0x3F) << 8) | data[pos + 1], pos + 2, False
    multiplier = first & 0x3F
    if not 1 <= multiplier <= 4:
        raise MalformedPacket(f"bad length fragment multiplier {multiplier}", offset=pos)
    return multiplier * _FRAGMENT, pos + 1, True


def _read_octets(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a length-prefixed octet string (possibly fragmented) starting at ``pos``."""
    length, pos, more = _read_length(data, pos)
    end = pos + length
    if end > len(data):
        raise MalformedPacket(f"{length} octets announced, {len(data) - pos} present", offset=pos)
    if not more:
        return data[pos:end], end
    chunks = [data[pos:end]]
    while more:
        length, pos, more = _read_length(data, end)
        end = pos + length
        if end > len(data):
            raise MalformedPacket(f"{length} octets announced, {len(data) - pos} present", offset=pos)
        chunks.append(data[pos:end])
    return b"".join(chunks), end


def _write_length(out: bytearray, length: int) -> int:
    """Append a length determinant; return how many units it covers (fragments: 16K*m)."""
    if length < 0x80:
        out.append(length)
        return length
    if length < _FRAGMENT:
        out += bytes(((0x8000 | length) >> 8, length & 0xFF))
        return length
    multiplier = min(length // _FRAGMENT, 4)
    out.append(0xC0 | multiplier)
    return multiplier * _FRAGMENT


def _write_octets(out: bytearray, octets: bytes) -> None:
    """Append a length-prefixed octet string, fragmenting at 16K as X.691 10.9.3.8 says."""
    total = len(octets)
    if total < _FRAGMENT:
        _write_length(out, total)
        out += octets
        return
    offset = 0
    while True:
        chunk = _write_length(out, total - offset)
        out += octets[offset : offset + chunk]
        offset += chunk
        if chunk < _FRAGMENT:
            return
        # X.691 10.9.3.8.4: a fragmented encoding always ends with a non-fragment
        # length, which is zero when the last fragment used up every octet.


def _small_number_octets(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


# --------------------------------------------------------------------------- IFP decode


@overload
def _extension(kind: type[T30Indicator], index: int, version: int) -> T30Indicator | Unknown: ...
@overload
def _extension(kind: type[T30Data], index: int, version: int) -> T30Data | Unknown: ...
@overload
def _extension(kind: type[FieldType], index: int, version: int) -> FieldType | Unknown: ...
def _extension(kind: type[enum.IntEnum], index: int, version: int) -> enum.IntEnum | Unknown:
    """The member for extension ``index`` of ``kind``, or ``Unknown``."""
    if version == 0:
        # The 1998 module has the extension marker but no additions.
        return Unknown(kind, index)
    table: tuple[enum.IntEnum, ...]
    if kind is T30Indicator:
        table, root = _INDICATORS, _INDICATOR_ROOT
    elif kind is T30Data:
        table, root = _DATAS, _DATA_ROOT
    else:
        table, root = _FIELDS, _FIELD_ROOT
    position = root + index
    return table[position] if position < len(table) else Unknown(kind, index)


def _parse_ifp(data: bytes, version: int, octet_per_item: bool) -> tuple[IfpPacket, int]:
    """Parse one IFP; return it and the number of octets its encoding occupies.

    ``octet_per_item`` selects SpanDSP's layout, where a data-less item is padded to
    the next octet boundary instead of sharing it with the following item.
    """
    size = len(data)
    if size == 0:
        raise MalformedPacket("empty IFP", offset=0)
    first = data[0]
    has_fields = first & 0x80
    is_data = first & 0x40
    kind: type[T30Data] | type[T30Indicator] = T30Data if is_data else T30Indicator
    msg: T30Indicator | T30Data | Unknown
    if not first & 0x20:
        value = (first >> 1) & 0x0F
        pos = 1
        if is_data:
            if value >= _DATA_ROOT:
                raise MalformedPacket(f"t30-data root index {value} does not exist", offset=0)
            msg = _DATAS[value]
        else:
            msg = _INDICATORS[value]
    elif not first & 0x10:
        # X.691 10.6.1: an extension index below 64 is a 0 bit and 6 bits.
        if size < 2:
            raise MalformedPacket("extension index cut short", offset=1)
        msg = _extension(kind, ((first & 0x0F) << 2) | (data[1] >> 6), version)
        pos = 2
    else:
        # X.691 10.6.2: index 64 or more: semi-constrained whole number, octet-aligned.
        raw, pos = _read_octets(data, 1)
        if not raw:
            raise MalformedPacket("zero-length extension index", offset=1)
        msg = _extension(kind, int.from_bytes(raw, "big"), version)
    if not has_fields:
        return IfpPacket(msg), pos

    fields: list[DataField] = []
    append = fields.append
    field_type: FieldType | Unknown
    bit = pos * 8
    extensible = version != 0
    while True:
        # Every length determinant is octet-aligned (X.691 10.9.3.5 and 11.9.3.5 ALIGNED).
        pos = (bit + 7) >> 3
        count, pos, more = _read_length(data, pos)
        bit = pos * 8
        for _ in range(count):
            index = bit >> 3
            if index >= size:
                raise MalformedPacket("Data-Field item missing", offset=index)
            offset = bit & 7
            window = ((data[index] << 8) | (data[index + 1] if index + 1 < size else 0)) << offset
            available = (size - index) * 8 - offset
            present = window & 0x8000
            if not extensible:
                if available < 4:
                    raise MalformedPacket("Data-Field item cut short", offset=index)
                field_type = _FIELDS[(window >> 12) & 0x07]
                bit += 4
            elif not window & 0x4000:
                if available < 5:
                    raise MalformedPacket("Data-Field item cut short", offset=index)
                field_type = _FIELDS[(window >> 11) & 0x07]
                bit += 5
            elif not window & 0x2000:
                if available < 9:
                    raise MalformedPacket("Data-Field item cut short", offset=index)
                field_type = _extension(FieldType, (window >> 7) & 0x3F, version)
                bit += 9
            else:
                raw, end = _read_octets(data, (bit + 3 + 7) >> 3)
                if not raw:
                    raise MalformedPacket("zero-length extension index", offset=index)
                field_type = _extension(FieldType, int.from_bytes(raw, "big"), version)
                bit = end * 8
            if present:
                start = (bit + 7) >> 3
                if start + 2 > size:
                    raise MalformedPacket("field-data length cut short", offset=start)
                end = start + 2 + ((data[start] << 8) | data[start + 1]) + 1
                if end > size:
                    raise MalformedPacket(f"field-data runs {end - size} octets past the end", offset=start)
                append(DataField(field_type, data[start + 2 : end]))
                bit = end * 8
            else:
                append(DataField(field_type))
                if octet_per_item:
                    bit = (bit + 7) & ~7
        if not more:
            break
    return IfpPacket(msg, tuple(fields)), (bit + 7) >> 3


def decode_ifp(data: bytes, version: int) -> IfpPacket:
    """Decode one IFP packet encoded for T.38 ``version`` (0-3).

    Accepts strict ALIGNED PER and SpanDSP's octet-per-item layout of data-less
    Data-Field items.  Extension values this module does not name come back as
    ``Unknown``.  Raises ``MalformedPacket`` (a ``RemoteProtocolError``) when the bytes
    are not an IFP or do not end exactly at the end of ``data``; raises
    ``LocalProtocolError`` for an unsupported ``version``.
    """
    _check_version(version)
    return _decode_ifp(bytes(data), version)


_new = object.__new__
# The slots' own descriptors (the class __dict__ holds them; mypy reads ``DataField.data``
# as the field's value, so they are taken from there).
_set_field_type: Callable[[DataField, FieldType | Unknown], None] = DataField.__dict__["field_type"].__set__
_set_data: Callable[[DataField, bytes], None] = DataField.__dict__["data"].__set__
_set_msg: Callable[[IfpPacket, T30Indicator | T30Data | Unknown], None] = IfpPacket.__dict__["msg"].__set__
_set_fields: Callable[[IfpPacket, tuple[DataField, ...] | None], None] = IfpPacket.__dict__["fields"].__set__


def _one_item_packet(msg: T30Data, field_type: FieldType, data: bytes) -> IfpPacket:
    """``IfpPacket(msg, (DataField(field_type, data),))``, built at less than half the cost.

    Frozen dataclasses assign their fields through ``object.__setattr__`` in a generated
    ``__init__``; setting the slots directly gives the very same values (equality and
    hashing stay the dataclasses' own) and is what lets the receive path keep up with
    200,000 packets/s.  The codec tests compare these values with ordinary ones.
    """
    item = _new(DataField)
    _set_field_type(item, field_type)
    _set_data(item, data)
    packet = _new(IfpPacket)
    _set_msg(packet, msg)
    _set_fields(packet, (item,))
    return packet


def _decode_ifp(data: bytes, version: int) -> IfpPacket:
    size = len(data)
    if size > 5:
        # Fast path for the bulk of a call: one data item with field-data, one-octet
        # header, root values (what t4-non-ecm-data and hdlc-data packets look like).
        first = data[0]
        item = data[2]
        if (
            first & 0xE0 == 0xC0
            and data[1] == 1
            and item & 0x80
            and (version == 0 or not item & 0x40)
            and size == 6 + ((data[3] << 8) | data[4])
        ):
            kind = (first >> 1) & 0x0F
            if kind < _DATA_ROOT:
                field = _FIELDS[(item >> 4) & 0x07] if version == 0 else _FIELDS[(item >> 3) & 0x07]
                return _one_item_packet(_DATAS[kind], field, data[5:])
    try:
        packet, end = _parse_ifp(data, version, False)
        if end == len(data):
            return packet
        error = MalformedPacket(f"{len(data) - end} octets after the end of the IFP", offset=end)
    except MalformedPacket as exc:
        error = exc
    try:
        packet, end = _parse_ifp(data, version, True)
    except MalformedPacket:
        raise error from None
    if end != len(data):
        raise error
    return packet


def ifp_length(data: bytes, version: int) -> int | None:
    """How many leading octets of ``data`` form an IFP, or None when no prefix parses.

    Used to trim the zero padding off an IFP rebuilt from FEC parity, which is as long
    as the longest packet it covered.
    """
    for octet_per_item in (False, True):
        try:
            return _parse_ifp(data, version, octet_per_item)[1]
        except MalformedPacket:
            continue
    return None


# --------------------------------------------------------------------------- IFP encode


def _enum_code(value: object, kind: type[enum.IntEnum], root: int, version: int, name: str) -> tuple[bool, int]:
    """(is_extension, index) of an enumerated value of ``kind``."""
    if isinstance(value, Unknown):
        if value.kind is not kind:
            raise LocalProtocolError(f"{name}: Unknown of {value.kind.__name__} where {kind.__name__} belongs")
        if not isinstance(value.index, int) or value.index < 0:
            raise LocalProtocolError(f"{name}: extension index must be a non-negative int, not {value.index!r}")
        return True, value.index
    if not isinstance(value, kind):
        raise LocalProtocolError(f"{name}: {value!r} is not a {kind.__name__}")
    number = int(value)
    if number < root:
        return False, number
    if version == 0:
        raise LocalProtocolError(f"{name}: {value.name} does not exist in the T.38 version 0 (1998) module")
    return True, number - root


def encode_ifp(packet: IfpPacket, version: int) -> bytes:
    """Encode ``packet`` as ALIGNED PER for T.38 ``version`` (0-3).

    The octets equal what an X.691 encoder (asn1tools) produces.  Raises
    ``LocalProtocolError`` for values the version cannot carry (an extension value at
    version 0, field-data over 65535 octets) and for a data-less Data-Field item that is
    not the last one: strict PER and SpanDSP lay such an item out differently, so no
    peer-independent encoding of it exists.  Send combined field types
    (``HDLC_FCS_OK_SIG_END``) or separate IFPs instead.
    """
    msg = packet.msg
    fields = packet.fields
    if fields is not None and len(fields) == 1 and msg.__class__ is T30Data and version in SUPPORTED_VERSIONS:
        # Fast path: one data item with field-data, root values (most IFPs of a call).
        item = fields[0]
        data = item.data
        field_type = item.field_type
        if data and field_type.__class__ is FieldType and field_type < _FIELD_ROOT and msg < _DATA_ROOT:
            size = len(data) - 1
            if size < 65535:
                shift = 4 if version == 0 else 3
                return bytes((0xC0 | (msg << 1), 1, 0x80 | (field_type << shift), size >> 8, size & 0xFF)) + data
    _check_version(version)
    if isinstance(msg, Unknown):
        is_data = msg.kind is T30Data
        if not is_data and msg.kind is not T30Indicator:
            raise LocalProtocolError(f"type-of-msg: Unknown of {msg.kind.__name__}")
    else:
        is_data = isinstance(msg, T30Data)
    if is_data:
        extended, index = _enum_code(msg, T30Data, _DATA_ROOT, version, "t30-data")
    else:
        extended, index = _enum_code(msg, T30Indicator, _INDICATOR_ROOT, version, "t30-indicator")
    fields = packet.fields
    head = (0x80 if fields is not None else 0) | (0x40 if is_data else 0)
    out = bytearray()
    if not extended:
        out.append(head | (index << 1))
    elif index < 64:
        out += bytes((head | 0x20 | (index >> 2), (index & 0x03) << 6))
    else:
        out.append(head | 0x30)
        _write_octets(out, _small_number_octets(index))
    if fields is None:
        return bytes(out)

    last = len(fields) - 1
    position = 0
    while True:
        chunk = _write_length(out, len(fields) - position)
        for number in range(position, position + chunk):
            item = fields[number]
            data = item.data
            if not data and number != last:
                raise LocalProtocolError(
                    f"Data-Field item {number} has no field-data but is not the last item; "
                    "strict PER and SpanDSP would read it differently"
                )
            if len(data) > 65535:
                raise LocalProtocolError(f"field-data of {len(data)} octets exceeds 65535")
            present = 0x80 if data else 0
            field_type = item.field_type
            if version == 0:
                if isinstance(field_type, Unknown) or not isinstance(field_type, FieldType) or field_type >= _FIELD_ROOT:
                    raise LocalProtocolError(f"field-type {field_type!r} does not exist in the T.38 version 0 (1998) module")
                out.append(present | (field_type << 4))
            else:
                extended, index = _enum_code(field_type, FieldType, _FIELD_ROOT, version, "field-type")
                if not extended:
                    out.append(present | (index << 3))
                elif index < 64:
                    out += bytes((present | 0x40 | (index >> 1), (index & 1) << 7))
                else:
                    out.append(present | 0x60)
                    _write_octets(out, _small_number_octets(index))
            if data:
                size = len(data) - 1
                out += bytes((size >> 8, size & 0xFF))
                out += data
        position += chunk
        if chunk < _FRAGMENT:
            return bytes(out)


# --------------------------------------------------------------------------- UDPTL


@dataclass(frozen=True, slots=True)
class FecInfo:
    """The ``fec-info`` arm of UDPTL error recovery (T.38 clause 9).

    ``npackets`` is ``fec-npackets``: how many IFPs each parity entry covers (the span);
    ``entries`` are the ``fec-data`` parity octet strings.
    """

    npackets: int
    entries: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class UdptlPacket:
    """One UDPTL packet (T.38 clause 9.1).

    ``primary`` is the encoded primary IFP.  Error recovery is either ``secondaries``
    (the previous IFPs, newest first) or ``fec``; exactly one is set.  With neither
    given, the packet carries an empty ``secondary-ifp-packets`` (no error correction).
    """

    seq: int
    primary: bytes
    secondaries: tuple[bytes, ...] | None = None
    fec: FecInfo | None = None

    def __post_init__(self) -> None:
        if self.secondaries is None and self.fec is None:
            object.__setattr__(self, "secondaries", ())
        elif self.secondaries is not None and self.fec is not None:
            raise LocalProtocolError("a UDPTL packet carries secondaries or fec-info, not both")


def _decode_udptl_parts(data: bytes) -> tuple[int, bytes, tuple[bytes, ...] | None, FecInfo | None]:
    size = len(data)
    if size < 2:
        raise MalformedPacket("UDPTL packet shorter than its sequence number", offset=0)
    seq = (data[0] << 8) | data[1]
    # Fast path for the common case: one-octet lengths, no fragments.
    length = data[2] if size > 2 else 0x80
    if length < 0x80:
        pos = 3 + length
        if pos > size:
            raise MalformedPacket(f"primary IFP of {length} octets runs past the end", offset=2)
        primary = data[3:pos]
    else:
        primary, pos = _read_octets(data, 2)
    if pos >= size:
        raise MalformedPacket("error-recovery missing", offset=pos)
    choice = data[pos] & 0x80
    pos += 1
    if not choice:
        secondaries: list[bytes] = []
        append = secondaries.append
        while True:
            count, pos, more = _read_length(data, pos)
            for _ in range(count):
                if pos < size and data[pos] < 0x80:
                    end = pos + 1 + data[pos]
                    if end > size:
                        raise MalformedPacket(f"secondary IFP of {data[pos]} octets runs past the end", offset=pos)
                    append(data[pos + 1 : end])
                    pos = end
                else:
                    octets, pos = _read_octets(data, pos)
                    append(octets)
            if not more:
                break
        fec = None
        recovery: tuple[bytes, ...] | None = tuple(secondaries)
    else:
        raw, pos = _read_octets(data, pos)
        if not raw:
            raise MalformedPacket("fec-npackets has zero octets", offset=pos)
        npackets = int.from_bytes(raw, "big", signed=True)
        entries: list[bytes] = []
        while True:
            count, pos, more = _read_length(data, pos)
            for _ in range(count):
                octets, pos = _read_octets(data, pos)
                entries.append(octets)
            if not more:
                break
        fec = FecInfo(npackets, tuple(entries))
        recovery = None
    if pos != size:
        raise MalformedPacket(f"{size - pos} octets after the end of the UDPTL packet", offset=pos)
    return seq, primary, recovery, fec


def decode_udptl(data: bytes) -> UdptlPacket:
    """Decode one UDPTL datagram.  Raises ``MalformedPacket`` for anything else.

    Zero-length secondary IFPs are returned as they are (empty bytes); deciding what
    they mean is the receiver's business.
    """
    seq, primary, secondaries, fec = _decode_udptl_parts(bytes(data))
    return UdptlPacket(seq, primary, secondaries, fec)


_SHORT_LENGTHS = [bytes((length,)) for length in range(0x80)]


def _encode_udptl_parts(seq: int, primary: bytes, secondaries: Sequence[bytes] | None, fec: FecInfo | None) -> bytes:
    """The datagram; ``fec`` wins when given, else ``secondaries`` must be (``UdptlPacket``
    and the sender always give exactly one)."""
    if fec is None and secondaries is not None and len(primary) < 0x80 and len(secondaries) < 0x80:
        # Fast path: every length fits one octet.
        parts = [bytes((seq >> 8, seq & 0xFF, len(primary))), primary, bytes((0, len(secondaries)))]
        for item in secondaries:
            if len(item) >= 0x80:
                break
            parts.append(_SHORT_LENGTHS[len(item)])
            parts.append(item)
        else:
            return b"".join(parts)
    out = bytearray((seq >> 8, seq & 0xFF))
    _write_octets(out, primary)
    if fec is None:
        if secondaries is None:
            raise LocalProtocolError("a UDPTL packet needs secondaries or fec-info")
        out.append(0x00)
        total = len(secondaries)
        position = 0
        while True:
            chunk = _write_length(out, total - position)
            for index in range(position, position + chunk):
                _write_octets(out, secondaries[index])
            position += chunk
            if chunk < _FRAGMENT:
                break
    else:
        out.append(0x80)
        npackets = fec.npackets
        # X.691 12.2.6: an unconstrained INTEGER is a length and minimal two's complement.
        width = (npackets.bit_length() + 8) // 8 if npackets >= 0 else ((~npackets).bit_length() + 8) // 8
        _write_octets(out, npackets.to_bytes(width, "big", signed=True))
        entries = fec.entries
        position = 0
        while True:
            chunk = _write_length(out, len(entries) - position)
            for index in range(position, position + chunk):
                _write_octets(out, entries[index])
            position += chunk
            if chunk < _FRAGMENT:
                break
    return bytes(out)


def encode_udptl(packet: UdptlPacket) -> bytes:
    """Encode a UDPTL packet.  Raises ``LocalProtocolError`` for a seq outside 0..65535."""
    if not 0 <= packet.seq <= 0xFFFF:
        raise LocalProtocolError(f"seq-number {packet.seq} outside 0..65535")
    return _encode_udptl_parts(packet.seq, packet.primary, packet.secondaries, packet.fec)
