"""The audio fax leg of one call: RTP (G.711) <-> SpanDSP's modems <-> our T.30 engine.

When a trunk will not do T.38 the fax arrives (or leaves) as G.711 audio.  Every media
path converges on IFP, so the T.30 engines, pages, archive and webhooks stay as they are::

    RTP (PCMU/PCMA, 20 ms) <-> jitter buffer <-> G.711 <-> SpanDSP t38_gateway
        (V.21/V.27ter/V.29/V.17 modems <-> IFP) <-> T30Receiver / T30Transmitter

This class is synchronous and reads no clock: ``rtp_received(data, now)`` for each RTP
datagram the endpoint accepted from the peer, and ``tick(now)`` once every 20 ms (one
task ticks every audio call of the gateway: no timer per call per tick), which plays one
frame into the modems (or SpanDSP's fill-in for a missing one), takes one frame out as
the RTP packet to send, and moves IFPs between the modems and the engine.

IFP pacing: the engine's ``ifps_to_send(now)`` already paces its output as a modem would
(training after an indicator, TCF over 1.5 s, image data at the modem rate); SpanDSP's
gateway needs that (a burst of IFPs made every transfer fail in the prototype).  Frames
the session must hold (MCF for a page not yet on disk: ``may_send``) wait here.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rtp.errors import RtpParseError
from rtp.jitter import JitterBuffer
from rtp.packet import is_rtcp, parse_rtp
from rtp.sender import RtpSender
from udptl.codec import decode_ifp
from udptl.errors import MalformedPacket

from t38gw.audiofax import AudioFaxGateway
from t38gw.negotiation import AudioSession
from t38gw.t30.t38_io import OutgoingIfp, split_to_fit

# The IFP version between our engine and SpanDSP's gateway (inside this process only).
IFP_VERSION = 0
MAX_IFP = 400
TICK_SECONDS = 0.020


@dataclass
class AudioStats:
    """For meta.json ``rtp``."""

    packets_received: int = 0
    packets_sent: int = 0
    lost: int = 0
    late: int = 0
    jitter_ms: float = 0.0
    undecodable: int = 0
    ifps_from_modems: int = 0
    ifps_to_modems: int = 0


class AudioLeg:
    """See the module docstring.  ``engine``: a started ``T30Receiver``/``T30Transmitter``."""

    def __init__(self, audio: AudioSession, engine: Any, *, rng: random.Random, jitter_ms: int = 60,
                 ecm: bool = True, log: Callable[[int, str], None] | None = None) -> None:
        self.audio = audio
        self.engine = engine
        event_pt = audio.telephone_event if audio.telephone_event is not None and \
            96 <= audio.telephone_event <= 127 else None
        self.jitter = JitterBuffer(audio.payload_type, depth_ms=jitter_ms, telephone_event_pt=event_pt)
        self.sender = RtpSender.random(audio.payload_type, rng)
        self.modems = AudioFaxGateway(law=audio.law, ecm=ecm, t38_version=IFP_VERSION, log=log)
        self._to_modems: deque[OutgoingIfp] = deque()
        self._seq = 0
        self.undecodable = 0
        self.closed = False

    def repoint(self, audio: AudioSession) -> None:
        """A re-INVITE moved the audio (another address; the same codec keeps the buffer)."""
        if audio.payload_type != self.audio.payload_type:
            self.jitter = JitterBuffer(audio.payload_type, depth_ms=self.jitter.depth_ms)
            self.sender = RtpSender(audio.payload_type, self.sender.ssrc, sequence=self.sender.sequence,
                                    timestamp=self.sender.timestamp)
        self.audio = audio

    def rtp_received(self, data: bytes, now: float) -> None:
        if is_rtcp(data):
            return
        try:
            packet = parse_rtp(data)
        except RtpParseError:
            self.undecodable += 1
            return
        self.jitter.push(packet, now)

    def tick(self, now: float, may_send: Callable[[OutgoingIfp], bool]) -> tuple[list[Any], bytes]:
        """One 20 ms step: returns the engine's events and the RTP datagram to send."""
        payload = self.jitter.pop(now)
        if payload is None:
            self.modems.receive_missing()
        else:
            self.modems.receive_audio(payload)
        events: list[Any] = []
        engine = self.engine
        for raw in self.modems.take_ifps():
            try:
                packet = decode_ifp(raw, IFP_VERSION)
            except (MalformedPacket, ValueError):
                self.undecodable += 1
                continue
            events += engine.ifp_received(packet, now)
        deadline = engine.next_deadline()
        if deadline is not None and deadline <= now:
            events += engine.handle_timer(now)
        self._to_modems.extend(engine.ifps_to_send(now))
        while self._to_modems and may_send(self._to_modems[0]):
            out = self._to_modems.popleft()
            for raw in split_to_fit(out.packet, IFP_VERSION, MAX_IFP):
                # One copy is enough: nothing is lost between us and the modems.
                self.modems.receive_ifp(raw, self._seq)
                self._seq = (self._seq + 1) & 0xFFFF
        return events, self.sender.packet(self.modems.send_audio())

    def pending(self) -> Iterable[OutgoingIfp]:
        return tuple(self._to_modems)

    def stats(self) -> AudioStats:
        jitter = self.jitter.stats
        modems = self.modems.stats()
        return AudioStats(packets_received=jitter.received, packets_sent=self.sender.packets_sent,
                          lost=jitter.lost, late=jitter.late, jitter_ms=round(jitter.jitter, 2),
                          undecodable=self.undecodable + jitter.malformed,
                          ifps_from_modems=modems.ifps_out, ifps_to_modems=modems.ifps_in)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.modems.close()
