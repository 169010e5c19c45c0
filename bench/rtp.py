"""RTP receive and send paths for a 20 ms G.711 stream, beside a floor measured in the same run.

* receive: ``parse_rtp`` + ``JitterBuffer.push`` for every packet and one
  ``JitterBuffer.pop`` per 20 ms tick, a clean stream (in order, 0-8 ms of jitter).
* receive, rough network: the same with 1 % loss and 0-40 ms of jitter (packets
  reordered), the sender's clock 0.5 % fast (so the buffer drops for drift).
* send: ``RtpSender.packet`` per 160-octet payload.
* floor: ``struct.unpack_from`` of the 12-octet fixed header, a dict insert and a dict
  pop per packet - the least any reordering receive path can do in Python.

Figures are packets per second of process CPU time (best of 5 alternating runs), and
microseconds of CPU per call-second (50 packets in and 50 ticks out); no assertions.

Run: .venv/bin/python bench/rtp.py [packets]
"""

from __future__ import annotations

import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rtp import JitterBuffer, RtpSender, parse_rtp  # noqa: E402

TICK = 0.020
PER_CALL_SECOND = 50  # packets of 20 ms


def make_stream(count: int, rng: random.Random, *, loss: float, jitter: float, ratio: float) -> list[tuple[float, bytes]]:
    sender = RtpSender.random(0, rng)
    arrivals = []
    for index in range(count):
        datagram = sender.packet(rng.randbytes(160))
        if rng.random() >= loss:
            arrivals.append((index * TICK / ratio + rng.uniform(0, jitter), datagram))
    arrivals.sort(key=lambda arrival: arrival[0])
    return arrivals


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(3550)
    clean = make_stream(count, rng, loss=0.0, jitter=0.008, ratio=1.0)
    rough = make_stream(count, rng, loss=0.01, jitter=0.040, ratio=1.005)
    payloads = [rng.randbytes(160) for _ in range(1000)]

    def receive(arrivals: list[tuple[float, bytes]]) -> float:
        buffer = JitterBuffer(0)
        push, pop, parse = buffer.push, buffer.pop, parse_rtp
        ticks = int(arrivals[-1][0] / TICK) + 5
        index, total = 0, len(arrivals)
        started = time.process_time()
        for tick in range(ticks):
            now = 0.010 + tick * TICK
            while index < total and arrivals[index][0] <= now:
                push(parse(arrivals[index][1]), arrivals[index][0])
                index += 1
            pop(now)
        elapsed = time.process_time() - started
        assert buffer.stats.received == total, buffer.stats
        return elapsed

    def ours_clean() -> float:
        return receive(clean)

    def ours_rough() -> float:
        return receive(rough)

    def floor() -> float:
        unpack = struct.Struct("!BBHII").unpack_from
        held: dict[int, bytes] = {}
        started = time.process_time()
        for _, datagram in clean:
            sequence = unpack(datagram)[2]
            held[sequence] = datagram[12:]
            held.pop(sequence)
        return time.process_time() - started

    def send() -> float:
        packet = RtpSender(0, 0x12345678, sequence=0, timestamp=0).packet
        started = time.process_time()
        for index in range(count):
            packet(payloads[index % 1000])
        return time.process_time() - started

    timings: dict[Callable[[], float], list[float]] = {ours_clean: [], ours_rough: [], floor: [], send: []}
    for _ in range(5):
        for function, runs in timings.items():
            runs.append(function())
    figures = {
        "receive clean (parse + push + pop)": (len(clean), min(timings[ours_clean])),
        "receive rough (1% loss, 40 ms jitter, 0.5% drift)": (len(rough), min(timings[ours_rough])),
        "send (RtpSender.packet)": (count, min(timings[send])),
        "floor (unpack header + dict insert/pop)": (len(clean), min(timings[floor])),
    }
    floor_rate = rate(*figures["floor (unpack header + dict insert/pop)"])
    print(f"RTP bench: {count} packets of 20 ms G.711 (PCMU), jitter buffer depth 60 ms, Python {sys.version.split()[0]}")
    for name, (packets, best) in figures.items():
        packets_per_second = rate(packets, best)
        per_call_second = PER_CALL_SECOND / packets_per_second * 1e6
        print(f"{name:52s} {packets_per_second:12,.0f} pkt/s   {per_call_second:7.1f} us CPU per call-second   "
              f"{packets_per_second / PER_CALL_SECOND:9,.0f} calls per core   floor/ours {floor_rate / packets_per_second:5.1f}x")


if __name__ == "__main__":
    main()
