"""trio transports for the SIP user agent: UDP, TCP and TLS.  The only trio code in ``sip``.

The adapter is deliberately thin (STYLE.md 5): every task does *receive -> feed the
core with trio.current_time() -> send what it returns*, and one timer task sleeps until
the core's next deadline (its cancel scope's deadline is moved whenever the core's
deadline changes, so nothing wakes on a fixed tick).  Events from the core go out on a
memory channel (``endpoint.events``); commands go in through ``endpoint.command``.

Where responses go is decided by the core (RFC 3261 18.2.2): over the connection the
request came on for TCP/TLS, to the Via's received/rport address for UDP.  Requests to a
stream peer reuse an open connection to that address or open a new one.

Expected network faults (ICMP port unreachable surfacing as ``ConnectionRefusedError``
on a UDP socket, a peer resetting a TCP connection, a failed connect) are counted and
reported to the core as transport errors; they never take the listener down.

Resource limits on TCP/TLS (a connection costs a task, buffers and, for TLS, a
handshake; a peer that opens thousands and sends nothing must not exhaust us):

- inbound connections from sources outside ``allow_from`` are capped per source address
  (``max_connections_per_source``, default 32) and in total (``max_connections``, 1024);
  a connection beyond a cap is closed at once, counted (``stats``) and reported to the
  UA as a ``connection_limit`` refusal.  Trusted sources (``allow_from``) are never
  refused and not counted: a flood cannot lock the carrier out;
- an inbound TLS connection must finish its handshake within ``tls_handshake_timeout``
  (10 s), and every inbound connection must deliver its first complete SIP message
  within ``first_message_timeout`` (10 s) of being accepted (RFC 5626 keep-alive CRLFs
  do not count), and any later message within ``message_timeout`` (10 s) of its first
  byte (a peer trickling a message a byte at a time holds a task and up to the parser's
  size limits), else it is closed and reported as ``stream_timeout``;
- an accepted connection with no traffic either way for ``idle_timeout`` (120 s; RFC
  5626 4.4.1 has clients keep flows alive with CRLFCRLF pings well within that, and we
  answer each with a CRLF pong) is closed, unless a call that is not over came in on it
  (``ua.connection_in_use``): a fax can be minutes of silence on SIP, and a peer behind
  NAT can be reached only over its own flow.  Connections we opened ourselves are closed
  after an hour of silence (``OUTBOUND_IDLE_TIMEOUT``).
"""

from __future__ import annotations

import itertools
import math
import socket as _socket
import ssl
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from sip.address import Address, Outgoing
from sip.errors import SipParseError
from sip.events import Event
from sip.parser import StreamParser
from sip.ua import UserAgent

_R = TypeVar("_R")
# A stream destination: (transport, host, port, connection).
StreamKey = tuple[str, str, int, Hashable | None]

MAX_DATAGRAM = 65535
CONNECT_TIMEOUT = 5.0
IDLE_STREAM_TIMEOUT = 120.0  # close an accepted TCP/TLS connection with no traffic either way for this long
# A connection we opened (to a registrar or a peer's Contact) may be the flow a NATed
# registration receives its calls on, and we send no RFC 5626 keep-alives on it: it is
# kept for an hour of silence, as before the limits (we chose where to connect).
OUTBOUND_IDLE_TIMEOUT = 3600.0
FIRST_MESSAGE_TIMEOUT = 10.0  # an accepted connection must deliver a whole SIP message within this
MESSAGE_TIMEOUT = 10.0  # on an accepted connection, a message once begun must be complete within this
TLS_HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 1024  # inbound connections from untrusted sources, all together
MAX_CONNECTIONS_PER_SOURCE = 32
STREAM_SENDER_IDLE = 60.0  # retire a per-destination sender task after this long unused


