"""The trio UDPTL endpoint on real loopback sockets: port pool, NAT latching, junk, deadlines."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
import trio

from udptl.codec import encode_ifp
from udptl.endpoint import ForeignDatagrams, PortPool, PortsExhausted
from udptl.ifp import DataField, FieldType, IfpPacket, T30Data, T30Indicator
from udptl.receiver import IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender
from tests.support.ports import free_range


def ifp(indicator: T30Indicator) -> bytes:
    return encode_ifp(IfpPacket(indicator), 0)


def test_pool_hands_out_distinct_ports_and_takes_them_back():
    async def main():
        low, high = free_range(3)
        pool = PortPool(low, high, host="127.0.0.1")
        endpoints = []
        for _ in range(3):
            try:
                endpoints.append(await pool.open())
            except PortsExhausted:
                break  # a port of the range is held by someone else; still distinct below
        ports = [e.port for e in endpoints]
        assert len(set(ports)) == len(ports) and all(low <= p <= high for p in ports)
        with pytest.raises(PortsExhausted):
            for _ in range(4):
                await pool.open()
        for endpoint in endpoints:
            endpoint.close()
        assert pool.in_use == 0
        again = await pool.open()
        assert low <= again.port <= high
        again.close()

    trio.run(main)


def test_latches_to_the_port_the_peer_really_sends_from():
    async def main():
        low, high = free_range(20)
        pool = PortPool(low, high, host="127.0.0.1")
        with await pool.open() as endpoint, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as advertised, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as real, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            for s in (advertised, real, intruder):
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
            endpoint.start(advertised.getsockname(), UdptlReceiver(0),
                           UdptlSender(error_correction="redundancy", max_datagram=400))
            peer = UdptlSender(error_correction="redundancy", max_datagram=400)
            target = ("127.0.0.1", endpoint.port)
            # Junk first (not UDPTL): counted, no latch, no event.
            real.sendto(b"\x80\x00junk-rtp", target)
            assert await endpoint.receive_until(trio.current_time() + 2) == []
            assert endpoint.latched is None and endpoint.stats.undecodable == 1
            real.sendto(peer.datagram_for(ifp(T30Indicator.CNG)), target)
            events = await endpoint.receive_until(trio.current_time() + 2)
            assert [type(e) for e in events] == [IfpReceived]
            assert endpoint.latched == real.getsockname()
            # Another port, even with valid UDPTL, is not the peer; the first one is reported.
            intruder.sendto(UdptlSender(max_datagram=400).datagram_for(ifp(T30Indicator.CED)), target)
            assert await endpoint.receive_until(trio.current_time() + 2) == [
                ForeignDatagrams(intruder.getsockname(), 1)]
            assert endpoint.stats.foreign_source == 1
            # Replies go where the peer really is (symmetric RTP), not where its SDP said.
            await endpoint.send_ifp(ifp(T30Indicator.CED))
            await trio.sleep(0.05)
            data, _ = real.recvfrom(2048)
            receiver = UdptlReceiver(0)
            [received] = receiver.datagram_received(data, 0.0)
            assert received.packet == IfpPacket(T30Indicator.CED)
            with pytest.raises(BlockingIOError):
                advertised.recvfrom(2048)

    trio.run(main)


def test_returns_at_the_deadline_with_nothing():
    async def main():
        low, high = free_range(20)
        with await PortPool(low, high, host="127.0.0.1").open() as endpoint:
            start = trio.current_time()
            assert await endpoint.receive_until(start + 0.05) == []
            assert trio.current_time() >= start + 0.05

    trio.run(main)


# -- media hijack (issue 9, item 1) ------------------------------------------------------
# A third host (127.0.0.2) sends valid UDPTL with real SpanDSP IFP bytes to the call's
# port while the peer (127.0.0.1) streams a real SpanDSP page.  It must get nothing and
# change nothing.

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "spandsp_ifp"
PEER_HOST, ATTACKER_HOST, NAT_HOST = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def spandsp_ifps(direction: str, name: str = "v0_nonecm_mh.jsonl") -> list[bytes]:
    """The IFPs one SpanDSP terminal sent in a recorded fax (see the vectors' README)."""
    rows = [json.loads(line) for line in (VECTORS / name).read_text().splitlines()]
    return [bytes.fromhex(row["ifp"]) for row in rows if row["dir"] == direction]


def udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    """The datagrams waiting on a non-blocking socket."""
    got = []
    while True:
        try:
            got.append(sock.recvfrom(2048)[0])
        except BlockingIOError:
            return got


async def collect(endpoint, items: list, until) -> None:
    """Read from the endpoint until ``until(items)`` holds (at most 5 s)."""
    with trio.fail_after(5):
        while not until(items):
            items.extend(await endpoint.receive_until(trio.current_time() + 5))


def delivered(items) -> list[bytes]:
    return [item.raw for item in items if isinstance(item, IfpReceived)]


@pytest.mark.parametrize("attacker_first", [True, False], ids=["attacker-first", "peer-first"])
def test_a_third_host_cannot_take_or_feed_the_call_media(attacker_first):
    page = spandsp_ifps("sender->receiver")  # the fax the peer sends
    forged = spandsp_ifps("receiver->sender")  # other real SpanDSP IFPs, as the attacker's payload

    async def main():
        low, high = free_range(20)
        with await PortPool(low, high, host="127.0.0.1").open() as endpoint, \
                udp(PEER_HOST) as peer, udp(ATTACKER_HOST) as attacker:
            target = ("127.0.0.1", endpoint.port)
            endpoint.start(peer.getsockname(), UdptlReceiver(0),
                           UdptlSender(error_correction="redundancy", max_datagram=400))
            ours = UdptlSender(error_correction="redundancy", redundancy_depth=3, max_datagram=400,
                               rng=random.Random(5))
            # The attacker even knows the numbering: each of its datagrams carries the next
            # number of the peer's stream, the strongest blind guess there is.
            theirs = UdptlSender(error_correction="redundancy", redundancy_depth=3, max_datagram=400)
            items: list = []
            sent_by_attacker = 0
            if attacker_first:
                theirs.seq = ours.seq
                for index in range(8):
                    attacker.sendto(theirs.datagram_for(forged[index]), target)
                    sent_by_attacker += 1
                await collect(endpoint, items, lambda got: endpoint.stats.datagrams_received == sent_by_attacker)
                assert endpoint.latched is None and delivered(items) == []  # it took nothing
            for index, raw in enumerate(page):
                theirs.seq = ours.seq
                spoof = theirs.datagram_for(forged[index % len(forged)])
                if attacker_first:
                    attacker.sendto(spoof, target)
                peer.sendto(ours.datagram_for(raw), target)
                if not attacker_first:
                    attacker.sendto(spoof, target)
                sent_by_attacker += 1
                await collect(endpoint, items,
                              lambda got: len(delivered(got)) == index + 1  # noqa: B023
                              and endpoint.stats.foreign_source == sent_by_attacker)  # noqa: B023 (awaited at once)
            assert delivered(items) == page  # every IFP of the peer, in order, nothing else
            assert endpoint.latched == peer.getsockname()
            assert endpoint.destination == peer.getsockname()
            assert endpoint.stats.foreign_source == sent_by_attacker
            assert endpoint.receiver.stats.received == len(page)
            assert [item for item in items if isinstance(item, ForeignDatagrams)] == [
                ForeignDatagrams(attacker.getsockname(), 1)]
            # Our side of the fax goes to the peer, never to the attacker.
            for raw in forged[:5]:
                await endpoint.send_ifp(raw)
            await trio.sleep(0.05)
            copies = UdptlReceiver(0)
            assert [item.raw for data in drain(peer) for item in copies.datagram_received(data, 0.0)] == forged[:5]
            assert drain(attacker) == []

    trio.run(main)


def test_strict_never_moves_to_another_host_and_learn_follows_a_rebinding_until_frozen():
    page = spandsp_ifps("sender->receiver")[:60]

    async def run(latching: str, freeze_after: int | None):
        low, high = free_range(20)
        with await PortPool(low, high, host="127.0.0.1").open() as endpoint, \
                udp(PEER_HOST) as first, udp(NAT_HOST) as rebound:
            target = ("127.0.0.1", endpoint.port)
            endpoint.start(first.getsockname(), UdptlReceiver(0), UdptlSender(max_datagram=400),
                           latching=latching)
            sender = UdptlSender(error_correction="none", max_datagram=400, rng=random.Random(9))
            items: list = []
            for index, raw in enumerate(page):
                # Half way the peer's NAT gives it a new public address (another host).
                sock = first if index < 30 else rebound
                if freeze_after is not None and index == freeze_after:
                    endpoint.freeze_latch()
                sock.sendto(sender.datagram_for(raw), target)
                await collect(endpoint, items, lambda got: endpoint.stats.datagrams_received == index + 1)  # noqa: B023
            return endpoint.latched, endpoint.stats, delivered(items), first.getsockname(), rebound.getsockname()

    latched, stats, got, first, rebound = trio.run(run, "strict", None)
    assert latched == first and got == page[:30] and stats.foreign_source == 30 and stats.latch_moves == 0
    latched, stats, got, first, rebound = trio.run(run, "learn", None)
    # Four in sequence from the new host, then it is the peer; the three held are not lost.
    assert latched == rebound and got == page and stats.latch_moves == 1 and stats.foreign_source == 3
    latched, stats, got, first, rebound = trio.run(run, "learn", 10)  # a page was confirmed at IFP 10
    assert latched == first and got == page[:30] and stats.foreign_source == 30 and stats.latch_moves == 0


def test_an_unroutable_sdp_address_is_replaced_by_the_expected_host():
    async def main():
        low, high = free_range(20)
        with await PortPool(low, high, host="127.0.0.1").open() as endpoint, \
                udp(PEER_HOST) as peer, udp(ATTACKER_HOST) as attacker:
            target = ("127.0.0.1", endpoint.port)
            # The SDP names the peer's private address; the SIP request came from 127.0.0.1.
            endpoint.start(("10.99.0.5", peer.getsockname()[1]), UdptlReceiver(0), UdptlSender(max_datagram=400),
                           expected_host=PEER_HOST)
            assert endpoint.destination == peer.getsockname()  # the SDP port on the SIP host, not 10.99.0.5
            attacker.sendto(UdptlSender(max_datagram=400).datagram_for(ifp(T30Indicator.CNG)), target)
            items: list = []
            await collect(endpoint, items, lambda got: endpoint.stats.foreign_source == 1)
            assert endpoint.latched is None and endpoint.destination == peer.getsockname()
            peer.sendto(UdptlSender(max_datagram=400).datagram_for(ifp(T30Indicator.CNG)), target)
            await collect(endpoint, items, lambda got: delivered(got))
            assert endpoint.latched == peer.getsockname()
            assert [type(item) for item in items] == [ForeignDatagrams, IfpReceived]

    trio.run(main)


def stripes_page(width: int = 1728, height: int = 240) -> bytes:
    """A page with vertical bars and horizontal rules: cheap to code, easy to misplace."""
    row_bytes = width // 8
    rows = []
    for y in range(height):
        if y % 24 < 2:
            rows.append(b"\xff" * row_bytes)
        else:
            rows.append(bytes(0xF0 if (x // 8) % 3 == 0 else 0 for x in range(0, width, 8)))
    return b"".join(rows)


def test_a_real_spandsp_fax_through_the_endpoint_is_untouched_by_a_third_host(tmp_path):
    # A SpanDSP T.38 terminal on 127.0.0.1 faxes a page through our endpoint to a SpanDSP
    # receiving terminal behind it; a third host (127.0.0.2) races every datagram with a
    # forged one (non-ECM image rows of its own, numbered as the peer's next datagram) and
    # listens for what we send.  The page arrives pixel-identical, the call ends T30_ERR_OK
    # on both sides, every forged datagram is counted, and the third host hears nothing.
    from tests.peers.spandsp import T30_ERR_OK, SpandspT38Terminal, make_fax_tiff, read_fax_tiff

    width, height = 1728, 240
    bitmap = stripes_page(width, height)
    tx, rx = tmp_path / "tx.tif", tmp_path / "rx.tif"
    make_fax_tiff(tx, [(bitmap, width, height)])
    forged = encode_ifp(IfpPacket(T30Data.V17_14400, (DataField(FieldType.T4_NON_ECM_DATA, b"\x00\x80" * 30),)), 0)

    async def main():
        peer_out: list[bytes] = []
        our_out: list[bytes] = []
        low, high = free_range(20)
        with await PortPool(low, high, host="127.0.0.1").open() as endpoint, \
                udp(PEER_HOST) as peer, udp(ATTACKER_HOST) as attacker, \
                SpandspT38Terminal(calling_party=True, on_ifp=lambda ifp, count: peer_out.extend([ifp] * max(count, 1)),
                                   ecm=False, tx_tiff=tx) as calling, \
                SpandspT38Terminal(calling_party=False, on_ifp=lambda ifp, count: our_out.extend([ifp] * max(count, 1)),
                                   ecm=False, rx_tiff=rx) as answering:
            target = ("127.0.0.1", endpoint.port)
            endpoint.start(peer.getsockname(), UdptlReceiver(0),
                           UdptlSender(error_correction="redundancy", max_datagram=400, rng=random.Random(1)))
            peer_sender = UdptlSender(error_correction="redundancy", max_datagram=400, rng=random.Random(2))
            peer_receiver = UdptlReceiver(0)
            spoofer = UdptlSender(error_correction="redundancy", max_datagram=400)
            sent = forged_sent = 0
            heard_by_attacker: list[bytes] = []
            items: list = []
            for tick in range(4000):  # at most 80 s of SpanDSP time
                calling.advance(160)
                answering.advance(160)
                for ifp in peer_out:
                    spoofer.seq = peer_sender.seq
                    attacker.sendto(spoofer.datagram_for(forged), target)
                    peer.sendto(peer_sender.datagram_for(ifp), target)
                    sent += 2
                    forged_sent += 1
                peer_out.clear()
                with trio.fail_after(5):
                    while endpoint.stats.datagrams_received < sent:
                        for item in await endpoint.receive_until(trio.current_time() + 5):
                            items.append(item)
                            if isinstance(item, IfpReceived):
                                answering.rx_ifp(item.raw, item.seq)
                for ifp in our_out:
                    await endpoint.send_ifp(ifp)
                our_out.clear()
                for data in drain(peer):
                    for item in peer_receiver.datagram_received(data, tick * 0.02):
                        if isinstance(item, IfpReceived):
                            calling.rx_ifp(item.raw, item.seq)
                heard_by_attacker += drain(attacker)
                if calling.phase_e_status is not None and answering.phase_e_status is not None:
                    break
            assert (calling.phase_e_status, answering.phase_e_status) == (T30_ERR_OK, T30_ERR_OK)
            assert forged_sent > 100 and endpoint.stats.foreign_source == forged_sent
            assert endpoint.latched == peer.getsockname() and endpoint.receiver.stats.lost == 0
            assert [item for item in items if isinstance(item, ForeignDatagrams)] == [
                ForeignDatagrams(attacker.getsockname(), 1)]
            assert heard_by_attacker == []
            assert endpoint.stats.datagrams_sent > 20 and peer_receiver.stats.received == endpoint.stats.datagrams_sent

    trio.run(main)
    [(received, got_width, got_height, _, _)] = read_fax_tiff(rx)
    assert (got_width, got_height) == (width, height) and received == bitmap


def _rtp(seq: int, payload: bytes = b"\xff" * 160) -> bytes:
    # RFC 3550 5.1 by hand: V=2, PT 0 (PCMU), sequence, timestamp, SSRC.
    return bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + b"\x12\x34\x56\x78" + payload


def test_audio_leg_takes_rtp_from_the_signalled_host_only_and_sends_without_awaiting():
    from udptl.endpoint import AudioDatagram

    async def main():
        low, high = free_range(20)
        pool = PortPool(low, high, host="0.0.0.0")
        with await pool.open() as endpoint, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            peer.bind(("127.0.0.1", 0))
            intruder.bind(("127.0.0.2", 0))
            for s in (peer, intruder):
                s.setblocking(False)
            # The SDP names the peer's host and a port it never sends from: the port is learnt.
            endpoint.start_audio(("127.0.0.1", 9), latching="strict")
            got = []
            intruder.sendto(_rtp(1), ("127.0.0.1", endpoint.port))
            peer.sendto(_rtp(7), ("127.0.0.1", endpoint.port))
            peer.sendto(b"\x80\xc8" + b"\x00" * 26, ("127.0.0.1", endpoint.port))  # RTCP sender report
            peer.sendto(_rtp(8), ("127.0.0.1", endpoint.port))
            with trio.move_on_after(2):
                while len([i for i in got if isinstance(i, AudioDatagram)]) < 2:
                    got += await endpoint.receive_until(trio.current_time() + 1)
            audio = [i for i in got if isinstance(i, AudioDatagram)]
            assert [a.data[2:4] for a in audio] == [b"\x00\x07", b"\x00\x08"]
            assert [type(i) for i in got if not isinstance(i, AudioDatagram)] == [ForeignDatagrams]
            assert endpoint.stats.foreign_source == 1 and endpoint.stats.undecodable == 1
            assert endpoint.latched == peer.getsockname()
            # Our RTP goes to where the peer really sends from, not to the SDP's port 9.
            endpoint.send_audio_now(_rtp(100))
            await trio.sleep(0.05)
            data, source = peer.recvfrom(2048)
            assert data == _rtp(100) and source[1] == endpoint.port
            with pytest.raises(BlockingIOError):
                intruder.recvfrom(2048)
            # T.38 negotiated: the same port now takes UDPTL, and RTP is no longer audio.
            receiver = UdptlReceiver(0)
            endpoint.start(peer.getsockname(), receiver, UdptlSender(error_correction="none", max_datagram=400),
                           latching="strict")
            peer.sendto(_rtp(9), ("127.0.0.1", endpoint.port))
            later = []
            with trio.move_on_after(0.5):
                later += await endpoint.receive_until(trio.current_time() + 0.3)
            assert not [i for i in later if isinstance(i, AudioDatagram)]

    trio.run(main)


def test_drain_audio_reads_every_waiting_rtp_datagram_without_awaiting():
    from udptl.endpoint import AudioDatagram

    async def main():
        low, high = free_range(20)
        pool = PortPool(low, high, host="0.0.0.0")
        with await pool.open() as endpoint, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            endpoint.start_audio(("127.0.0.1", peer.getsockname()[1]), latching="strict")
            assert endpoint.drain_audio(trio.current_time()) == []
            for seq in range(5):
                peer.sendto(_rtp(seq), ("127.0.0.1", endpoint.port))
            await trio.sleep(0.05)  # in the kernel's queue; nobody reads
            got = endpoint.drain_audio(trio.current_time())
            assert [g.data[2:4] for g in got if isinstance(g, AudioDatagram)] == \
                [seq.to_bytes(2, "big") for seq in range(5)]
            assert endpoint.drain_audio(trio.current_time()) == []

    trio.run(main)
