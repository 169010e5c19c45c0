"""The T.38 edge of the engine: IFP packets to modem-level happenings and back.

Receiving.  T.38 clause 7 sends an HDLC frame as ``hdlc-data`` fields (its octets in
any number of chunks) closed by ``hdlc-fcs-OK``/``hdlc-fcs-BAD`` (the emitting gateway
checked the FCS), with ``-sig-end`` on the last frame of a carrier; image data of
non-ECM pages (and TCF) as ``t4-non-ecm-data`` closed by ``t4-non-ecm-sig-end``.
Indicators announce carriers.  Deployed stacks repeat indicators and end-of-data
packets with fresh sequence numbers (SpanDSP's terminal sends each three times), so
``IfpDemultiplexer`` swallows an end-of-data that repeats the previous one and an
FCS report with no octets before it, as SpanDSP's ``t38_terminal.c`` does.

Sending.  ``hdlc_burst`` turns T.30 frames into the packet sequence with the timing a
paced terminal uses: 75 ms of silence, the V.21 preamble indicator, 1 s of flags
(T.30 5.3.1), then the frames at 300 bit/s, the last closed by fcs-OK-sig-end; each
indicator and end packet is sent ``END_REPEATS`` times.
"""

from __future__ import annotations

from dataclasses import dataclass

from udptl.codec import encode_ifp
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator, Unknown

from t38gw.t30.frames import T30Frame

# SpanDSP t38_terminal.c sends indicators and end-of-data packets 3 times (its
# INDICATOR_TX_COUNT / DATA_END_TX_COUNT); we follow that deployed convention.
END_REPEATS = 3
#: T.30 5.3.1 / T.38 (SpanDSP's modem_startup_time): V.21 preamble of 1 s before a frame.
V21_PREAMBLE_S = 1.0
#: T.30 5.3.2.4 (note): 75 +/- 20 ms of silence between carriers.
SILENCE_S = 0.075
V21_BIT_RATE = 300
#: T.30 5.3.6.1 (CED): 2.6-4 s of 2100 Hz; T.38 needs only the indicator and its length.
CED_S = 3.0


@dataclass(frozen=True, slots=True)
class SignalStarted:
    indicator: T30Indicator | Unknown


@dataclass(frozen=True, slots=True)
class HdlcFrameArrived:
    """One whole HDLC frame; ``wire`` is T.38 order.  ``fcs_ok`` is False for a frame
    the sender marked fcs-BAD or that lost octets on the way."""

    wire: bytes
    fcs_ok: bool
    data_type: T30Data | Unknown


@dataclass(frozen=True, slots=True)
class HdlcSignalEnded:
    data_type: T30Data | Unknown


@dataclass(frozen=True, slots=True)
class ImageDataArrived:
    data: bytes  # T.38 order: first transmitted bit is the MSB
    data_type: T30Data | Unknown


@dataclass(frozen=True, slots=True)
class ImageSignalEnded:
    data_type: T30Data | Unknown


FrontEndEvent = SignalStarted | HdlcFrameArrived | HdlcSignalEnded | ImageDataArrived | ImageSignalEnded

#: The longest HDLC frame T.30/T.4 sends is an FCD of 256 octets plus 4 of header; a
#: peer that sends more without closing the frame is not sending T.30.
MAX_HDLC_OCTETS = 512

_END_FIELDS = {
    FieldType.HDLC_FCS_OK_SIG_END,
    FieldType.HDLC_FCS_BAD_SIG_END,
    FieldType.HDLC_SIG_END,
    FieldType.T4_NON_ECM_SIG_END,
}


