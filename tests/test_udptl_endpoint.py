"""The trio UDPTL endpoint on real loopback sockets: port pool, NAT latching, junk, deadlines."""

from __future__ import annotations

import socket

import pytest
import trio

from udptl.codec import encode_ifp
from udptl.endpoint import PortPool, PortsExhausted
from udptl.ifp import IfpPacket, T30Indicator
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


def test_latches_to_the_real_source_and_ignores_others():
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
            # Another source, even with valid UDPTL, is not the peer.
            intruder.sendto(UdptlSender(max_datagram=400).datagram_for(ifp(T30Indicator.CED)), target)
            assert await endpoint.receive_until(trio.current_time() + 2) == []
            assert endpoint.stats.foreign_source == 1
            # Replies go where the peer really is, not where its SDP said.
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
