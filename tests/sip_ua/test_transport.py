"""The trio transports on real loopback sockets: calls over UDP, TCP and TLS, and hostile
input that must not take the listener down.  Every wait is bounded by trio.fail_after."""

from __future__ import annotations

import functools
import random
import shutil
import socket
import ssl
import subprocess

import pytest
import trio

import sip.transport
from sip.parser import parse_message
from sip.transport import SipEndpoint, primary_address, server_ssl_context
from sip.ua import CallAnswered, CallEstablished, CallTerminated, InviteReceived, UAConfig, UserAgent
from tests.sip_ua.test_ua import AUDIO, AUDIO_B
from tests.sip_ua.wire import request_bytes


def run_in_trio(fn):
    """Run an async test body under trio.run (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return trio.run(functools.partial(fn, *args, **kwargs))

    return wrapper


def make_endpoint(name: str, listen: list[str], seed: int, **kw) -> SipEndpoint:
    transports = {spec.split(":")[0] for spec in listen}
    config = UAConfig(listen={t: ("127.0.0.1", 0) for t in transports}, user=name)
    return SipEndpoint(UserAgent(config, rng=random.Random(seed)), listen, **kw)


async def next_event(endpoint: SipEndpoint, kind):
    async for event in endpoint.events:
        if isinstance(event, kind):
            return event


async def call_and_hang_up(transport: str, uri_suffix: str, *, server_kw=None, client_kw=None) -> tuple:
    server_kw = server_kw or {}
    client_kw = client_kw or {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            bob = make_endpoint("bob", [f"{transport}:127.0.0.1:0"], 2, **server_kw)
            alice = make_endpoint("alice", [f"{transport}:127.0.0.1:0"], 1, **client_kw)
            await nursery.start(bob.serve)
            await nursery.start(alice.serve)
            port = bob.bound[transport][1]
            scheme = "sips" if transport == "tls" else "sip"
            call = alice.command(alice.ua.invite, f"{scheme}:bob@127.0.0.1:{port}{uri_suffix}", AUDIO)
            incoming = await next_event(bob, InviteReceived)
            bob.command(bob.ua.answer, incoming.call, AUDIO_B)
            answered = await next_event(alice, CallAnswered)
            await next_event(bob, CallEstablished)
            alice.command(alice.ua.hangup, call)
            ended = await next_event(bob, CallTerminated)
            nursery.cancel_scope.cancel()
    return incoming, answered, ended, alice, bob


@run_in_trio
async def test_call_over_udp():
    incoming, answered, ended, _, _ = await call_and_hang_up("udp", "")
    assert incoming.transport == "udp" and incoming.offer == AUDIO
    assert answered.answer == AUDIO_B and ended.reason == "remote hangup"


@run_in_trio
async def test_call_over_tcp_reuses_the_connection():
    incoming, answered, ended, alice, bob = await call_and_hang_up("tcp", ";transport=tcp")
    assert incoming.transport == "tcp" and answered.answer == AUDIO_B
    assert ended.reason == "remote hangup"
    assert bob.stats["stream_errors"] == 0 and alice.stats["connect_failures"] == 0


def self_signed(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: it makes the TLS test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@run_in_trio
async def test_call_over_tls(tmp_path):
    cert, key = self_signed(tmp_path)
    client_context = ssl.create_default_context(cafile=str(cert))
    incoming, answered, ended, _, _ = await call_and_hang_up(
        "tls", "", server_kw={"ssl_context": server_ssl_context(str(cert), str(key))},
        client_kw={"client_ssl_context": client_context, "ssl_context": server_ssl_context(str(cert), str(key))},
    )
    assert incoming.transport == "tls" and answered.answer == AUDIO_B and ended.reason == "remote hangup"


@run_in_trio
async def test_udp_listener_survives_garbage_and_answers_400():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bob = make_endpoint("bob", ["udp:127.0.0.1:0"], 2)
            await nursery.start(bob.serve)
            port = bob.bound["udp"][1]
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            me = sock.getsockname()
            for junk in (b"\x00" * 100, b"INVITE\r\n\r\n", b"\xff\xfe" * 30000, b"SIP/2.0 200 OK\r\n\r\n"):
                await sock.sendto(junk, ("127.0.0.1", port))
            broken = request_bytes("OPTIONS", sent_by=f"127.0.0.1:{me[1]}").replace(b"Max-Forwards: 70", b"Max-Forwards: many")
            await sock.sendto(broken, ("127.0.0.1", port))
            data, _ = await sock.recvfrom(65535)
            assert parse_message(data).status == 400
            await sock.sendto(request_bytes("OPTIONS", branch="z9hG4bKok", sent_by=f"127.0.0.1:{me[1]}"), ("127.0.0.1", port))
            data, _ = await sock.recvfrom(65535)
            assert parse_message(data).status == 200
            assert bob.ua.stats["parse_errors"] == 5  # 4 junk datagrams (all dropped) + the bad Max-Forwards
            sock.close()
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_tcp_garbage_closes_only_that_connection():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bob = make_endpoint("bob", ["tcp:127.0.0.1:0"], 2)
            await nursery.start(bob.serve)
            port = bob.bound["tcp"][1]
            bad = await trio.open_tcp_stream("127.0.0.1", port)
            await bad.send_all(b"GARBAGE / SIP/9.9\r\nContent-Length: 99999999999\r\n\r\n")
            leftover = b""
            while True:
                chunk = await bad.receive_some(4096)
                if not chunk:
                    break  # the server closed this stream
                leftover += chunk
            good = await trio.open_tcp_stream("127.0.0.1", port)
            await good.send_all(request_bytes("OPTIONS", sent_by="127.0.0.1:5999").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += await good.receive_some(4096)
            assert parse_message(reply).status == 200
            await good.aclose()
            nursery.cancel_scope.cancel()


def test_stream_sender_retires_when_idle_and_a_new_one_takes_over(monkeypatch):
    monkeypatch.setattr(sip.transport, "STREAM_SENDER_IDLE", 0.2)

    @run_in_trio
    async def body():
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                bob = make_endpoint("bob", ["tcp:127.0.0.1:0"], 2)
                alice = make_endpoint("alice", ["tcp:127.0.0.1:0"], 1)
                await nursery.start(bob.serve)
                await nursery.start(alice.serve)
                call = alice.command(alice.ua.invite, f"sip:bob@127.0.0.1:{bob.bound['tcp'][1]};transport=tcp", AUDIO)
                incoming = await next_event(bob, InviteReceived)
                bob.command(bob.ua.answer, incoming.call, AUDIO_B)
                await next_event(bob, CallEstablished)
                await trio.sleep(0.6)  # every sender task retires
                assert alice._stream_senders == {} and bob._stream_senders == {}
                alice.command(alice.ua.hangup, call)
                ended = await next_event(bob, CallTerminated)
                assert ended.reason == "remote hangup"
                nursery.cancel_scope.cancel()

    body()


@run_in_trio
async def test_call_over_udp_ipv6_loopback():
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            bob = SipEndpoint(UserAgent(UAConfig(listen={"udp": ("::1", 0)}, user="bob", allow_from=("::1/128",)),
                                        rng=random.Random(2)), ["udp:[::1]:0"])
            alice = SipEndpoint(UserAgent(UAConfig(listen={"udp": ("::1", 0)}, user="alice"), rng=random.Random(1)),
                                ["udp:[::1]:0"])
            await nursery.start(bob.serve)
            await nursery.start(alice.serve)
            call = alice.command(alice.ua.invite, f"sip:bob@[::1]:{bob.bound['udp'][1]}", AUDIO)
            incoming = await next_event(bob, InviteReceived)
            assert incoming.source.host == "::1"
            assert "[::1]" in incoming.call.invite.headers.get("Via")  # an IPv6 reference in sent-by
            bob.command(bob.ua.answer, incoming.call, AUDIO_B)
            await next_event(alice, CallAnswered)
            alice.command(alice.ua.hangup, call)
            assert (await next_event(bob, CallTerminated)).reason == "remote hangup"
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_wildcard_listener_advertises_a_real_address():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoint = SipEndpoint(UserAgent(UAConfig(listen={"udp": ("0.0.0.0", 0)}), rng=random.Random(1)), ["udp:0.0.0.0:0"])
            await nursery.start(endpoint.serve)
            host, port = endpoint.ua.config.listen["udp"]
            assert host == primary_address("0.0.0.0") and host != "0.0.0.0"
            assert port == endpoint.bound["udp"][1] != 0
            assert f"{host}:{port}" in endpoint.ua.requests.via("udp")
            nursery.cancel_scope.cancel()


@run_in_trio
async def test_tcp_oversize_body_is_answered_413_then_closed():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bob = make_endpoint("bob", ["tcp:127.0.0.1:0"], 2)
            await nursery.start(bob.serve)
            stream = await trio.open_tcp_stream("127.0.0.1", bob.bound["tcp"][1])
            head = request_bytes("OPTIONS", sent_by="127.0.0.1:5999").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
            await stream.send_all(head.replace(b"Content-Length: 0", b"Content-Length: 50000000"))
            received = b""
            while True:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                received += chunk
            assert parse_message(received).status == 413
            nursery.cancel_scope.cancel()


def test_tls_listener_survives_plaintext_and_aborted_handshakes(tmp_path):
    cert, key = self_signed(tmp_path)

    @run_in_trio
    async def body():
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                bob = make_endpoint("bob", ["tls:127.0.0.1:0"], 2, ssl_context=server_ssl_context(str(cert), str(key)))
                await nursery.start(bob.serve)
                port = bob.bound["tls"][1]
                plain = await trio.open_tcp_stream("127.0.0.1", port)
                await plain.send_all(request_bytes("OPTIONS"))  # SIP without TLS
                with trio.move_on_after(5):
                    while await plain.receive_some(4096):
                        pass
                await plain.aclose()
                aborted = await trio.open_tcp_stream("127.0.0.1", port)
                await aborted.aclose()  # connect and leave
                # A real TLS client is still served.
                context = ssl.create_default_context(cafile=str(cert))
                good = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
                await good.send_all(request_bytes("OPTIONS", sent_by="127.0.0.1:5999").replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS"))
                reply = b""
                while b"\r\n\r\n" not in reply:
                    reply += await good.receive_some(4096)
                assert parse_message(reply).status == 200
                assert bob.stats["stream_errors"] >= 1
                await good.aclose()
                nursery.cancel_scope.cancel()

    body()
