"""TCP/TLS resource limits on real loopback sockets (issue 9, "SIP over TCP/TLS"): per-source
and global connection caps for sources outside allow_from, the deadline for the first complete
message, the idle timeout (RFC 5626 keep-alives keep a flow open and are answered), the TLS
handshake timeout.  The gateway trusts 127.0.0.1 only; 127.0.0.2-127.0.0.9 play untrusted
peers.  Timeouts are made small through the endpoint's parameters; every wait is bounded."""

from __future__ import annotations

import random
import ssl

import trio

from sip.parser import parse_message
from sip.transport import SipEndpoint, server_ssl_context
from sip.ua import CallEstablished, CallTerminated, InviteReceived, RequestRefused, UAConfig, UserAgent
from tests.sip_ua.test_transport import self_signed, make_endpoint, next_event, run_in_trio
from tests.sip_ua.test_ua import AUDIO, AUDIO_B
from tests.sip_ua.wire import request_bytes


def gateway(transport: str = "tcp", **kw) -> SipEndpoint:
    config = UAConfig(listen={transport: ("127.0.0.1", 0)}, user="gw", allow_from=("127.0.0.1/32",))
    return SipEndpoint(UserAgent(config, rng=random.Random(1)), [f"{transport}:127.0.0.1:0"], **kw)


def options(branch: str, transport: str = "TCP") -> bytes:
    return request_bytes("OPTIONS", branch=branch, sent_by="127.0.0.1:5999").replace(b"SIP/2.0/UDP", f"SIP/2.0/{transport}".encode())


async def connect(ep: SipEndpoint, source: str) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", ep.bound["tcp"][1], local_address=source)


async def served(stream, branch: str, transport: str = "TCP") -> bool:
    """Whether an OPTIONS on ``stream`` is answered 200 (False: the server closed it)."""
    try:
        await stream.send_all(options(branch, transport))
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return False
            reply += chunk
    except (trio.BrokenResourceError, ConnectionResetError):
        return False
    return parse_message(reply).status == 200


async def closed_after(stream, limit: float = 5.0) -> float:
    """Seconds until the server closes ``stream`` (reading and discarding what it sends)."""
    start = trio.current_time()
    with trio.fail_after(limit):
        try:
            while await stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, ConnectionResetError):
            pass
    return trio.current_time() - start


def refusals(events: list) -> list[tuple[str, str]]:
    return [(e.source.host, e.reason) for e in events if isinstance(e, RequestRefused)]


def drain(ep: SipEndpoint) -> list:
    out = []
    while True:
        try:
            out.append(ep.events.receive_nowait())
        except trio.WouldBlock:
            return out


