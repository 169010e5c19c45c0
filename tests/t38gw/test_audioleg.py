"""The audio fax leg in simulated time: SpanDSP's AUDIO fax terminal as the far end, its
G.711 carried in real RTP packets (built by our ``RtpSender``, reordered, jittered and
dropped on the way) into ``AudioLeg`` (jitter buffer, SpanDSP's modems, our T.30 engine)
and back.  The leg is ticked every 20 ms as the gateway's audio ticker does; what the
engines produce is checked pixel for pixel against what SpanDSP sent or received."""

from __future__ import annotations

import heapq
import random

import pytest

import imaging
from t38gw.audioleg import AudioLeg
from t38gw.negotiation import AudioSession
from t38gw.t30 import CallEnded, PageReceived, ReceiverConfig, T30Receiver, T30Result
from t38gw.t30.transmitter import T30Transmitter, TransmitterConfig
from rtp.sender import RtpSender
from tests.peers.spandsp import T30_ERR_OK, make_fax_tiff, read_fax_tiff
from tests.peers.spandsp_audio import SpandspAudioTerminal
from tests.t38gw.t30.pages import random_page

TICK = 0.02


def pages(count: int, seed: int) -> list[imaging.Page]:
    rng = random.Random(seed)
    return [imaging.Page(1728, 120, 204, 196, random_page(rng, 1728, 120)) for _ in range(count)]


class Network:
    """One direction of RTP: each datagram is delayed 20-60 ms (so packets overtake each
    other) and dropped with probability ``loss``."""

    def __init__(self, rng: random.Random, loss: float = 0.0, jitter: float = 0.04) -> None:
        self.rng, self.loss, self.jitter = rng, loss, jitter
        self.queue: list[tuple[float, int, bytes]] = []
        self.count = 0

    def send(self, datagram: bytes, now: float) -> None:
        self.count += 1
        if self.rng.random() >= self.loss:
            heapq.heappush(self.queue, (now + 0.02 + self.rng.random() * self.jitter, self.count, datagram))

    def due(self, now: float) -> list[tuple[float, bytes]]:
        out = []
        while self.queue and self.queue[0][0] <= now:
            at, _, data = heapq.heappop(self.queue)
            out.append((at, data))
        return out


def run(tmp_path, *, we_send: bool, law: str = "ulaw", ecm: bool = True, loss: float = 0.0, seed: int = 1,
        count: int = 2, max_seconds: float = 240.0):
    rng = random.Random(seed)
    sent_pages = pages(count, seed)
    if we_send:
        engine = T30Transmitter(TransmitterConfig(local_ident="+1 555 0100", ecm=ecm), sent_pages)
        far = SpandspAudioTerminal(calling_party=False, law=law, ecm=ecm, rx_tiff=tmp_path / "rx.tif",
                                   ident="+1 555 0200")
    else:
        engine = T30Receiver(ReceiverConfig(local_ident="+1 555 0100"))
        make_fax_tiff(tmp_path / "tx.tif", [(p.bitmap, p.width, p.height) for p in sent_pages])
        far = SpandspAudioTerminal(calling_party=True, law=law, ecm=ecm, tx_tiff=tmp_path / "tx.tif",
                                   ident="+1 555 0200")
    audio = AudioSession(remote=("192.0.2.9", 4000), payload_type=0 if law == "ulaw" else 8)
    leg = AudioLeg(audio, engine, rng=rng, jitter_ms=60, ecm=ecm)
    far_sender = RtpSender.random(audio.payload_type, rng)
    to_us, to_far = Network(rng, loss), Network(rng, loss)
    far_buffer: dict[int, bytes] = {}
    far_next: int | None = None
    events = list(engine.start(0.0))
    now = 0.0
    try:
        for tick in range(int(max_seconds / TICK)):
            now = tick * TICK
            for at, data in to_us.due(now):
                leg.rtp_received(data, at)
            new, datagram = leg.tick(now, lambda out: True)
            events += new
            to_far.send(datagram, now)
            # The far end: a minimal playout of ours (60 ms late, by sequence; fill-in for gaps).
            for _, data in to_far.due(now):
                seq = data[2] << 8 | data[3]
                far_buffer[seq] = data[12:]
                if far_next is None:
                    far_next = seq
            if far_next is not None and tick >= 3:
                block = far_buffer.pop(far_next, None)
                far_next = (far_next + 1) & 0xFFFF
                if block is None:
                    far.rx_missing()
                else:
                    far.rx_audio(block)
            to_us.send(far_sender.packet(far.tx_audio()), now)
            if any(isinstance(e, CallEnded) for e in events) and far.phase_e_status is not None and engine.finished:
                break
    finally:
        stats = leg.stats()
        leg.close()
        far.close()
    ended = [e for e in events if isinstance(e, CallEnded)]
    return sent_pages, events, ended, far.phase_e_status, stats, now


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "noecm"])
def test_spandsp_audio_terminal_sends_to_us_over_rtp(tmp_path, law, ecm):
    sent, events, ended, far_status, stats, _ = run(tmp_path, we_send=False, law=law, ecm=ecm)
    assert far_status == T30_ERR_OK and ended and ended[0].result is T30Result.OK, ended
    received = [e for e in events if isinstance(e, PageReceived)]
    assert [(p.width, p.height) for p in received] == [(s.width, s.height) for s in sent]
    assert [p.bitmap for p in received] == [s.bitmap for s in sent]
    assert stats.packets_received > 100 and stats.packets_sent > 100


@pytest.mark.parametrize("ecm", [True, False], ids=["ecm", "noecm"])
def test_we_send_to_a_spandsp_audio_terminal_over_rtp(tmp_path, ecm):
    sent, events, ended, far_status, stats, _ = run(tmp_path, we_send=True, law="alaw", ecm=ecm)
    assert far_status == T30_ERR_OK and ended and ended[0].result is T30Result.OK, ended
    got = read_fax_tiff(tmp_path / "rx.tif")
    assert [(w, h) for _, w, h, _, _ in got] == [(s.width, s.height) for s in sent]
    assert [bits for bits, *_ in got] == [s.bitmap for s in sent]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ecm_fax_survives_rtp_loss_and_reordering(tmp_path, seed):
    # 0.1 % of the RTP packets lost each way, 20-60 ms of jitter: SpanDSP's fill-in and ECM
    # retransmission carry the fax through (the loss figure).
    sent, events, ended, far_status, stats, _ = run(tmp_path, we_send=False, ecm=True, loss=0.001, seed=seed)
    assert far_status == T30_ERR_OK and ended[0].result is T30Result.OK, ended
    assert [e.bitmap for e in events if isinstance(e, PageReceived)] == [s.bitmap for s in sent]
    assert stats.jitter_ms > 0