class IfpDemultiplexer:
    """Turns received IFP packets (in order, after UDPTL recovery) into front-end events."""

    def __init__(self) -> None:
        self._hdlc = bytearray()
        self._hdlc_damaged = False
        self._indicator: T30Indicator | Unknown | None = None
        self._last_field: tuple[T30Data | Unknown, FieldType | Unknown] | None = None
        self.packets_ignored = 0

    def note_loss(self) -> None:
        """IFPs were lost (UDPTL could not recover them): any frame in progress is bad."""
        self._hdlc_damaged = True

    def packet_received(self, packet: IfpPacket) -> list[FrontEndEvent]:
        """Feed one IFP packet; returns what it means at the modem level."""
        msg = packet.msg
        # IfpPacket.is_indicator spelled out, so that the types narrow.
        if isinstance(msg, T30Indicator) or (isinstance(msg, Unknown) and msg.kind is T30Indicator):
            if msg == self._indicator:
                return []  # T.38 clause 7.6: a repeated indicator is harmless
            self._indicator = msg
            self._hdlc.clear()
            self._hdlc_damaged = False
            self._last_field = None
            return [SignalStarted(msg)]
        events: list[FrontEndEvent] = []
        data_type = msg
        for field in packet.fields or ():
            key = (data_type, field.field_type)
            repeat = key == self._last_field and field.field_type in _END_FIELDS
            self._last_field = key
            self._indicator = None
            if repeat:
                continue
            self._field(field, data_type, events)
        return events

    def _field(self, field: DataField, data_type: T30Data | Unknown, events: list[FrontEndEvent]) -> None:
        kind = field.field_type
        if kind is FieldType.HDLC_DATA:
            self._append(field.data)
        elif kind in (FieldType.HDLC_FCS_OK, FieldType.HDLC_FCS_BAD,
                      FieldType.HDLC_FCS_OK_SIG_END, FieldType.HDLC_FCS_BAD_SIG_END):
            # Cisco and Commetrex put the last octets in the FCS field; SpanDSP accepts it.
            self._append(field.data)
            if self._hdlc:
                ok = kind in (FieldType.HDLC_FCS_OK, FieldType.HDLC_FCS_OK_SIG_END) and not self._hdlc_damaged
                events.append(HdlcFrameArrived(bytes(self._hdlc), ok, data_type))
            self._hdlc.clear()
            self._hdlc_damaged = False
            if kind in (FieldType.HDLC_FCS_OK_SIG_END, FieldType.HDLC_FCS_BAD_SIG_END):
                events.append(HdlcSignalEnded(data_type))
        elif kind is FieldType.HDLC_SIG_END:
            self._hdlc.clear()
            self._hdlc_damaged = False
            events.append(HdlcSignalEnded(data_type))
        elif kind is FieldType.T4_NON_ECM_DATA:
            if field.data:
                events.append(ImageDataArrived(field.data, data_type))
        elif kind is FieldType.T4_NON_ECM_SIG_END:
            if field.data:
                events.append(ImageDataArrived(field.data, data_type))
            events.append(ImageSignalEnded(data_type))
        else:
            self.packets_ignored += 1  # V.8 CM/JM/CI and V.34 rates: nothing for T.30 here

    def _append(self, data: bytes) -> None:
        if len(self._hdlc) + len(data) > MAX_HDLC_OCTETS:
            self._hdlc_damaged = True
            return
        self._hdlc += data


@dataclass(frozen=True, slots=True)
class OutgoingIfp:
    """An IFP packet to send at ``at`` (seconds), ``repeat`` times in a row."""

    at: float
    packet: IfpPacket
    repeat: int = 1


def indicator(at: float, which: T30Indicator) -> OutgoingIfp:
    return OutgoingIfp(at, IfpPacket(which), END_REPEATS)


def hdlc_burst(frames: list[T30Frame], start: float) -> tuple[list[OutgoingIfp], float]:
    """The packets that send ``frames`` on V.21 from ``start``; returns them and the end time."""
    out = [indicator(start, T30Indicator.V21_PREAMBLE)]
    at = start + V21_PREAMBLE_S
    for i, frame in enumerate(frames):
        wire = frame.to_wire()
        out.append(OutgoingIfp(at, IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_DATA, wire),))))
        # Each frame takes its octets plus about two flags and the 16-bit FCS on the line.
        at += (len(wire) + 4) * 8 / V21_BIT_RATE
        last = i == len(frames) - 1
        end = FieldType.HDLC_FCS_OK_SIG_END if last else FieldType.HDLC_FCS_OK
        out.append(OutgoingIfp(at, IfpPacket(T30Data.V21, (DataField(end),)), END_REPEATS if last else 1))
    out.append(indicator(at + SILENCE_S, T30Indicator.NO_SIGNAL))
    return out, at + SILENCE_S


# T.38 clause 7: an HDLC frame (or non-ECM image data) may travel in any number of data
# chunks, so a packet too large for the peer's T38FaxMaxDatagram is split rather than
# sent oversize; the FCS/sig-end fields stay in the last piece.
_SPLITTABLE = (FieldType.HDLC_DATA, FieldType.T4_NON_ECM_DATA)


def split_to_fit(packet: IfpPacket, version: int, max_ifp: int) -> list[bytes]:
    """``packet`` encoded, split into several IFPs of at most ``max_ifp`` octets if needed."""
    raw = encode_ifp(packet, version)
    if len(raw) <= max_ifp or not packet.fields or packet.fields[0].field_type not in _SPLITTABLE:
        return [raw]
    first, rest = packet.fields[0], packet.fields[1:]
    overhead = len(raw) - len(first.data) + 2  # type, field count, field header, length prefix
    step = max(1, max_ifp - overhead)
    pieces = [first.data[i:i + step] for i in range(0, len(first.data), step)]
    out = [encode_ifp(IfpPacket(packet.msg, (DataField(first.field_type, piece),)), version) for piece in pieces[:-1]]
    out.append(encode_ifp(IfpPacket(packet.msg, (DataField(first.field_type, pieces[-1]),) + rest), version))
    return out


