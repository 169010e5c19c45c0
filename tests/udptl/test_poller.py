"""The UDPTL poller (one task reading every call's socket) on real loopback sockets, fed
the IFPs a SpanDSP terminal sent in a recorded fax: what needs no answer waits to be
handed over in a batch, what ends the peer's transmission (or starts a carrier) wakes
the call's task at once, nothing is lost or reordered, and a call goes back to its own
socket when the poller stops."""

from __future__ import annotations

import random

import trio

from udptl.codec import decode_ifp
from udptl.endpoint import SIGNAL_ENDS, PortPool, UdptlPoller
from udptl.ifp import T30Indicator
from udptl.receiver import IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender
from tests.support.ports import free_range
from tests.udptl.test_endpoint import PEER_HOST, spandsp_ifps, udp

# Long enough that a task woken "at once" (under a loaded CI box) is told apart from one
# woken by the batch timer.
SLOW_BATCH = 2.0


def dcs_command() -> tuple[list[bytes], bytes]:
    """The sender's first V.21 command of the recorded fax (its HDLC data IFPs, then the
    IFP that ends it: HDLC_FCS_OK_SIG_END)."""
    sent = spandsp_ifps("sender->receiver")
    packets = [decode_ifp(raw, 0) for raw in sent]
    end = next(i for i, p in enumerate(packets) if p.fields and p.fields[-1].field_type in SIGNAL_ENDS)
    start = max(i for i, p in enumerate(packets[:end]) if p.msg is T30Indicator.V21_PREAMBLE) + 1
    assert end - start > 10  # a real command: many data IFPs before its end
    return sent[start:end], sent[end]


async def polled_pool(nursery, batch_delay: float | None = None) -> PortPool:
    """A port pool on loopback whose poller runs in ``nursery``."""
    low, high = free_range(10)
    pool = PortPool(low, high, host="127.0.0.1")
    if batch_delay is not None:
        pool.poller = UdptlPoller(batch_delay=batch_delay)
    nursery.start_soon(pool.poller.run)
    await trio.sleep(0.05)
    return pool


async def started(pool: PortPool, nursery, peer):
    endpoint = await pool.open()
    endpoint.start(peer.getsockname(), UdptlReceiver(0), UdptlSender(max_datagram=400, rng=random.Random(1)))
    return endpoint


def test_data_waits_for_a_batch_and_the_end_of_the_command_wakes_the_call_at_once():
    data, end = dcs_command()

    async def main():
        peer_sender = UdptlSender(max_datagram=400, rng=random.Random(2))
        async with trio.open_nursery() as nursery:
            pool = await polled_pool(nursery, SLOW_BATCH)
            with udp(PEER_HOST) as peer, await started(pool, nursery, peer) as endpoint:
                assert pool.poller.attached == 1
                target = ("127.0.0.1", endpoint.port)
                results: list = []

                async def read_once() -> None:
                    items = await endpoint.receive_until(trio.current_time() + 10)
                    results.append((items, trio.current_time()))

                nursery.start_soon(read_once)
                await trio.sleep(0.05)
                for raw in data:
                    peer.sendto(peer_sender.datagram_for(raw), target)
                await trio.sleep(0.5)
                # The datagrams arrived, the poller read them, and the call was not woken.
                assert results == [] and endpoint.stats.datagrams_received == len(data)
                peer.sendto(peer_sender.datagram_for(end), target)
                sent_at = trio.current_time()
                with trio.fail_after(5):
                    while not results:
                        await trio.sleep(0.01)
                [(batch, woken_at)] = results
                assert woken_at - sent_at < SLOW_BATCH / 2, woken_at - sent_at
                assert [item.raw for item in batch if isinstance(item, IfpReceived)] == [*data, end]
                first = batch[0].seq
                assert [item.seq for item in batch] == [(first + i) & 0xFFFF for i in range(len(data) + 1)]
                ended = endpoint.take_signal_end()
                assert ended is not None and ended >= sent_at - 0.01 and endpoint.take_signal_end() is None
                # Data alone is handed over when its batch is due.
                peer.sendto(peer_sender.datagram_for(data[0]), target)
                sent_at = trio.current_time()
                late = await endpoint.receive_until(trio.current_time() + 10)
                assert [item.raw for item in late] == [data[0]]
                assert trio.current_time() - sent_at >= SLOW_BATCH * 0.9
            assert pool.poller.attached == 0  # closing detached it
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_without_the_poller_every_datagram_wakes_the_call():
    # The contrast: the same command read by the call's own task costs a wake-up per
    # datagram that arrives on its own.
    data, end = dcs_command()

    async def main():
        low, high = free_range(10)
        pool = PortPool(low, high, host="127.0.0.1")
        peer_sender = UdptlSender(max_datagram=400, rng=random.Random(2))
        with udp(PEER_HOST) as peer, await started(pool, None, peer) as endpoint:
            assert pool.poller.attached == 0
            target = ("127.0.0.1", endpoint.port)
            wakes = 0
            received: list[bytes] = []
            for raw in [*data, end]:
                peer.sendto(peer_sender.datagram_for(raw), target)
                items = await endpoint.receive_until(trio.current_time() + 5)
                wakes += 1
                received += [item.raw for item in items]
            assert received == [*data, end] and wakes == len(data) + 1

    trio.run(main)


