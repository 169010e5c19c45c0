"""A whole fax call in simulated time: SpanDSP's T.38 terminal sends, our engine receives.

Each IFP either side emits is encoded with our IFP codec, framed by our UDPTL sender,
passed through a channel (perfect, or a seeded impairment model), and recovered by our
UDPTL receiver before it reaches the other side in order - SpanDSP's
``t38_core_rx_ifp_packet`` drops packets that arrive out of order, so its side gets
recovered packets too.  SpanDSP is advanced every 20 ms of simulated time
(``t38_terminal_send_timeout``); the engine is woken at its own deadlines.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from t38gw.t30 import CallEnded, Event, PageReceived, ReceiverConfig, T30Receiver
from t38gw.t30.t38_io import split_to_fit
from udptl.receiver import IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender
from tests.peers.spandsp import SpandspT38Terminal

TICK = 0.02
SAMPLES_PER_TICK = 160

Channel = Callable[[bytes, float], list[tuple[float, bytes]]]


def perfect_channel(datagram: bytes, now: float) -> list[tuple[float, bytes]]:
    return [(now + 0.01, datagram)]


class _Link:
    """One direction: our UDPTL sender -> channel -> our UDPTL receiver."""

    def __init__(self, version: int, channel: Channel, rng: random.Random, *, redundancy: int, fec: bool,
                 max_datagram: int = 1400) -> None:
        self.version = version
        self.channel = channel
        mode = ("fec" if fec else "redundancy") if (redundancy or fec) else "none"
        self.sender = UdptlSender(error_correction=mode, redundancy_depth=redundancy, max_datagram=max_datagram, rng=rng)
        self.receiver = UdptlReceiver(version)
        self.in_flight: list[tuple[float, int, bytes]] = []
        self.sent_by_seq: dict[int, bytes] = {}
        self.wrong_deliveries = 0
        self.wrong_examples: list = []
        self._order = itertools.count()
        self.datagrams = 0

    def send(self, ifp: bytes, now: float) -> None:
        self.sent_by_seq[self.sender.seq] = ifp
        datagram = self.sender.datagram_for(ifp)
        self.datagrams += 1
        for deliver_at, data in self.channel(datagram, now):
            heapq.heappush(self.in_flight, (deliver_at, next(self._order), data))

    def deliver(self, now: float) -> list:
        """Datagrams due by ``now`` through the receiver: IfpReceived / IfpLost items."""
        out = []
        while self.in_flight and self.in_flight[0][0] <= now:
            _, _, data = heapq.heappop(self.in_flight)
            out.extend(self.receiver.datagram_received(data, now))
        deadline = self.receiver.next_deadline()
        if deadline is not None and deadline <= now:
            out.extend(self.receiver.handle_timer(now))
        for item in out:
            if isinstance(item, IfpReceived) and item.raw != self.sent_by_seq.get(item.seq):
                self.wrong_deliveries += 1
                self.wrong_examples.append((item.seq, item.raw, self.sent_by_seq.get(item.seq)))
        return out


@dataclass
class CallOutcome:
    sender_status: int | None
    events: list[Event]
    engine: T30Receiver
    sender_stats: dict
    sim_seconds: float
    spandsp_frames: list = field(default_factory=list)
    malformed_ifps: int = 0
    wrong_deliveries: int = 0  # IFPs UDPTL delivered under a seq that carried other bytes
    decoded_ahead: int = 0  # pages decoded "on another thread" (run_call's decode_ahead)

    @property
    def pages(self) -> list[PageReceived]:
        return [e for e in self.events if isinstance(e, PageReceived)]

    @property
    def call_ended(self) -> CallEnded | None:
        ended = [e for e in self.events if isinstance(e, CallEnded)]
        return ended[-1] if ended else None


def run_call(
    tx_tiff,
    *,
    ecm: bool = True,
    compressions=frozenset({"mh", "mr", "mmr"}),
    version: int = 0,
    config: ReceiverConfig | None = None,
    decoder_factory=None,
    to_engine: Channel = perfect_channel,
    to_sender: Channel = perfect_channel,
    redundancy: int = 0,
    fec: bool = False,
    seed: int = 1,
    max_bitrate: int = 14400,
    max_sim_seconds: float = 900.0,
    sender_ident: str = "+1 555 0199",
    transferred_tcf: bool = True,
    stop_sender_at: float | None = None,
    tamper: Callable[[bytes, float], bytes | None] | None = None,
    configure_sender: Callable[[SpandspT38Terminal], None] | None = None,
    sender_max_datagram: int = 1400,
    decode_ahead: float | None = None,
    log=False,
) -> CallOutcome:
    """Run one call to its end (both sides finished) or ``max_sim_seconds``.

    ``tamper(ifp, now)`` may rewrite or drop (None) an IFP SpanDSP sends, before UDPTL.
    ``stop_sender_at`` pulls the plug on SpanDSP (t30_terminate, no more packets) then.
    ``decode_ahead`` (s) does what the gateway's session does with the engine's
    ``page_decode_ahead``: run each attempt and hand its result back that much later.
    """
    rng = random.Random(seed)
    engine = T30Receiver(config or ReceiverConfig(local_ident="+1 555 0100"), decoder_factory=decoder_factory)
    to_engine_link = _Link(version, to_engine, random.Random(rng.random()), redundancy=redundancy, fec=fec)
    to_sender_link = _Link(version, to_sender, random.Random(rng.random()), redundancy=redundancy, fec=fec,
                           max_datagram=sender_max_datagram)
    events: list[Event] = []
    now = 0.0
    sender_alive = True
    malformed = 0
    decoding: list = []  # (when the result is handed back, attempt, result)
    decoded_ahead = 0

    def on_sender_ifp(ifp: bytes, count: int) -> None:
        if not sender_alive:
            return
        data = tamper(ifp, now) if tamper else ifp
        if data is None:
            return
        for _ in range(max(count, 1)):
            to_engine_link.send(data, now)

    sender = SpandspT38Terminal(
        calling_party=True, on_ifp=on_sender_ifp, version=version, ecm=ecm, compressions=compressions,
        ident=sender_ident, tx_tiff=tx_tiff, max_bitrate=max_bitrate, transferred_tcf=transferred_tcf, log=log,
    )
    with sender:
        if configure_sender is not None:
            configure_sender(sender)
        events.extend(engine.start(now))
        ticks = int(max_sim_seconds / TICK)
        for tick in range(ticks):
            now = tick * TICK
            for item in to_engine_link.deliver(now):
                if isinstance(item, IfpReceived):
                    packet = item.packet
                    if packet is None:
                        # An IFP that does not decode is as good as lost (the gateway does the same).
                        malformed += 1
                        events.extend(engine.ifps_lost(1, now))
                    else:
                        events.extend(engine.ifp_received(packet, now))
                else:
                    events.extend(engine.ifps_lost(len(item.seqs), now))
            deadline = engine.next_deadline()
            if deadline is not None and deadline <= now:
                events.extend(engine.handle_timer(now))
            if decode_ahead is not None:
                while decoding and decoding[0][0] <= now:
                    _, attempt, result = decoding.pop(0)
                    engine.page_decoded_ahead(attempt, result)
                attempt = engine.page_decode_ahead()
                if attempt is not None:
                    decoded_ahead += 1
                    decoding.append((now + decode_ahead, attempt, attempt.run()))
            for out in engine.ifps_to_send(now):
                # As the gateway does: split what would not fit the peer's T38FaxMaxDatagram.
                for raw in split_to_fit(out.packet, version, to_sender_link.sender.max_ifp):
                    for _ in range(out.repeat):
                        to_sender_link.send(raw, now)
            for item in to_sender_link.deliver(now):
                if isinstance(item, IfpReceived) and sender_alive:
                    sender.rx_ifp(item.raw, item.seq)
            if stop_sender_at is not None and sender_alive and now >= stop_sender_at:
                sender_alive = False
                sender.terminate()
            if engine.finished and (sender.phase_e_status is not None or not sender_alive):
                break
            if sender_alive:
                sender.advance(SAMPLES_PER_TICK)
        return CallOutcome(sender.phase_e_status, events, engine, sender.stats(), now, list(sender.frames),
                           malformed_ifps=malformed,
                           wrong_deliveries=to_engine_link.wrong_deliveries + to_sender_link.wrong_deliveries,
                           decoded_ahead=decoded_ahead)