# ---------------------------------------------------------------------- sending fast data
#: How much image data one IFP carries: this many seconds of line time (SpanDSP's terminal
#: sends a chunk every 30 ms by default), so data leaves at the modem's own pace.
IMAGE_CHUNK_S = 0.03
#: Training time of each modem before its data (V.27ter/V.29 training sequences, V.17 long
#: training; the figures SpanDSP's t38_terminal.c uses), seconds.
TRAINING_S: dict[T30Indicator, float] = {
    T30Indicator.V27_2400_TRAINING: 0.943, T30Indicator.V27_4800_TRAINING: 0.708,
    T30Indicator.V29_7200_TRAINING: 0.234, T30Indicator.V29_9600_TRAINING: 0.234,
    T30Indicator.V17_7200_LONG_TRAINING: 1.393, T30Indicator.V17_9600_LONG_TRAINING: 1.393,
    T30Indicator.V17_12000_LONG_TRAINING: 1.393, T30Indicator.V17_14400_LONG_TRAINING: 1.393,
    T30Indicator.V17_7200_SHORT_TRAINING: 0.142, T30Indicator.V17_9600_SHORT_TRAINING: 0.142,
    T30Indicator.V17_12000_SHORT_TRAINING: 0.142, T30Indicator.V17_14400_SHORT_TRAINING: 0.142,
}
#: V.17 (8.3 and T.30 Annex A): once the receiver has trained on a rate (TCF), the image
#: data that follows at that rate uses the short training sequence; a receiver expecting
#: it takes the rest of a long one for data (SpanDSP's gateway lost the top rows of
#: each page that way).
SHORT_TRAINING: dict[T30Indicator, T30Indicator] = {
    T30Indicator.V17_7200_LONG_TRAINING: T30Indicator.V17_7200_SHORT_TRAINING,
    T30Indicator.V17_9600_LONG_TRAINING: T30Indicator.V17_9600_SHORT_TRAINING,
    T30Indicator.V17_12000_LONG_TRAINING: T30Indicator.V17_12000_SHORT_TRAINING,
    T30Indicator.V17_14400_LONG_TRAINING: T30Indicator.V17_14400_SHORT_TRAINING,
}


def image_burst(data: bytes, training: T30Indicator, data_type: T30Data, bit_rate: int,
                start: float) -> tuple[list[OutgoingIfp], float]:
    """Non-ECM image data (a page, or TCF's zeros) on a fast modem from ``start``: the training
    indicator, ``t4-non-ecm-data`` chunks each sent when the modem would have carried the one
    before, ``t4-non-ecm-sig-end``, no-signal.  ``data`` is in T.38 order (MSB first)."""
    out = [indicator(start, training)]
    at = start + TRAINING_S.get(training, 1.0)
    step = max(1, int(bit_rate * IMAGE_CHUNK_S) // 8)
    for i in range(0, len(data), step):
        chunk = data[i:i + step]
        out.append(OutgoingIfp(at, IfpPacket(data_type, (DataField(FieldType.T4_NON_ECM_DATA, chunk),))))
        at += len(chunk) * 8 / bit_rate
    out.append(OutgoingIfp(at, IfpPacket(data_type, (DataField(FieldType.T4_NON_ECM_SIG_END),)), END_REPEATS))
    out.append(indicator(at, T30Indicator.NO_SIGNAL))
    return out, at + SILENCE_S


def ecm_burst(frames: list[bytes], training: T30Indicator, data_type: T30Data, bit_rate: int,
              start: float) -> tuple[list[OutgoingIfp], float]:
    """HDLC frames (FCD.., RCP; T.4 Annex A) on a fast modem from ``start``, each as it would
    leave the modem (its octets, FCS and a flag), the last closed by fcs-OK-sig-end.
    ``frames`` are whole frames in T.38 order."""
    out = [indicator(start, training)]
    at = start + TRAINING_S.get(training, 1.0)
    for i, wire in enumerate(frames):
        out.append(OutgoingIfp(at, IfpPacket(data_type, (DataField(FieldType.HDLC_DATA, wire),))))
        at += (len(wire) + 3) * 8 / bit_rate
        last = i == len(frames) - 1
        end = FieldType.HDLC_FCS_OK_SIG_END if last else FieldType.HDLC_FCS_OK
        out.append(OutgoingIfp(at, IfpPacket(data_type, (DataField(end),)), END_REPEATS if last else 1))
    out.append(indicator(at, T30Indicator.NO_SIGNAL))
    return out, at + SILENCE_S
