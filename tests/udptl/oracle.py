"""asn1tools as the oracle for our IFP and UDPTL codec.

The T.38 modules in ``t38.asn`` (standard text; see its header) are compiled with
asn1tools' ``per`` codec (ALIGNED PER).  Besides the standard modules we compile a
"future" variant of each, whose extensible ENUMERATEDs gain additions ``x-ext-<n>`` up
to extension index 63: a newer module version encodes extension index n exactly so, which
lets asn1tools produce the octets an as-yet-unknown extension value has on the wire.
(asn1tools does not lay out extension indexes of 64 and more as X.691 10.6.2 says, so the
oracle stops at 63.)
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import asn1tools

from udptl.codec import FecInfo, UdptlPacket
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown

ASN_PATH = Path(__file__).with_name("t38.asn")
MAX_ORACLE_EXTENSION = 63


def _module_texts() -> dict[str, str]:
    text = ASN_PATH.read_text()
    start_2002 = text.index("T38-2002 DEFINITIONS")
    start_1998 = text.index("T38-1998 DEFINITIONS")
    return {"1998": text[start_1998:start_2002], "2002": text[start_2002:]}


def _enumerations(module: str) -> dict[str, tuple[list[str], list[str] | None]]:
    """{'indicator'|'data'|'field': (root identifiers, additions or None if not extensible)}."""
    found = {}
    for key, pattern in (
        ("indicator", r"t30-indicator\s+ENUMERATED\s*\{(.*?)\}"),
        ("data", r"(?:t30-data|\bdata)\s+ENUMERATED\s*\{(.*?)\}"),
        ("field", r"field-type\s+ENUMERATED\s*\{(.*?)\}"),
    ):
        body = re.search(pattern, module, re.S).group(1)
        names = [name.strip() for name in body.split(",") if name.strip()]
        if "..." in names:
            marker = names.index("...")
            found[key] = (names[:marker], names[marker + 1 :])
        else:
            found[key] = (names, None)
    return found


def _future(module: str) -> str:
    """The module with extensible ENUMERATEDs padded to 64 extension additions."""

    def pad(match: re.Match) -> str:
        body = match.group(2)
        names = [name.strip() for name in body.split(",") if name.strip()]
        if "..." not in names:
            return match.group(0)
        additions = len(names) - names.index("...") - 1
        extra = [f"x-ext-{index}" for index in range(additions, MAX_ORACLE_EXTENSION + 1)]
        return match.group(1) + ", ".join(names + extra) + "}"

    return re.sub(r"(ENUMERATED\s*\{)(.*?)\}", pad, module, flags=re.S)


@functools.cache
def specs(version: int, future: bool = False):
    module = _module_texts()["1998" if version == 0 else "2002"]
    if future:
        module = _future(module)
    return asn1tools.compile_string(module, "per")


@functools.cache
def enumerations(version: int):
    return _enumerations(_module_texts()["1998" if version == 0 else "2002"])


_KINDS = {"indicator": T30Indicator, "data": T30Data, "field": FieldType}


def _name_of(value, key: str, version: int) -> str:
    roots, additions = enumerations(version)[key]
    if isinstance(value, Unknown):
        return f"x-ext-{value.index}"
    number = int(value)
    if number < len(roots):
        return roots[number]
    index = number - len(roots)
    return additions[index] if additions is not None and index < len(additions) else f"x-ext-{index}"


def _value_of(name: str | None, key: str, version: int):
    """Our value for an asn1tools enumeration identifier (None: asn1tools did not know it)."""
    if name is None:
        return None
    kind = _KINDS[key]
    roots, additions = enumerations(version)[key]
    if name.startswith("x-ext-"):
        return Unknown(kind, int(name[6:]))
    if name in roots:
        return kind(roots.index(name))
    return kind(len(roots) + additions.index(name))


def ifp_to_asn1(packet: IfpPacket, version: int) -> dict:
    data_arm = "data" if version == 0 else "t30-data"
    if packet.is_indicator:
        msg = ("t30-indicator", _name_of(packet.msg, "indicator", version))
    else:
        msg = (data_arm, _name_of(packet.msg, "data", version))
    value: dict = {"type-of-msg": msg}
    if packet.fields is not None:
        items = []
        for item in packet.fields:
            entry = {"field-type": _name_of(item.field_type, "field", version)}
            if item.data:
                entry["field-data"] = item.data
            items.append(entry)
        value["data-field"] = items
    return value


def ifp_from_asn1(value: dict, version: int) -> IfpPacket:
    arm, name = value["type-of-msg"]
    key = "indicator" if arm == "t30-indicator" else "data"
    msg = _value_of(name, key, version)
    fields = None
    if "data-field" in value:
        fields = tuple(
            DataField(_value_of(item["field-type"], "field", version), item.get("field-data", b""))
            for item in value["data-field"]
        )
    return IfpPacket(msg, fields)


def oracle_encode_ifp(packet: IfpPacket, version: int) -> bytes:
    return specs(version, future=True).encode("IFPPacket", ifp_to_asn1(packet, version))


def oracle_decode_ifp(data: bytes, version: int) -> IfpPacket:
    return ifp_from_asn1(specs(version, future=True).decode("IFPPacket", data), version)


def udptl_to_asn1(packet: UdptlPacket) -> dict:
    if packet.fec is not None:
        recovery = ("fec-info", {"fec-npackets": packet.fec.npackets, "fec-data": list(packet.fec.entries)})
    else:
        recovery = ("secondary-ifp-packets", list(packet.secondaries))
    return {"seq-number": packet.seq, "primary-ifp-packet": packet.primary, "error-recovery": recovery}


def udptl_from_asn1(value: dict) -> UdptlPacket:
    arm, recovery = value["error-recovery"]
    if arm == "fec-info":
        return UdptlPacket(
            value["seq-number"],
            value["primary-ifp-packet"],
            fec=FecInfo(recovery["fec-npackets"], tuple(recovery["fec-data"])),
        )
    return UdptlPacket(value["seq-number"], value["primary-ifp-packet"], tuple(recovery))


def oracle_encode_udptl(packet: UdptlPacket) -> bytes:
    return specs(1).encode("UDPTLPacket", udptl_to_asn1(packet))


def oracle_decode_udptl(data: bytes) -> UdptlPacket:
    return udptl_from_asn1(specs(1).decode("UDPTLPacket", data))