@run_in_trio
async def test_per_source_cap_closes_the_excess_and_spares_other_and_trusted_sources():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            gw = gateway(max_connections_per_source=3)
            await nursery.start(gw.serve)
            mine = [await connect(gw, "127.0.0.2") for _ in range(3)]
            for i, stream in enumerate(mine):
                assert await served(stream, f"z9hG4bKa{i}")
            excess = await connect(gw, "127.0.0.2")
            assert await closed_after(excess) < 1.0  # closed at once
            assert gw.stats["connections_refused_source"] == 1
            other = await connect(gw, "127.0.0.3")
            assert await served(other, "z9hG4bKb")  # another source has its own cap
            trusted = [await connect(gw, "127.0.0.1") for _ in range(5)]  # allow_from: no cap
            for i, stream in enumerate(trusted):
                assert await served(stream, f"z9hG4bKt{i}")
            assert gw.untrusted_connections == 4
            # Closing one of ours makes room again.
            await mine[0].aclose()
            with trio.fail_after(5):
                while gw.untrusted_connections != 3:
                    await trio.sleep(0.01)
            again = await connect(gw, "127.0.0.2")
            assert await served(again, "z9hG4bKc")
            assert refusals(drain(gw)) == [("127.0.0.2", "connection_limit")]
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_global_cap_counts_all_untrusted_sources_but_not_trusted_ones():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            gw = gateway(max_connections_per_source=2, max_connections=4)
            await nursery.start(gw.serve)
            streams = []
            for i, source in enumerate(["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.4"]):
                streams.append(await connect(gw, source))
                assert await served(streams[-1], f"z9hG4bKg{i}")
            for source in ("127.0.0.5", "127.0.0.6"):
                refused = await connect(gw, source)
                assert await closed_after(refused) < 1.0
            assert gw.stats["connections_refused_total"] == 2 and gw.stats["connections_refused_source"] == 0
            trunk = await connect(gw, "127.0.0.1")
            assert await served(trunk, "z9hG4bKt")  # the trunk still gets in
            assert sorted(refusals(drain(gw))) == [("127.0.0.5", "connection_limit"), ("127.0.0.6", "connection_limit")]
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_first_complete_message_must_come_in_time():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            gw = gateway(first_message_timeout=0.4, idle_timeout=30.0)
            await nursery.start(gw.serve)
            silent = await connect(gw, "127.0.0.2")
            trickle = await connect(gw, "127.0.0.3")
            keepalive_only = await connect(gw, "127.0.0.1")  # trusted, but only CRLF pings
            prompt = await connect(gw, "127.0.0.4")
            assert await served(prompt, "z9hG4bKp")
            half = options("z9hG4bKh")
            await trickle.send_all(half[: len(half) // 2])  # a message that never completes
            await keepalive_only.send_all(b"\r\n\r\n")
            async with trio.open_nursery() as waits:
                took = {}

                async def wait(name, stream):
                    took[name] = await closed_after(stream)

                for name, stream in (("silent", silent), ("trickle", trickle), ("keepalive", keepalive_only)):
                    waits.start_soon(wait, name, stream)
            assert all(0.3 <= t < 2.0 for t in took.values()), took
            assert gw.stats["first_message_timeouts"] == 3
            # The connection that delivered a message in time is still open after the deadline.
            assert await served(prompt, "z9hG4bKp2")
            assert sorted(refusals(drain(gw))) == [
                ("127.0.0.1", "stream_timeout"), ("127.0.0.2", "stream_timeout"), ("127.0.0.3", "stream_timeout")]
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_idle_connection_is_closed_and_keepalive_pings_are_answered():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            gw = gateway(idle_timeout=0.5)
            await nursery.start(gw.serve)
            idle = await connect(gw, "127.0.0.2")
            kept = await connect(gw, "127.0.0.3")
            assert await served(idle, "z9hG4bKi") and await served(kept, "z9hG4bKk")
            start = trio.current_time()
            pongs = b""
            for i in range(6):  # RFC 5626 4.4.1: CRLFCRLF ping, CRLF pong
                await kept.send_all(b"\r\n\r\n")
                with trio.fail_after(2):
                    while len(pongs) < 2 * (i + 1):
                        pongs += await kept.receive_some(4096)
                await trio.sleep(0.25)
            assert pongs == b"\r\n" * 6
            assert await closed_after(idle, 0.1) < 0.1  # closed long ago
            assert gw.stats["idle_timeouts"] >= 1
            assert trio.current_time() - start >= 1.5  # the pinged flow outlived 3 idle periods
            assert await served(kept, "z9hG4bKk2")
            assert not refusals(drain(gw))  # idling is not a refusal
            nursery.cancel_scope.cancel()


def test_tls_handshake_must_finish_in_time(tmp_path):
    cert, key = self_signed(tmp_path)

    @run_in_trio
    async def body():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                gw = gateway("tls", ssl_context=server_ssl_context(str(cert), str(key)), tls_handshake_timeout=0.4)
                await nursery.start(gw.serve)
                port = gw.bound["tls"][1]
                stalled = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
                took = await closed_after(stalled)
                assert 0.3 <= took < 2.0, took
                assert gw.stats["tls_handshake_timeouts"] == 1
                # A real TLS client that handshakes at once is served.
                context = ssl.create_default_context(cafile=str(cert))
                good = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
                assert await served(good, "z9hG4bKtls", "TLS")
                assert refusals(drain(gw)) == [("127.0.0.2", "stream_timeout")]
                nursery.cancel_scope.cancel()

    body()


def test_outbound_tls_connect_to_a_silent_peer_gives_up_after_the_handshake_timeout():
    @run_in_trio
    async def body():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                # A "peer" that accepts TCP and never says a word of TLS.
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                port = listeners[0].socket.getsockname()[1]
                held = []

                async def hold(stream):
                    held.append(stream)
                    await trio.sleep_forever()

                nursery.start_soon(trio.serve_listeners, hold, listeners)
                client = SipEndpoint(UserAgent(UAConfig(listen={"tls": ("127.0.0.1", 0)}), rng=random.Random(2)),
                                     [], client_ssl_context=ssl.create_default_context(), tls_handshake_timeout=0.4)
                await nursery.start(client.serve)
                start = trio.current_time()
                client.command(client.ua.options, f"sips:x@127.0.0.1:{port}")
                with trio.fail_after(5):
                    while client.stats["tls_handshake_timeouts"] == 0:
                        await trio.sleep(0.02)
                assert 0.3 <= trio.current_time() - start < 2.0
                assert client.stats["connect_failures"] == 1 and held
                nursery.cancel_scope.cancel()

    body()


@run_in_trio
async def test_a_connection_we_opened_outlives_the_inbound_idle_timeout():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            bob = make_endpoint("bob", ["tcp:127.0.0.1:0"], 2)
            alice = make_endpoint("alice", ["tcp:127.0.0.1:0"], 1, idle_timeout=0.3)
            await nursery.start(bob.serve)
            await nursery.start(alice.serve)
            alice.command(alice.ua.invite, f"sip:bob@127.0.0.1:{bob.bound['tcp'][1]};transport=tcp", AUDIO)
            incoming = await next_event(bob, InviteReceived)
            bob.command(bob.ua.answer, incoming.call, AUDIO_B)
            await next_event(bob, CallEstablished)
            await trio.sleep(1.0)  # > 3 of alice's inbound idle periods: her own flow stays
            assert len(alice._streams) == 1 and alice.stats["idle_timeouts"] == 0
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_a_message_trickled_after_the_first_must_still_complete_in_time():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            gw = gateway(first_message_timeout=5.0, message_timeout=0.6, idle_timeout=30.0)
            await nursery.start(gw.serve)
            slow = await connect(gw, "127.0.0.2")
            assert await served(slow, "z9hG4bKs1")
            start = trio.current_time()
            data = options("z9hG4bKs2")
            closed = False
            for byte in data:  # one byte every 50 ms: never idle, never complete in time
                try:
                    await slow.send_all(bytes([byte]))
                except (trio.BrokenResourceError, ConnectionResetError):
                    closed = True
                    break
                await trio.sleep(0.05)
                if trio.current_time() - start > 3.0:
                    break
            if not closed:
                await closed_after(slow)
            assert 0.5 <= trio.current_time() - start < 3.0
            assert gw.stats["message_timeouts"] == 1
            # A peer that sends whole messages, with pauses between them, is not affected.
            steady = await connect(gw, "127.0.0.3")
            for i in range(3):
                assert await served(steady, f"z9hG4bKst{i}")
                await trio.sleep(0.4)
            assert gw.stats["message_timeouts"] == 1
            assert refusals(drain(gw)) == [("127.0.0.2", "stream_timeout")]
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_an_idle_connection_carrying_a_call_stays_until_the_call_ends():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            bob = make_endpoint("bob", ["tcp:127.0.0.1:0"], 2, idle_timeout=0.3)
            alice = make_endpoint("alice", ["tcp:127.0.0.1:0"], 1)
            await nursery.start(bob.serve)
            await nursery.start(alice.serve)
            call = alice.command(alice.ua.invite, f"sip:bob@127.0.0.1:{bob.bound['tcp'][1]};transport=tcp", AUDIO)
            incoming = await next_event(bob, InviteReceived)
            bob.command(bob.ua.answer, incoming.call, AUDIO_B)
            await next_event(bob, CallEstablished)
            await trio.sleep(1.0)  # > 3 idle periods of silence during the call
            assert len(bob._streams) == 1 and bob.stats["idle_timeouts"] == 0
            alice.command(alice.ua.hangup, call)
            assert (await next_event(bob, CallTerminated)).reason == "remote hangup"
            with trio.fail_after(3):
                while bob.stats["idle_timeouts"] == 0:
                    await trio.sleep(0.02)
            assert bob._streams == {}
            nursery.cancel_scope.cancel()
