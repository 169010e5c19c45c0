"""UDPTL receive and send paths, packets per second, beside asn1tools measured in the same run.

* receive: ``UdptlReceiver.datagram_received`` for every datagram (UDPTL decode, sequence
  and recovery bookkeeping, IFP decode, events) of a stream sent with 3 secondaries and
  1 % loss, against asn1tools decoding the UDPTLPacket and its primary IFPPacket.
* receive FEC: the same for a stream with parity FEC (span 3, 3 entries) that loses
  bursts of 1-6 datagrams (~2 % of them), so that gaps are held, rebuilt from parity and
  their hold worked out; every IFP must come out.
* send: ``encode_ifp`` + ``UdptlSender.datagram_for`` (3 secondaries), against asn1tools
  encoding the IFPPacket and the UDPTLPacket with the same 3 secondaries.

Figures are packets per second of process CPU time (best of 5 alternating runs), so
other load on the machine disturbs them little.

Run: .venv/bin/python bench/udptl.py [packets]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from udptl import DataField, FieldType, IfpPacket, T30Data, T30Indicator, UdptlReceiver, UdptlSender, encode_ifp  # noqa: E402

from tests.udptl.oracle import ifp_to_asn1, specs  # noqa: E402

VERSION = 1


def make_packets(count: int, rng: random.Random) -> list[IfpPacket]:
    """Mostly non-ECM image data (36-100 octets, 14400 bit/s at 20-55 ms), some HDLC and indicators."""
    packets = []
    for index in range(count):
        kind = index % 20
        if kind == 0:
            packets.append(IfpPacket(T30Indicator.V17_14400_LONG_TRAINING))
        elif kind == 1:
            packets.append(IfpPacket(T30Data.V21, (DataField(FieldType.HDLC_DATA, rng.randbytes(30)),
                                                   DataField(FieldType.HDLC_FCS_OK))))
        else:
            packets.append(IfpPacket(T30Data.V17_14400, (DataField(FieldType.T4_NON_ECM_DATA,
                                                                   rng.randbytes(rng.randrange(36, 100))),)))
    return packets


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    rng = random.Random(2024)
    packets = make_packets(count, rng)
    ifps = [encode_ifp(packet, VERSION) for packet in packets]
    sender = UdptlSender(error_correction="redundancy", redundancy_depth=3, max_datagram=1400, rng=rng)
    datagrams = [sender.datagram_for(ifp) for ifp in ifps]
    arriving = [datagram for datagram in datagrams if rng.random() >= 0.01]
    fec_sender = UdptlSender(error_correction="fec", fec_span=3, fec_entries=3, max_datagram=1400, rng=rng)
    fec_datagrams = [fec_sender.datagram_for(ifp) for ifp in ifps]
    fec_arriving: list[tuple[float, bytes]] = []
    index = clear_until = 20
    fec_arriving += [(seq * 0.03, fec_datagrams[seq]) for seq in range(index)]
    while index < count:
        if clear_until <= index < count - 20 and rng.random() < 0.005:
            burst = rng.randint(1, 6)  # parity rebuilds it from the 20 datagrams after
            index += burst
            clear_until = index + 20
            continue
        fec_arriving.append((index * 0.03, fec_datagrams[index]))
        index += 1
    spec = specs(VERSION)
    reference_count = min(count, 10_000)

    def ours_receive() -> float:
        receiver = UdptlReceiver(VERSION)
        feed = receiver.datagram_received
        started = time.process_time()
        for now, datagram in enumerate(arriving):
            feed(datagram, now * 0.02)
        elapsed = time.process_time() - started
        assert receiver.stats.delivered == count and receiver.stats.lost == 0
        return elapsed

    def ours_receive_fec() -> float:
        receiver = UdptlReceiver(VERSION)
        feed, deadline, timer = receiver.datagram_received, receiver.next_deadline, receiver.handle_timer
        started = time.process_time()
        for now, datagram in fec_arriving:
            due = deadline()
            if due is not None and due <= now:
                timer(now)
            feed(datagram, now)
        elapsed = time.process_time() - started
        assert receiver.stats.delivered == count and receiver.stats.lost == 0, receiver.stats
        return elapsed

    def asn1tools_receive_fec() -> float:
        decode = spec.decode
        started = time.process_time()
        for _, datagram in fec_arriving[:reference_count]:
            decode("IFPPacket", decode("UDPTLPacket", datagram)["primary-ifp-packet"])
        return time.process_time() - started

    def asn1tools_receive() -> float:
        decode = spec.decode
        started = time.process_time()
        for datagram in arriving[:reference_count]:
            decode("IFPPacket", decode("UDPTLPacket", datagram)["primary-ifp-packet"])
        return time.process_time() - started

    def ours_send() -> float:
        send = UdptlSender(error_correction="redundancy", redundancy_depth=3, max_datagram=1400).datagram_for
        started = time.process_time()
        for packet in packets:
            send(encode_ifp(packet, VERSION))
        return time.process_time() - started

    values = [ifp_to_asn1(packet, VERSION) for packet in packets[:reference_count]]

    def asn1tools_send() -> float:
        encode = spec.encode
        previous: list[bytes] = []
        started = time.process_time()
        for seq, value in enumerate(values):
            ifp = encode("IFPPacket", value)
            encode("UDPTLPacket", {"seq-number": seq, "primary-ifp-packet": ifp,
                                   "error-recovery": ("secondary-ifp-packets", previous)})
            previous = [ifp] + previous[:2]
        return time.process_time() - started

    # The machine is shared: runs alternate and the best of each counts, in CPU time.
    timings = {ours_receive: [], asn1tools_receive: [], ours_receive_fec: [], asn1tools_receive_fec: [],
               ours_send: [], asn1tools_send: []}
    for _ in range(5):
        for function, seconds in timings.items():
            seconds.append(function())
    receive = rate(len(arriving), min(timings[ours_receive]))
    receive_ref = rate(min(len(arriving), reference_count), min(timings[asn1tools_receive]))
    receive_fec = rate(len(fec_arriving), min(timings[ours_receive_fec]))
    receive_fec_ref = rate(min(len(fec_arriving), reference_count), min(timings[asn1tools_receive_fec]))
    send = rate(count, min(timings[ours_send]))
    send_ref = rate(reference_count, min(timings[asn1tools_send]))
    print(f"UDPTL bench: {count} IFPs, redundancy depth 3, 1% loss, T.38 version {VERSION}, Python {sys.version.split()[0]}")
    print(f"receive (decode + recovery + IFP decode): ours {receive:12,.0f} pkt/s   asn1tools {receive_ref:10,.0f} pkt/s   "
          f"ratio {receive / receive_ref:5.1f}x   target >= 200,000 pkt/s and >= 10x")
    print(f"receive FEC 3x3, bursts ({count - len(fec_arriving)} lost, all rebuilt): ours {receive_fec:12,.0f} pkt/s   "
          f"asn1tools {receive_fec_ref:10,.0f} pkt/s   ratio {receive_fec / receive_fec_ref:5.1f}x")
    print(f"send    (encode IFP + UDPTL datagram):     ours {send:12,.0f} pkt/s   asn1tools {send_ref:10,.0f} pkt/s   "
          f"ratio {send / send_ref:5.1f}x")


if __name__ == "__main__":
    main()
