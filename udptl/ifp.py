"""The IFP (Internet Facsimile Protocol) packet model of T.38 Annex A.

An IFP packet is the ASN.1 type ``IFPPacket``::

    IFPPacket ::= SEQUENCE {
        type-of-msg  Type-of-msg,
        data-field   Data-Field OPTIONAL }
    Type-of-msg ::= CHOICE { t30-indicator T30-indicator, t30-data T30-data }

These are plain frozen values; the PER codec lives in ``udptl.codec``.  Enumerated
values beyond the ones this module names (a newer peer's extension values) decode to
``Unknown`` carrying the raw index, never to an exception.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class T30Indicator(enum.IntEnum):
    """T.38 Annex A ``T30-indicator``; values after V17_14400_LONG are extensions (T.38 v1+)."""

    NO_SIGNAL = 0
    CNG = 1
    CED = 2
    V21_PREAMBLE = 3
    V27_2400_TRAINING = 4
    V27_4800_TRAINING = 5
    V29_7200_TRAINING = 6
    V29_9600_TRAINING = 7
    V17_7200_SHORT_TRAINING = 8
    V17_7200_LONG_TRAINING = 9
    V17_9600_SHORT_TRAINING = 10
    V17_9600_LONG_TRAINING = 11
    V17_12000_SHORT_TRAINING = 12
    V17_12000_LONG_TRAINING = 13
    V17_14400_SHORT_TRAINING = 14
    V17_14400_LONG_TRAINING = 15
    # ... extension additions
    V8_ANSAM = 16
    V8_SIGNAL = 17
    V34_CNTL_CHANNEL_1200 = 18
    V34_PRI_CHANNEL = 19
    V34_CC_RETRAIN = 20
    V33_12000_TRAINING = 21
    V33_14400_TRAINING = 22


class T30Data(enum.IntEnum):
    """T.38 Annex A ``T30-data``: the modulation the data travels on."""

    V21 = 0
    V27_2400 = 1
    V27_4800 = 2
    V29_7200 = 3
    V29_9600 = 4
    V17_7200 = 5
    V17_9600 = 6
    V17_12000 = 7
    V17_14400 = 8
    # ... extension additions
    V8 = 9
    V34_PRI_RATE = 10
    V34_CC_1200 = 11
    V34_PRI_CH = 12
    V33_12000 = 13
    V33_14400 = 14


class FieldType(enum.IntEnum):
    """T.38 Annex A ``field-type`` of a Data-Field element.

    In the 1998 module (T.38 version 0) the type is not extensible, so only the first
    eight values exist and the encoding has no extension bit.
    """

    HDLC_DATA = 0
    HDLC_SIG_END = 1
    HDLC_FCS_OK = 2
    HDLC_FCS_BAD = 3
    HDLC_FCS_OK_SIG_END = 4
    HDLC_FCS_BAD_SIG_END = 5
    T4_NON_ECM_DATA = 6
    T4_NON_ECM_SIG_END = 7
    # ... extension additions (T.38 version 1 and later)
    CM_MESSAGE = 8
    JM_MESSAGE = 9
    CI_MESSAGE = 10
    V34RATE = 11


@dataclass(frozen=True, slots=True)
class Unknown:
    """An enumerated value we do not know (an extension a newer peer sent).

    ``kind`` is the enumeration's class (T30Indicator, T30Data or FieldType) and
    ``index`` the raw extension index as it was on the wire, so the value re-encodes
    to the same bytes.
    """

    kind: type
    index: int


@dataclass(frozen=True, slots=True)
class DataField:
    """One element of ``Data-Field``: a field type and optional octets (1..65535)."""

    field_type: FieldType | Unknown
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class IfpPacket:
    """One IFP packet.

    ``msg`` is a ``T30Indicator`` for the t30-indicator arm of Type-of-msg and a
    ``T30Data`` for the t30-data arm (``Unknown`` with the matching ``kind`` for
    extension values).  ``fields`` is the optional Data-Field; ``None`` means
    absent, which is distinct from an empty sequence on the wire.
    """

    msg: T30Indicator | T30Data | Unknown
    fields: tuple[DataField, ...] | None = None

    @property
    def is_indicator(self) -> bool:
        if isinstance(self.msg, Unknown):
            return self.msg.kind is T30Indicator
        return isinstance(self.msg, T30Indicator)
