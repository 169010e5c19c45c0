"""A scripted T.30 sender for unit tests: the IFP packets a T.38 fax sender emits.

Frames are built with T.30's own numbers (``Fcf``, ``build_dcs``); page data comes from
SpanDSP's T.4 coder (``spandsp_t4_encode``), so the engine is fed real coded pages.
"""

from __future__ import annotations

from t38gw.t30 import Fcf, T30Frame, T30Receiver
from t38gw.t30.dcs import Compression, Modulation, build_dcs
from t38gw.t30.frames import REVERSE_BITS, encode_ident
from tests.peers.spandsp import spandsp_t4_encode
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator


def control(*frames: T30Frame, fcs_ok: bool = True) -> list[IfpPacket]:
    """V.21 preamble, the frames (last one closes the carrier), no-signal."""
    packets = [IfpPacket(T30Indicator.V21_PREAMBLE)]
    for i, frame in enumerate(frames):
        last = i == len(frames) - 1
        if fcs_ok:
            end = FieldType.HDLC_FCS_OK_SIG_END if last else FieldType.HDLC_FCS_OK
        else:
            end = FieldType.HDLC_FCS_BAD_SIG_END if last else FieldType.HDLC_FCS_BAD
        packets.append(IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_DATA, frame.to_wire()),)))
        packets.append(IfpPacket(T30Data.V21, (DataField(end),)))
    packets.append(IfpPacket(T30Indicator.NO_SIGNAL))
    return packets


def frame(fcf: Fcf, fif: bytes = b"", final: bool = True) -> T30Frame:
    # T.30 5.3.6.1: the calling station (it received our DIS) sets the X bit.
    return T30Frame(fcf, fif, final=final, x_bit=True)


def dcs_sequence(modulation=Modulation.V17_14400, *, tsi: str = "+1 555 0199", **dcs) -> list[IfpPacket]:
    frames = []
    if tsi:
        frames.append(frame(Fcf.TSI, encode_ident(tsi), final=False))
    frames.append(frame(Fcf.DCS, build_dcs(modulation, **dcs)))
    return control(*frames)


def image_carrier(modulation: Modulation, data: bytes, chunk: int = 200) -> list[IfpPacket]:
    """Training indicator, t4-non-ecm-data chunks, sig-end (the last chunk in it)."""
    packets = [IfpPacket(modulation.indicator)]
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    for piece in pieces[:-1]:
        packets.append(IfpPacket(modulation.data_type, (DataField(FieldType.T4_NON_ECM_DATA, piece),)))
    packets.append(IfpPacket(modulation.data_type, (DataField(FieldType.T4_NON_ECM_SIG_END, pieces[-1]),)))
    return packets


def tcf(modulation: Modulation, *, good: bool = True) -> list[IfpPacket]:
    """1.5 s of zeros at the DCS rate; a bad one has a one-octet every 0.5 s."""
    octets = modulation.bit_rate * 3 // 16
    data = bytearray(octets)
    if not good:
        for i in range(0, octets, modulation.bit_rate // 16):
            data[i] = 0x55
    return image_carrier(modulation, bytes(data))


def coded_page(bitmap: bytes, width: int, height: int, compression: Compression, y_dpi: int = 196) -> bytes:
    """A page coded by SpanDSP's T.4 coder, in T.38 order (first line bit = MSB)."""
    coded = spandsp_t4_encode(bitmap, width, height, compression.value, y_dpi=y_dpi)
    return coded.translate(REVERSE_BITS)


def ecm_frames(data: bytes, frame_size: int = 256) -> list[bytes]:
    return [data[i:i + frame_size] for i in range(0, len(data), frame_size)]


def ecm_burst(modulation: Modulation, frames: dict[int, bytes], *, bad: frozenset[int] = frozenset()) -> list[IfpPacket]:
    """FCD frames (number -> octets in T.38 order) then three RCP, on the image modem."""
    packets = [IfpPacket(modulation.indicator)]
    dt = modulation.data_type
    for number, octets in frames.items():
        header = T30Frame(Fcf.FCD, bytes([number]), final=False).to_wire()
        end = FieldType.HDLC_FCS_BAD if number in bad else FieldType.HDLC_FCS_OK
        packets.append(IfpPacket(dt, (DataField(FieldType.HDLC_DATA, header + octets),)))
        packets.append(IfpPacket(dt, (DataField(end),)))
    for i in range(3):
        packets.append(IfpPacket(dt, (DataField(FieldType.HDLC_DATA, T30Frame(Fcf.RCP).to_wire()),)))
        last = i == 2
        packets.append(IfpPacket(dt, (DataField(FieldType.HDLC_FCS_OK_SIG_END if last else FieldType.HDLC_FCS_OK),)))
    packets.append(IfpPacket(T30Indicator.NO_SIGNAL))
    return packets


def pps(post: int, page: int, block: int, frames: int) -> list[IfpPacket]:
    return control(frame(Fcf.PPS, bytes([post, page, block, frames - 1])))


class Driver:
    """Feeds packets to an engine with simulated time and keeps everything it sent."""

    def __init__(self, engine: T30Receiver, now: float = 0.0) -> None:
        self.engine = engine
        self.now = now
        self.events: list = []
        self.sent: list = []  # OutgoingIfp
        self.events += engine.start(now)

    def feed(self, packets: list[IfpPacket], spacing: float = 0.02) -> list:
        new = []
        for packet in packets:
            self.now += spacing
            self._run_timers()
            new += self.engine.ifp_received(packet, self.now)
        self.events += new
        self._drain()
        return new

    def wait(self, seconds: float) -> list:
        """Let time pass, waking the engine at each of its deadlines."""
        end = self.now + seconds
        new = []
        for _ in range(10_000):
            deadline = self.engine.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            new += self.engine.handle_timer(self.now)
            self._drain()
        self.now = end
        new += self.engine.handle_timer(self.now)
        self._drain()
        self.events += new
        return new

    def _run_timers(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is not None and deadline <= self.now:
            self.events.extend(self.engine.handle_timer(self.now))
        self._drain()

    def _drain(self) -> None:
        self.sent += self.engine.ifps_to_send(self.now)

    def sent_frames(self) -> list[T30Frame]:
        """Every T.30 frame the engine has sent so far (drained up to now)."""
        frames = []
        for out in self.sent:
            for field in out.packet.fields or ():
                if field.field_type is FieldType.HDLC_DATA:
                    frames.append(T30Frame.from_wire(field.data))
        return frames

    def sent_names(self) -> list[str]:
        return [f.name for f in self.sent_frames()]

    def flush(self) -> None:
        """Take every packet queued, even those due later (the line is instantaneous here)."""
        self.sent += self.engine.ifps_to_send(float("inf"))