@dataclass(frozen=True)
class ListenSpec:
    """``udp:127.0.0.1:5060``, ``tcp:0.0.0.0:5060``, ``tls:[::]:5061``."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        transport, _, rest = text.partition(":")
        transport = transport.lower()
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"unknown transport in {text!r} (udp, tcp or tls)")
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ValueError(f"listen address must be transport:host:port, not {text!r}")
        return cls(transport, host, int(port))


class _Stream:
    def __init__(self, connection_id: int, stream: trio.abc.Stream, peer: tuple[str, int], transport: str) -> None:
        self.id = connection_id
        self.stream = stream
        self.peer = peer
        self.transport = transport
        self.send_lock = trio.Lock()
        self.last_used = trio.current_time()


class SipEndpoint:
    """Runs a :class:`UserAgent` on real sockets.

    ``listen``: list of :class:`ListenSpec` or strings.  ``ssl_context``: required for a
    ``tls`` listener (build it with :func:`server_ssl_context`); ``client_ssl_context`` is
    used for outgoing TLS connections.  Port 0 binds an ephemeral port; the bound port is
    recorded in the UA (``ua.set_listen``) and in ``self.bound``.

    TCP/TLS limits (see the module docstring): ``max_connections_per_source``,
    ``max_connections``, ``first_message_timeout``, ``message_timeout``, ``idle_timeout``,
    ``tls_handshake_timeout`` (seconds).  ``stats`` counts ``connections_refused_source``,
    ``connections_refused_total``, ``first_message_timeouts``, ``message_timeouts``,
    ``tls_handshake_timeouts``, ``idle_timeouts``; ``untrusted_connections`` is the
    number of inbound connections from outside ``allow_from`` open now.
    """

    def __init__(
        self,
        ua: UserAgent,
        listen: list[ListenSpec | str],
        *,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        max_connections_per_source: int = MAX_CONNECTIONS_PER_SOURCE,
        max_connections: int = MAX_CONNECTIONS,
        first_message_timeout: float = FIRST_MESSAGE_TIMEOUT,
        message_timeout: float = MESSAGE_TIMEOUT,
        idle_timeout: float = IDLE_STREAM_TIMEOUT,
        tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
        shared_udp: tuple[_socket.socket, _socket.socket] | None = None,
    ) -> None:
        if max_connections_per_source < 1 or max_connections < 1:
            raise ValueError("connection caps must be >= 1")
        if min(first_message_timeout, message_timeout, idle_timeout, tls_handshake_timeout) <= 0:
            raise ValueError("stream timeouts must be > 0")
        self.ua = ua
        self.listen = [spec if isinstance(spec, ListenSpec) else ListenSpec.parse(spec) for spec in listen]
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context
        self.bound: dict[str, tuple[str, int]] = {}
        self.max_connections_per_source = max_connections_per_source
        self.max_connections = max_connections
        self.first_message_timeout = first_message_timeout
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self.tls_handshake_timeout = tls_handshake_timeout
        self.stats: dict[str, int] = {
            "udp_errors": 0, "stream_errors": 0, "connect_failures": 0,
            "connections_refused_source": 0, "connections_refused_total": 0,
            "first_message_timeouts": 0, "message_timeouts": 0, "tls_handshake_timeouts": 0, "idle_timeouts": 0,
        }
        self.untrusted_connections = 0
        self._untrusted_by_host: dict[str, int] = {}
        self._event_send, self.events = trio.open_memory_channel[Event](math.inf)
        self._out_send, self._out_receive = trio.open_memory_channel[Outgoing](math.inf)
        self._udp: dict[str, trio.socket.SocketType] = {}
        self._streams: dict[int, _Stream] = {}
        self._streams_by_peer: dict[tuple[str, str, int], int] = {}
        self._stream_senders: dict[StreamKey, trio.MemorySendChannel[Outgoing]] = {}
        self._ids = itertools.count(1)
        self._timer_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        # A worker process (t38gw.workers): the UDP listener is the supervisor's socket,
        # inherited to send from (responses leave from the port requests came to); what
        # arrives on it is read by the supervisor and handed over on ``feed`` (a
        # SOCK_DGRAM socketpair end), each message framed by ``unframe_datagram``.
        self.shared_udp = shared_udp

    # -- public ---------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[SipEndpoint] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, report ``started``, then run until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for spec in self.listen:
                if spec.transport == "udp":
                    await self._bind_udp(spec, nursery)
                else:
                    await self._bind_stream(spec, nursery)
            nursery.start_soon(self._sender)
            nursery.start_soon(self._timer)
            task_status.started(self)

    def command(self, method: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        """Run a UA command (``ua.answer`` ...) now, then send what it produced.

        ``now`` is appended as the last positional argument.
        """
        result = method(*args, trio.current_time(), **kwargs)
        self._flush()
        return result

    # -- binding --------------------------------------------------------------

    async def _bind_udp(self, spec: ListenSpec, nursery: trio.Nursery) -> None:
        if self.shared_udp is not None:
            listener, feed = self.shared_udp
            shared = trio.socket.from_stdlib_socket(listener)
            self._udp[spec.transport] = shared
            self._record_bound("udp", spec.host, shared.getsockname()[1])
            nursery.start_soon(self._feed_receiver, trio.socket.from_stdlib_socket(feed))
            return
        family = _socket.AF_INET6 if ":" in spec.host else _socket.AF_INET
        sock = trio.socket.socket(family, _socket.SOCK_DGRAM)
        await sock.bind((spec.host, spec.port))
        host, port = sock.getsockname()[:2]
        self._udp[spec.transport] = sock
        self._record_bound("udp", spec.host, port)
        nursery.start_soon(self._udp_receiver, sock)

    async def _bind_stream(self, spec: ListenSpec, nursery: trio.Nursery) -> None:
        port = spec.port
        if port == 0 and "udp" in self.bound and spec.transport == "tcp":
            port = self.bound["udp"][1]  # same number as UDP, as a SIP server usually has
        tcp_listeners = await trio.open_tcp_listeners(port, host=spec.host)
        bound_port = tcp_listeners[0].socket.getsockname()[1]
        self._record_bound(spec.transport, spec.host, bound_port)
        listeners: list[trio.abc.Listener[Any]] = list(tcp_listeners)
        if spec.transport == "tls":
            if self.ssl_context is None:
                raise ValueError("a tls listener needs ssl_context (certificate and key)")
            listeners = [trio.SSLListener(lst, self.ssl_context, https_compatible=False) for lst in tcp_listeners]
        transport = spec.transport

        async def handler(stream: trio.abc.Stream) -> None:
            try:
                peer = _peer_of(stream)
            except OSError:  # gone before we looked: nothing to serve
                self.stats["stream_errors"] += 1
                await trio.aclose_forcefully(stream)
                return
            host = peer[0]
            trusted = self.ua.source_trusted(host)
            if not trusted and not self._admit(host):
                await trio.aclose_forcefully(stream)
                self._refused(transport, peer, "connection_limit")
                return
            try:
                accepted_at = trio.current_time()
                if isinstance(stream, trio.SSLStream):  # a tls listener's
                    with trio.move_on_after(self.tls_handshake_timeout) as handshake:
                        try:
                            await stream.do_handshake()
                        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                            self.stats["stream_errors"] += 1
                            await trio.aclose_forcefully(stream)
                            return
                    if handshake.cancelled_caught:
                        self.stats["tls_handshake_timeouts"] += 1
                        await trio.aclose_forcefully(stream)
                        self._refused(transport, peer, "stream_timeout")
                        return
                entry = _Stream(next(self._ids), stream, peer, transport)
                await self._run_registered(entry, self.idle_timeout, first_message_by=accepted_at + self.first_message_timeout,
                                           message_timeout=self.message_timeout)
            finally:
                if not trusted:
                    self._release(host)

        nursery.start_soon(trio.serve_listeners, handler, listeners)

    def _record_bound(self, transport: str, host: str, port: int) -> None:
        self.bound[transport] = (host, port)
        advertised = host
        if host in ("0.0.0.0", "::"):
            configured = self.ua.config.listen.get(transport, (host, port))[0]
            advertised = configured if configured not in ("0.0.0.0", "::", "") else primary_address(host)
        self.ua.set_listen(transport, advertised, port)

    # -- receiving ------------------------------------------------------------

    async def _udp_receiver(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, addr = await sock.recvfrom(MAX_DATAGRAM)
            except (ConnectionRefusedError, ConnectionResetError, OSError) as exc:
                if isinstance(exc, (ConnectionRefusedError, ConnectionResetError)) or exc.errno in (111, 104, 113):
                    # An ICMP error for an earlier send (Linux reports it here).
                    self.stats["udp_errors"] += 1
                    continue
                raise
            self.ua.receive(data, Address("udp", addr[0], addr[1]), trio.current_time())
            self._flush()

    async def _feed_receiver(self, feed: trio.socket.SocketType) -> None:
        while True:
            framed = await feed.recv(MAX_DATAGRAM + 64)
            unframed = unframe_datagram(framed)
            if unframed is None:
                continue
            host, port, data = unframed
            self.ua.receive(data, Address("udp", host, port), trio.current_time())
            self._flush()

    def _admit(self, host: str) -> bool:
        """Count an inbound connection from an untrusted ``host``; False if over a cap."""
        if self.untrusted_connections >= self.max_connections:
            self.stats["connections_refused_total"] += 1
            return False
        count = self._untrusted_by_host.get(host, 0)
        if count >= self.max_connections_per_source:
            self.stats["connections_refused_source"] += 1
            return False
        self._untrusted_by_host[host] = count + 1
        self.untrusted_connections += 1
        return True

    def _release(self, host: str) -> None:
        self.untrusted_connections -= 1
        count = self._untrusted_by_host[host] - 1
        if count:
            self._untrusted_by_host[host] = count
        else:
            del self._untrusted_by_host[host]

    def _refused(self, transport: str, peer: tuple[str, int], reason: str) -> None:
        self.ua.report_refused(Address(transport, peer[0], peer[1]), "", None, reason, trio.current_time())
        self._flush()

    # -- sending --------------------------------------------------------------

    def _flush(self) -> None:
        for outgoing in self.ua.messages_to_send():
            self._out_send.send_nowait(outgoing)
        for event in self.ua.events():
            self._event_send.send_nowait(event)
        if self._timer_scope is not None:
            deadline = self.ua.next_deadline()
            self._timer_scope.deadline = math.inf if deadline is None else deadline

    async def _sender(self) -> None:
        # UDP goes out inline; each stream destination gets its own ordered sender task,
        # so a slow TCP/TLS connect never holds up other peers' messages.
        async for outgoing in self._out_receive:
            if outgoing.destination.transport == "udp":
                try:
                    await self._send_udp(outgoing)
                except (OSError, _ConnectFailed):
                    self.ua.send_failed(outgoing, trio.current_time())
                    self._flush()
            else:
                self._dispatch_stream(outgoing)

    def _dispatch_stream(self, outgoing: Outgoing) -> None:
        d = outgoing.destination
        key = (d.transport, d.host, d.port, d.connection)
        channel = self._stream_senders.get(key)
        if channel is None:
            channel, receive = trio.open_memory_channel[Outgoing](math.inf)
            self._stream_senders[key] = channel
            self._serving().start_soon(self._stream_sender, key, receive)
        channel.send_nowait(outgoing)

    async def _stream_sender(self, key: StreamKey, receive: trio.MemoryReceiveChannel[Outgoing]) -> None:
        retired_idle = False
        try:
            while True:
                with trio.move_on_after(STREAM_SENDER_IDLE) as idle:
                    outgoing = await receive.receive()
                if idle.cancelled_caught:
                    retired_idle = True
                    return
                try:
                    await self._send_stream(outgoing)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, _ConnectFailed):
                    self.ua.send_failed(outgoing, trio.current_time())
                    self._flush()
        finally:
            del self._stream_senders[key]
            # Anything queued while we were retiring gets a new sender (not on shutdown).
            while retired_idle:
                try:
                    self._dispatch_stream(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

    async def _send_udp(self, outgoing: Outgoing) -> None:
        sock = self._udp.get("udp")
        if sock is None:
            raise _ConnectFailed("no UDP listener")
        destination = outgoing.destination
        try:
            await sock.sendto(outgoing.data, (destination.host, destination.port))
        except (ConnectionRefusedError, ConnectionResetError):
            self.stats["udp_errors"] += 1

    async def _send_stream(self, outgoing: Outgoing) -> None:
        destination = outgoing.destination
        entry = None
        if isinstance(destination.connection, int):  # a connection id of ours
            entry = self._streams.get(destination.connection)
        if entry is None:
            connection_id = self._streams_by_peer.get((destination.transport, destination.host, destination.port))
            entry = self._streams.get(connection_id) if connection_id is not None else None
        if entry is None:
            entry = await self._connect(destination)
        async with entry.send_lock:
            await entry.stream.send_all(outgoing.data)
        entry.last_used = trio.current_time()

    async def _connect(self, destination: Address) -> _Stream:
        with trio.move_on_after(CONNECT_TIMEOUT):
            stream: trio.abc.Stream
            try:
                if destination.transport == "tls":
                    context = self.client_ssl_context or ssl.create_default_context()
                    stream = await trio.open_ssl_over_tcp_stream(destination.host, destination.port, ssl_context=context)
                else:
                    stream = await trio.open_tcp_stream(destination.host, destination.port)
            except OSError as exc:
                self.stats["connect_failures"] += 1
                raise _ConnectFailed(str(exc)) from exc
            if isinstance(stream, trio.SSLStream):
                # Handshake now (bounded), not lazily on the first send: a peer that
                # accepts TCP but never answers TLS must not hold the sender forever.
                with trio.move_on_after(self.tls_handshake_timeout) as handshake:
                    try:
                        await stream.do_handshake()
                    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                        self.stats["connect_failures"] += 1
                        await trio.aclose_forcefully(stream)
                        raise _ConnectFailed(f"TLS handshake with {destination.host}:{destination.port}: {exc}") from exc
                if handshake.cancelled_caught:
                    self.stats["connect_failures"] += 1
                    self.stats["tls_handshake_timeouts"] += 1
                    await trio.aclose_forcefully(stream)
                    raise _ConnectFailed(f"TLS handshake with {destination.host}:{destination.port} timed out")
            ready = trio.Event()
            holder: dict[str, _Stream] = {}

            async def run() -> None:
                # Register the connection before reading so responses can reuse it.
                entry = _Stream(next(self._ids), stream, (destination.host, destination.port), destination.transport)
                holder["entry"] = entry
                ready.set()
                await self._run_registered(entry, OUTBOUND_IDLE_TIMEOUT)

            self._serving().start_soon(run)
            await ready.wait()
            return holder["entry"]
        self.stats["connect_failures"] += 1
        raise _ConnectFailed(f"connect to {destination.host}:{destination.port} timed out")

    async def _run_registered(
        self, entry: _Stream, idle_timeout: float, first_message_by: float | None = None,
        message_timeout: float | None = None,
    ) -> None:
        """Read ``entry`` until it closes, fails, or sees no traffic for ``idle_timeout``.
        ``first_message_by``: the deadline for the first complete message; ``message_timeout``:
        how long a begun message may take to complete (both for inbound connections)."""
        self._streams[entry.id] = entry
        key = (entry.transport, entry.peer[0], entry.peer[1])
        self._streams_by_peer[key] = entry.id
        source = Address(entry.transport, entry.peer[0], entry.peer[1], entry.id)
        parser = StreamParser()
        message_by: float | None = None  # when the message being received must be complete
        try:
            while True:
                # Our own sends move last_used too: wake at the deadline, re-arm if it moved.
                deadline = entry.last_used + idle_timeout
                if first_message_by is not None:
                    deadline = min(deadline, first_message_by)
                if message_by is not None:
                    deadline = min(deadline, message_by)
                with trio.move_on_at(deadline) as waited:
                    data = await entry.stream.receive_some(65536)
                if waited.cancelled_caught:
                    now = trio.current_time()
                    if first_message_by is not None and now >= first_message_by:
                        self.stats["first_message_timeouts"] += 1
                        self._refused(entry.transport, entry.peer, "stream_timeout")
                        break
                    if message_by is not None and now >= message_by:
                        self.stats["message_timeouts"] += 1
                        self._refused(entry.transport, entry.peer, "stream_timeout")
                        break
                    if now >= entry.last_used + idle_timeout:
                        if self.ua.connection_in_use(entry.id):
                            # A call's flow: its BYE may have no other way to reach the peer.
                            entry.last_used = now
                            continue
                        self.stats["idle_timeouts"] += 1
                        break
                    continue
                if not data:
                    break
                entry.last_used = trio.current_time()
                pings = parser.pings
                try:
                    messages = parser.feed(data)
                except SipParseError as exc:
                    # The stream cannot be re-framed: answer if possible, then close.
                    self.ua.stream_error(exc, exc.partial, source)
                    self._flush()
                    await trio.sleep(0.05)  # let the sender write the 400 before we close
                    break
                if parser.pings > pings:
                    # RFC 5626 4.4.1: answer each CRLFCRLF ping with a CRLF pong.
                    async with entry.send_lock:
                        await entry.stream.send_all(b"\r\n" * (parser.pings - pings))
                now = trio.current_time()
                if messages:
                    first_message_by = None
                if message_timeout is not None:
                    if not parser.buffered:
                        message_by = None
                    elif messages or message_by is None:
                        message_by = now + message_timeout  # a new message has begun
                for message in messages:
                    self.ua.receive_message(message, source, now)
                self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            self.stats["stream_errors"] += 1
        finally:
            self._streams.pop(entry.id, None)
            if self._streams_by_peer.get(key) == entry.id:
                del self._streams_by_peer[key]
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await entry.stream.aclose()

    def _serving(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the endpoint is not serving")
        return self._nursery

    # -- timers ---------------------------------------------------------------

    async def _timer(self) -> None:
        while True:
            with trio.CancelScope() as scope:
                self._timer_scope = scope
                deadline = self.ua.next_deadline()
                scope.deadline = math.inf if deadline is None else deadline
                await trio.sleep_forever()
            self._timer_scope = None
            self.ua.handle_timer(trio.current_time())
            self._flush()


def frame_datagram(host: str, port: int, data: bytes) -> bytes:
    """A SIP datagram and where it came from, as one message to a worker process."""
    return f"{host} {port}\n".encode() + data


def unframe_datagram(framed: bytes) -> tuple[str, int, bytes] | None:
    """(host, port, datagram) of ``frame_datagram``'s message; None if it is not one."""
    head, newline, data = framed.partition(b"\n")
    host, _, port = head.decode("ascii", "replace").partition(" ")
    if not newline or not port.isdigit():
        return None
    return host, int(port), data


class _ConnectFailed(Exception):
    pass


def _peer_of(stream: trio.abc.Stream) -> tuple[str, int]:
    inner: object = stream
    while not isinstance(inner, trio.SocketStream):
        inner = getattr(inner, "transport_stream", None)
        if inner is None:
            return ("0.0.0.0", 0)
    name = inner.socket.getpeername()
    return name[0], name[1]


def primary_address(wildcard: str) -> str:
    """The address this host would use towards the outside, for a wildcard listener's
    Via/Contact when no ``public_address`` is configured (a UDP connect sends nothing)."""
    family, probe, fallback = (
        (_socket.AF_INET6, "2001:db8::1", "::1") if ":" in wildcard else (_socket.AF_INET, "192.0.2.1", "127.0.0.1")
    )
    try:
        with _socket.socket(family, _socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            address: str = sock.getsockname()[0]
            return address
    except OSError:
        return fallback


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A TLS server context from a certificate chain and key (``[sip.tls]`` in the config)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