def test_an_indicator_wakes_at_once_and_a_call_returns_to_its_socket_when_the_poller_stops():
    preamble = next(raw for raw in spandsp_ifps("sender->receiver")
                    if decode_ifp(raw, 0).msg is T30Indicator.V21_PREAMBLE)
    data, _ = dcs_command()

    async def main():
        low, high = free_range(10)
        pool = PortPool(low, high, host="127.0.0.1")
        pool.poller = UdptlPoller(batch_delay=SLOW_BATCH)
        peer_sender = UdptlSender(max_datagram=400, rng=random.Random(2))
        with udp(PEER_HOST) as peer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.poller.run)
                await trio.sleep(0.05)
                endpoint = await started(pool, nursery, peer)
                target = ("127.0.0.1", endpoint.port)
                peer.sendto(peer_sender.datagram_for(preamble), target)
                sent_at = trio.current_time()
                items = await endpoint.receive_until(trio.current_time() + 5)
                assert [item.raw for item in items] == [preamble]
                assert trio.current_time() - sent_at < SLOW_BATCH / 2
                peer.sendto(peer_sender.datagram_for(data[0]), target)  # held for a batch
                await trio.sleep(0.1)
                nursery.cancel_scope.cancel()  # the poller stops
            assert not pool.poller.running and pool.poller.attached == 0
            with endpoint:
                # What it had read is handed over, then the task reads its socket itself.
                held = await endpoint.receive_until(trio.current_time() + 1)
                peer.sendto(peer_sender.datagram_for(data[1]), target)
                own = await endpoint.receive_until(trio.current_time() + 5)
                assert [item.raw for item in [*held, *own]] == data[:2]

    trio.run(main)


def test_the_poller_wakes_a_waiting_call_at_its_deadline_and_on_interrupt():
    # A call's task waits without a cancel scope of its own: its T.30 deadline and
    # ``interrupt`` (the SIP side changed something) wake it through the poller.
    async def main():
        async with trio.open_nursery() as nursery:
            pool = await polled_pool(nursery)
            with udp(PEER_HOST) as peer, await started(pool, nursery, peer) as endpoint:
                # Its deadline, a long one first and then a shorter one (it changed).
                for wait in (0.6, 0.3):
                    start = trio.current_time()
                    with trio.fail_after(5):
                        assert await endpoint.receive_until(start + wait) == []
                    assert wait <= trio.current_time() - start < wait + 0.5
                # An interrupt.
                returned: list[float] = []

                async def wait_long() -> None:
                    await endpoint.receive_until(trio.current_time() + 30)
                    returned.append(trio.current_time())

                nursery.start_soon(wait_long)
                await trio.sleep(0.1)
                assert returned == []
                asked = trio.current_time()
                endpoint.interrupt()
                with trio.fail_after(5):
                    while not returned:
                        await trio.sleep(0.01)
                assert returned[0] - asked < 0.5
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_replaced_deadlines_and_closed_calls_do_not_pile_up_in_the_poller():
    # Each new T.30 deadline adds an entry to the poller's heap; the old ones (and those
    # of calls gone) are dropped once they outnumber the live ones, so a long soak cannot
    # grow it (they would keep ended calls' receivers alive).
    async def main():
        async with trio.open_nursery() as nursery:
            pool = await polled_pool(nursery)
            with udp(PEER_HOST) as peer:
                live = await started(pool, nursery, peer)
                gone = await started(pool, nursery, peer)
                now = trio.current_time()
                for index in range(2000):
                    pool.poller.wake_at(live, now + 100 + index)
                    pool.poller.wake_at(gone, now + 200 + index)
                gone.close()
                pool.poller.poll(trio.current_time())
                kept = pool.poller._deadlines
                assert len(kept) == 1 and kept[0][2] is live and kept[0][0] == now + 100 + 1999
                live.close()
            nursery.cancel_scope.cancel()

    trio.run(main)
