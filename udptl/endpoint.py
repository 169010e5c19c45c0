"""The thin trio edge of UDPTL: one UDP socket per call, taken from a port pool.

Everything protocol-shaped lives in the sans-IO ``UdptlReceiver``/``UdptlSender``; this
module only owns sockets and reads the clock.  A call's task does::

    endpoint = await pool.open()                  # binds a free port of the range
    endpoint.start(remote_addr, receiver, sender) # once T.38 is negotiated
    events = await endpoint.receive_until(deadline)  # a datagram, or the deadline
    await endpoint.send_ifp(raw_ifp)
    endpoint.close()                              # the port goes back to the pool

NAT latching.  The address in the peer's SDP is where it *says* it listens; behind NAT
it sends from somewhere else, and only that address reaches it.  Like Asterisk's
``nat=yes``/symmetric RTP, the endpoint latches to the source of the first datagram that
decodes as UDPTL and from then on sends there and accepts only from there.  Datagrams
from other sources, and anything that does not decode (RTP left over from the audio
leg, garbage), are counted and dropped; they never wake the call's T.30 engine.
"""

from __future__ import annotations

import errno
import random
import socket as _socket
from dataclasses import dataclass

import trio

from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

__all__ = ["EndpointStats", "PortPool", "PortsExhausted", "UdptlEndpoint"]

MAX_DATAGRAM = 65535


class PortsExhausted(Exception):
    """Every port of the UDPTL range is in use (or cannot be bound)."""


@dataclass
class EndpointStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    foreign_source: int = 0  # datagrams from somewhere other than the latched peer
    undecodable: int = 0  # datagrams that were not UDPTL (RTP, garbage)
    send_errors: int = 0


class PortPool:
    """The UDPTL port range.  Ports are handed out round-robin from a random start, so a
    port just released is not reused at once (a late datagram of the old call must not
    land in the new one)."""

    def __init__(self, low: int, high: int, *, host: str = "0.0.0.0", rng: random.Random | None = None) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad UDPTL port range {low}-{high}")
        self.low, self.high, self.host = low, high, host
        self._in_use: set[int] = set()
        self._next = (rng or random.Random()).randrange(low, high + 1)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    async def open(self) -> "UdptlEndpoint":
        """Bind the next free port.  Raises ``PortsExhausted`` when none can be bound."""
        family = _socket.AF_INET6 if ":" in self.host else _socket.AF_INET
        for _ in range(self.size):
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            if port in self._in_use:
                continue
            sock = trio.socket.socket(family, _socket.SOCK_DGRAM)
            try:
                await sock.bind((self.host, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue  # another program holds it; try the next
                raise
            self._in_use.add(port)
            return UdptlEndpoint(sock, port, self)
        raise PortsExhausted(f"no free UDPTL port in {self.low}-{self.high}")

    def _release(self, port: int) -> None:
        self._in_use.discard(port)


class UdptlEndpoint:
    """One call's UDPTL socket.  See the module docstring."""

    def __init__(self, sock, port: int, pool: PortPool | None = None) -> None:
        self.socket = sock
        self.port = port
        self._pool = pool
        self.remote: tuple[str, int] | None = None  # from the SDP
        self.latched: tuple[str, int] | None = None  # where the peer really sends from
        self.receiver: UdptlReceiver | None = None
        self.sender: UdptlSender | None = None
        self.stats = EndpointStats()
        self._closed = False

    def start(self, remote: tuple[str, int], receiver: UdptlReceiver, sender: UdptlSender) -> None:
        """T.38 is negotiated: datagrams from now on are UDPTL for ``receiver``.

        Called again after a new negotiation (a re-INVITE), it keeps the latch only if
        the advertised address did not change.
        """
        if remote != self.remote:
            self.latched = None
        self.remote = remote
        self.receiver = receiver
        self.sender = sender

    @property
    def destination(self) -> tuple[str, int] | None:
        return self.latched or self.remote

    def _accept(self, data: bytes, source: tuple[str, int], now: float, events: list) -> None:
        self.stats.datagrams_received += 1
        receiver = self.receiver
        if receiver is None:
            self.stats.undecodable += 1  # audio leg: RTP we do not play
            return
        if self.latched is not None and source != self.latched:
            self.stats.foreign_source += 1
            return
        before = receiver.stats.received
        events.extend(receiver.datagram_received(data, now))
        if receiver.stats.received == before:
            self.stats.undecodable += 1
        elif self.latched is None:
            self.latched = source

    async def receive_until(self, deadline: float) -> list[IfpReceived | IfpLost]:
        """Wait for datagrams until ``deadline`` (trio clock); return the receiver's events.

        Returns as soon as one datagram has been read, or at the deadline with the
        receiver's timer handled.
        The list may be empty (a stray datagram, or nothing due).
        """
        events: list[IfpReceived | IfpLost] = []
        with trio.move_on_at(deadline):
            data, source = await self._recvfrom()
            self._accept(data, source, trio.current_time(), events)
        receiver = self.receiver
        if receiver is not None:
            now = trio.current_time()
            timer = receiver.next_deadline()
            if timer is not None and timer <= now:
                events.extend(receiver.handle_timer(now))
        return events

    async def _recvfrom(self) -> tuple[bytes, tuple[str, int]]:
        while True:
            try:
                data, source = await self.socket.recvfrom(MAX_DATAGRAM)
            except (ConnectionRefusedError, ConnectionResetError):
                # Linux reports an ICMP port-unreachable for an earlier send here.
                self.stats.send_errors += 1
                continue
            return data, (source[0], source[1])

    def next_deadline(self) -> float | None:
        """The receiver's reorder deadline (None when nothing is held)."""
        return self.receiver.next_deadline() if self.receiver is not None else None

    async def send_ifp(self, ifp: bytes) -> None:
        """Frame ``ifp`` with the sender and send it to the (latched) peer."""
        if self.sender is None or self.destination is None:
            return
        datagram = self.sender.datagram_for(ifp)
        try:
            await self.socket.sendto(datagram, self.destination)
            self.stats.datagrams_sent += 1
        except OSError:
            # ICMP errors and unreachable networks: UDPTL is unreliable anyway, the
            # T.30 timers decide when the call is dead.
            self.stats.send_errors += 1

    def close(self) -> None:
        """Close the socket and return the port to the pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.socket.close()
        if self._pool is not None:
            self._pool._release(self.port)

    def __enter__(self) -> "UdptlEndpoint":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
