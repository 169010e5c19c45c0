"""The thin trio edge of UDPTL: one UDP socket per call, taken from a port pool.

Everything protocol-shaped lives in the sans-IO ``UdptlReceiver``/``UdptlSender`` and
``SourceLatch``; this module only owns sockets and reads the clock.  A call's task does::

    endpoint = await pool.open()                  # binds a free port of the range
    endpoint.start(remote_addr, receiver, sender, # once T.38 is negotiated
                   latching="strict", expected_host=None)
    items = await endpoint.receive_until(deadline)  # a datagram, or the deadline
    endpoint.freeze_latch()                       # the first page is confirmed
    await endpoint.send_ifp(raw_ifp)
    endpoint.close()                              # the port goes back to the pool

and, once per process, ``nursery.start_soon(pool.poller.run)``: one task then reads every
T.38 call's socket (see ``UdptlPoller``) instead of each call's task waiting on its own.

Whom media is accepted from (see ``udptl.latch``).  Ports are bound on a wildcard
address, so anyone can send to them; only the source the latch accepts feeds the
receiver and only it can become ``destination``.  In ``strict`` mode (the default) that
is ``expected_host`` (the SDP address, or the SIP source host when the SDP names an
unroutable one) on the port it really sends from; ``learn`` also follows a peer to a
new source after several in-sequence datagrams, until ``freeze_latch()``.  Datagrams
from anyone else are counted in ``stats.foreign_source`` and dropped before the
receiver sees them; the first one of the call is reported once, as a
``ForeignDatagrams`` item of ``receive_until()``.  Anything that does not decode as
UDPTL (RTP left over from the audio leg, garbage) is counted in ``stats.undecodable``
and dropped.  Neither ever wakes the call's T.30 engine.
"""

from __future__ import annotations

import errno
import heapq
import math
import random
import select
import socket as _socket
from dataclasses import dataclass

import trio

from udptl.codec import _decode_udptl_parts
from udptl.errors import MalformedPacket
from udptl.ifp import FieldType, T30Indicator
from udptl.latch import SourceLatch, Verdict
from udptl.receiver import IfpLost, IfpReceived, UdptlReceiver
from udptl.sender import UdptlSender

__all__ = ["RECEIVE_BUFFER", "AudioDatagram", "EndpointStats", "ForeignDatagrams", "PortPool", "PortsExhausted",
           "UdptlEndpoint", "UdptlPoller"]

MAX_DATAGRAM = 65535
DRAIN_LIMIT = 64  # datagrams read per drain: a flood cannot hold the ticker


#: SO_RCVBUF asked for each UDPTL/RTP socket.  A call receives ~20 datagrams a second,
#: but when the event loop stalls (a burst of page writes and call set-ups under load)
#: every call's datagrams queue in the kernel meanwhile, and the default (~208 KB of
#: accounted memory, a few hundred small datagrams) overflowed at 400 calls: the kernel
#: dropped them (RcvbufErrors) and pages arrived damaged.  The kernel caps SO_RCVBUF at
#: net.core.rmem_max unless SO_RCVBUFFORCE is allowed (CAP_NET_ADMIN): both are tried.
RECEIVE_BUFFER = 1 << 20


def _grow_receive_buffer(sock: _socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; the size the kernel granted."""
    force = getattr(_socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(_socket.SOL_SOCKET, force, size)
    except OSError:
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, size)
        except OSError:
            pass
    return int(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF))


# T.38 clause 7 (and Annex A): a field that ends the peer's transmission - the last frame of
# a command, the end of TCF or of a page.  Only then may the far end be waiting for us.
SIGNAL_ENDS = frozenset({FieldType.HDLC_SIG_END, FieldType.HDLC_FCS_OK_SIG_END, FieldType.HDLC_FCS_BAD_SIG_END,
                         FieldType.T4_NON_ECM_SIG_END})

#: The poller reads the sockets at most once per tick: under load each read finds many
#: calls' datagrams waiting (one epoll_wait for all of them, not one per datagram).
POLL_TICK = 0.01
#: IFPs nobody answers (image data, an HDLC frame before a command's last, a loss) wait
#: this long at most for the call's task to be woken with the next ones: a page's ~20
#: datagrams a second then cost ~2 task wake-ups, not 20 (0.1 s made ~170 wake-ups a
#: 1-page fax, 0.5 s ~60).  Nothing is decided on them before the transmission ends:
#: what ends the peer's transmission, an indicator (a carrier starts) or a malformed IFP
#: wakes the task at once, with everything read before it.
BATCH_DELAY = 0.5
BATCH_LIMIT = 32  # or as soon as this many events are waiting


class PortsExhausted(Exception):
    """Every port of the UDPTL range is in use (or cannot be bound)."""


@dataclass
class EndpointStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    # UDPTL datagrams from a source the latch did not accept when they arrived (not fed
    # to the receiver; those of a candidate's successful ``learn`` run are fed later)
    foreign_source: int = 0
    undecodable: int = 0  # datagrams that were not UDPTL (RTP, garbage), from anyone
    send_errors: int = 0
    latch_moves: int = 0  # the latch moved to another source after it was first set


@dataclass(frozen=True, slots=True)
class ForeignDatagrams:
    """The first UDPTL datagram of the call from a source that is not the peer arrived
    (dropped, not delivered).  Returned once per call by ``receive_until``; the running
    total is ``EndpointStats.foreign_source``."""

    source: tuple[str, int]
    count: int


@dataclass(frozen=True, slots=True)
class AudioDatagram:
    """An RTP datagram from the peer while the call is on its audio leg (``start_audio``):
    the raw bytes and when they arrived (the audio fax leg parses and plays them)."""

    data: bytes
    arrived: float


def _rtp_sequence(data: bytes) -> int | None:
    """The sequence number of an RTP v2 packet (RFC 3550 5.1), None if it is not one."""
    if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:  # RTCP (RFC 5761 4) is not media
        return None
    return data[2] << 8 | data[3]


class PortPool:
    """The UDPTL port range.  Ports are handed out round-robin from a random start, so a
    port just released is not reused at once (a late datagram of the old call must not
    land in the new one)."""

    def __init__(self, low: int, high: int, *, host: str = "0.0.0.0", rng: random.Random | None = None,
                 receive_buffer: int = RECEIVE_BUFFER) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad UDPTL port range {low}-{high}")
        self.low, self.high, self.host = low, high, host
        self.receive_buffer = receive_buffer
        self.granted_receive_buffer = 0  # what the kernel gave the last socket (SO_RCVBUF reads back double)
        self._in_use: set[int] = set()
        self._next = (rng or random.Random()).randrange(low, high + 1)
        self.poller = UdptlPoller()

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    async def open(self) -> UdptlEndpoint:
        """Bind the next free port.  Raises ``PortsExhausted`` when none can be bound."""
        family = _socket.AF_INET6 if ":" in self.host else _socket.AF_INET
        for _ in range(self.size):
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            if port in self._in_use:
                continue
            # A stdlib socket wrapped for trio: the audio leg sends on it without awaiting
            # (one RTP packet per call every 20 ms from one ticking task).
            raw = _socket.socket(family, _socket.SOCK_DGRAM)
            raw.setblocking(False)
            self.granted_receive_buffer = _grow_receive_buffer(raw, self.receive_buffer)
            try:
                raw.bind((self.host, port))
            except OSError as exc:
                raw.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue  # another program holds it; try the next
                raise
            self._in_use.add(port)
            await trio.lowlevel.checkpoint()
            return UdptlEndpoint(trio.socket.from_stdlib_socket(raw), port, self, raw=raw)
        raise PortsExhausted(f"no free UDPTL port in {self.low}-{self.high}")

    def _release(self, port: int) -> None:
        self._in_use.discard(port)


class UdptlEndpoint:
    """One call's UDPTL socket.  See the module docstring."""

    def __init__(self, sock: trio.socket.SocketType, port: int, pool: PortPool | None = None, *,
                 raw: _socket.socket | None = None) -> None:
        self.socket = sock
        self._raw = raw  # the same socket, for sends that must not await (the audio leg)
        self.audio_remote: tuple[str, int] | None = None  # set while the call is on audio
        self.port = port
        self._pool = pool
        self.remote: tuple[str, int] | None = None  # from the SDP
        self.receiver: UdptlReceiver | None = None
        self.sender: UdptlSender | None = None
        self.stats = EndpointStats()
        self._latch: SourceLatch | None = None
        self._foreign_reported = False
        self._closed = False
        # When the pool's poller reads this socket: the events it read, whether one needs
        # the call's task now, and the task waiting in ``receive_until``.
        self._poller: UdptlPoller | None = None
        self._buffered: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram] = []
        self._urgent = False
        self._waiter: trio.lowlevel.Task | None = None
        self._wait_scope: trio.CancelScope | None = None  # a wait on the socket itself
        self._deadline_entry: tuple[float, int] | None = None  # the poller's heap entry for us
        self._poller_fd = -1
        self._poll_error: BaseException | None = None
        #: When the peer's last transmission ended (a SIGNAL_ENDS field arrived), until the
        #: call's task takes it with ``take_signal_end`` (t38gw_t30_response_seconds).
        self.signal_ended_at: float | None = None

    def start(
        self,
        remote: tuple[str, int],
        receiver: UdptlReceiver,
        sender: UdptlSender,
        *,
        latching: str = "strict",
        expected_host: str | None = None,
    ) -> None:
        """T.38 is negotiated: datagrams from now on are UDPTL for ``receiver``.

        ``remote`` is the SDP's address and port.  ``latching`` is ``"strict"`` or
        ``"learn"`` (``udptl.latch``); ``expected_host`` the host media must come from,
        ``remote[0]`` by default (pass the SIP source host, as an IP literal, when the SDP
        names a private or unroutable address).  Called again after a new negotiation
        (a re-INVITE), it keeps the latch only if none of these changed; a frozen latch
        stays frozen, but a newly signalled host is accepted.  Raises
        ``LocalProtocolError`` for an unknown ``latching``.
        """
        host = remote[0] if expected_host is None else expected_host
        latch = self._latch
        if latch is None or remote != self.remote or latch.mode != latching or latch.expected_host != host:
            frozen = latch is not None and latch.frozen
            latch = self._latch = SourceLatch(latching, host)
            if frozen:
                latch.freeze()
        self.remote = remote
        self.receiver = receiver
        self.sender = sender
        self.audio_remote = None  # from now on datagrams are UDPTL
        pool = self._pool
        if pool is not None and pool.poller.running and self._raw is not None and not self._closed:
            pool.poller.attach(self)

    def start_audio(self, remote: tuple[str, int], *, latching: str = "strict",
                    expected_host: str | None = None) -> None:
        """The call is on G.711 (the audio fax leg): datagrams are RTP, returned as
        ``AudioDatagram`` by ``receive_until``, from the source the latch accepts (the
        same rules as UDPTL; ``learn`` counts in-sequence RTP sequence numbers).  A later
        ``start`` (T.38 negotiated) turns the endpoint to UDPTL."""
        host = remote[0] if expected_host is None else expected_host
        latch = self._latch
        if latch is None or latch.mode != latching or latch.expected_host != host:
            frozen = latch is not None and latch.frozen
            latch = self._latch = SourceLatch(latching, host)
            if frozen:
                latch.freeze()
        self.audio_remote = remote
        self.receiver = None
        self.sender = None
        if self._poller is not None:  # the audio ticker drains the socket itself
            self._poller.detach(self)

    def drain_audio(self, now: float) -> list[AudioDatagram | ForeignDatagrams]:
        """Every datagram waiting on the socket, read without awaiting (the audio ticker
        calls this every 20 ms: no wake-up per packet), as ``receive_until`` would return
        them on the audio leg.  ``now`` is taken as their arrival time."""
        events: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram] = []
        if self._raw is None:
            return []
        self._drain(self._raw, now, events)
        return [e for e in events if isinstance(e, (AudioDatagram, ForeignDatagrams))]

    def send_audio_now(self, datagram: bytes) -> None:
        """Send one RTP datagram to the (latched) peer without awaiting (non-blocking
        socket; a full buffer or an ICMP error drops it, as UDP would)."""
        latch, remote = self._latch, self.audio_remote
        if latch is None or remote is None or self._raw is None:
            return
        try:
            self._raw.sendto(datagram, latch.latched or (latch.expected_host, remote[1]))
            self.stats.datagrams_sent += 1
        except OSError:
            self.stats.send_errors += 1

    def freeze_latch(self) -> None:
        """Never move the latch to another source again (call it when the first page is
        confirmed).  A no-op before ``start``."""
        if self._latch is not None:
            self._latch.freeze()

    @property
    def latched(self) -> tuple[str, int] | None:
        """Where the peer really sends from (None until its first datagram)."""
        return self._latch.latched if self._latch is not None else None

    @property
    def destination(self) -> tuple[str, int] | None:
        """Where ``send_ifp`` sends: the latched source, else the SDP port on the expected
        host.  Only a source the latch accepted can change it."""
        latch, remote = self._latch, self.remote
        if latch is None or remote is None:  # both are set by ``start``
            return None
        return latch.latched or (latch.expected_host, remote[1])

    def _accept_audio(self, data: bytes, source: tuple[str, int], now: float, latch: SourceLatch,
                      events: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram]) -> None:
        seq = _rtp_sequence(data)
        if seq is None:
            self.stats.undecodable += 1  # RTCP, UDPTL sent early, garbage
            return
        if source == latch.latched:
            latch.accepted(seq)
            events.append(AudioDatagram(data, now))
            return
        events.extend(AudioDatagram(held, arrived)
                      for held, arrived in self._from_elsewhere(data, source, seq, now, latch, events))

    def _from_elsewhere(self, data: bytes, source: tuple[str, int], seq: int, now: float, latch: SourceLatch,
                        events: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram]
                        ) -> list[tuple[bytes, float]]:
        """A datagram (UDPTL or RTP, sequence ``seq``) from a source the latch is not on:
        the datagrams to deliver now if the latch took this source (its backlog, then this
        one), else none (counted foreign; the first reported once as ``ForeignDatagrams``)."""
        moved = latch.latched is not None
        decision = latch.datagram(source, seq, (data, now))
        if decision.verdict is Verdict.LATCHED:
            if moved:
                self.stats.latch_moves += 1
            return [*decision.backlog, (data, now)]
        self.stats.foreign_source += 1
        if not self._foreign_reported:
            self._foreign_reported = True
            events.append(ForeignDatagrams(source, self.stats.foreign_source))
        return []

    def _accept(
        self, data: bytes, source: tuple[str, int], now: float,
        events: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram]
    ) -> None:
        stats = self.stats
        stats.datagrams_received += 1
        receiver = self.receiver
        latch = self._latch
        if self.audio_remote is not None and latch is not None:
            self._accept_audio(data, source, now, latch, events)
            return
        if receiver is None or latch is None:
            stats.undecodable += 1  # audio leg: RTP we do not play
            return
        if source == latch.latched:
            before = receiver.stats.received
            events.extend(receiver.datagram_received(data, now))
            if receiver.stats.received == before:
                stats.undecodable += 1
            else:
                latch.accepted(data[0] << 8 | data[1])
            return
        try:
            seq = _decode_udptl_parts(data)[0]
        except MalformedPacket:
            stats.undecodable += 1
            return
        for held, arrived in self._from_elsewhere(data, source, seq, now, latch, events):
            events.extend(receiver.datagram_received(held, arrived))

    async def receive_until(self, deadline: float) -> list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram]:
        """Wait for datagrams until ``deadline`` (trio clock); return the receiver's events.

        Returns as soon as datagrams have been read (every one waiting on the socket, up to
        ``DRAIN_LIMIT``), or at the deadline with the receiver's timer handled.  Besides
        the receiver's ``IfpReceived``/``IfpLost`` the list may hold one
        ``ForeignDatagrams`` (the first foreign datagram of the call).  The list may be
        empty (a stray datagram, or nothing due).

        Under load most wake-ups find several datagrams waiting: they are read with
        non-blocking calls in one go, and the task waits (one cancel scope) only when the
        socket is empty, so a datagram costs a system call, not a trio receive.  While the
        pool's ``UdptlPoller`` runs, it reads the socket instead and wakes this task only
        for what needs an answer (or after ``BATCH_DELAY``): see there.
        """
        events: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram] = []
        raw = self._raw
        if self._poller is not None or self._buffered or self._poll_error is not None:
            await self._receive_polled(deadline, events)
        elif raw is None:  # an endpoint on a bare trio socket (none are built that way today)
            with trio.move_on_at(deadline) as self._wait_scope:
                data, source = await self._recvfrom()
                self._accept(data, source, trio.current_time(), events)
            self._wait_scope = None
        elif self._drain(raw, trio.current_time(), events):
            await trio.lowlevel.checkpoint()  # the other calls get their turn
        else:
            with trio.move_on_at(deadline) as self._wait_scope:
                await trio.lowlevel.wait_readable(raw)
            self._wait_scope = None
            self._drain(raw, trio.current_time(), events)
        receiver = self.receiver
        if receiver is not None:
            now = trio.current_time()
            timer = receiver.next_deadline()
            if timer is not None and timer <= now:
                events.extend(receiver.handle_timer(now))
        return events

    def _drain(self, raw: _socket.socket, now: float,
               events: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram], limit: int = DRAIN_LIMIT) -> int:
        """Read the datagrams waiting without blocking, until ``limit`` of them came from the
        peer (dropped ones - a third host's, junk - do not count, so a flood cannot hide the
        peer's behind it) or DRAIN_LIMIT were read; how many were read."""
        count = 0
        stats = self.stats
        dropped = stats.foreign_source + stats.undecodable
        while count < DRAIN_LIMIT and count - (stats.foreign_source + stats.undecodable - dropped) < limit:
            try:
                data, source = raw.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except (ConnectionRefusedError, ConnectionResetError):
                # Linux reports an ICMP port-unreachable for an earlier send here.
                self.stats.send_errors += 1
                continue
            except OSError:
                break  # closed under us: the caller's loop ends the call
            count += 1
            first = len(events)
            # AF_INET sources are (host, port) already; AF_INET6 ones carry flow and scope too.
            self._accept(data, source if len(source) == 2 else (source[0], source[1]), now, events)
            for index in range(first, len(events)):
                item = events[index]
                if type(item) is IfpReceived:
                    packet = item.packet
                    if packet is None or type(packet.msg) is T30Indicator or not packet.fields:
                        self._urgent = True
                        continue
                    fields = packet.fields
                    # Most packets hold one field: no generator for them (~1 us a datagram).
                    if (fields[0].field_type in SIGNAL_ENDS if len(fields) == 1
                            else any(field.field_type in SIGNAL_ENDS for field in fields)):
                        self._urgent = True
                        self.signal_ended_at = now
        return count

    def interrupt(self) -> None:
        """Make the task waiting in ``receive_until`` return now, with what was read so far
        (the call's state changed: a re-INVITE, a BYE).  Nothing if no task waits."""
        if self._waiter is not None:
            self._wake()
        elif self._wait_scope is not None:
            self._wait_scope.cancel()

    def take_signal_end(self) -> float | None:
        """When the peer's transmission last ended, once (None if not since the last call)."""
        ended, self.signal_ended_at = self.signal_ended_at, None
        return ended

    def _poll(self, now: float, poller: UdptlPoller, limit: int) -> None:
        """The poller found the socket readable: read what waits (at most ``limit``), wake
        the call's task if something in it needs an answer soon (else within BATCH_DELAY)."""
        raw = self._raw
        if raw is None:
            return
        try:
            self._drain(raw, now, self._buffered, limit)
        except Exception as exc:  # noqa: BLE001 - raised in the call's task, not the poller's
            self._poll_error = exc
            poller.detach(self)
            self._wake()
            return
        if not self._buffered:
            return
        if self._urgent or len(self._buffered) >= BATCH_LIMIT:
            poller.batches.pop(self, None)
            self._wake()
        elif self not in poller.batches:
            poller.batches[self] = now + poller.batch_delay

    def _wake(self) -> None:
        task, self._waiter = self._waiter, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def _receive_polled(self, deadline: float,
                              events: list[IfpReceived | IfpLost | ForeignDatagrams | AudioDatagram]) -> None:
        """``receive_until`` while the poller reads the socket: wait to be woken by it (or the
        deadline), then take what it read."""
        poller = self._poller
        if (not self._buffered and self._poll_error is None and poller is not None
                and deadline > trio.current_time()):
            # No cancel scope: the poller wakes us at the deadline too (or ``interrupt``).
            self._waiter = trio.lowlevel.current_task()
            poller.wake_at(self, deadline)

            def abort(_: object) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        else:
            await trio.lowlevel.checkpoint()  # the other calls get their turn
        error, self._poll_error = self._poll_error, None
        if error is not None:
            raise error
        if self._poller is not None:
            self._poller.batches.pop(self, None)
        events.extend(self._buffered)
        self._buffered.clear()
        self._urgent = False

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
        destination = self.destination
        if self.sender is None or destination is None:
            return
        datagram = self.sender.datagram_for(ifp)
        raw = self._raw
        try:
            if raw is not None:
                try:
                    # Non-blocking first: the socket's send buffer is almost never full, and
                    # trio's sendto would add a scheduling round per datagram.
                    raw.sendto(datagram, destination)
                except BlockingIOError:
                    await self.socket.sendto(datagram, destination)
            else:
                await self.socket.sendto(datagram, destination)
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
        if self._poller is not None:
            self._poller.detach(self)  # before the descriptor can be reused
        self.socket.close()
        if self._pool is not None:
            self._pool._release(self.port)

    def __enter__(self) -> UdptlEndpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class UdptlPoller:
    """One task that reads every T.38 call's socket (``PortPool.poller``; run it with
    ``nursery.start_soon(pool.poller.run)``).

    Why: a trio task woken per datagram costs ~40 us of the event loop (cancel scopes, an
    epoll registration and a scheduling round), several times what decoding the datagram
    costs, and a call receives ~20 a second.  The poller keeps the sockets in a private
    level-triggered epoll whose descriptor trio watches, reads them at most once per
    ``POLL_TICK``, feeds the datagrams through each endpoint's latch and UDPTL receiver
    as before, and wakes a call's task only when an event needs it: the end of the
    peer's transmission (it waits for our answer), an indicator, a malformed IFP,
    ``BATCH_LIMIT`` events - or ``BATCH_DELAY`` after the first that did not.  Events
    keep their order; a call's own deadline still wakes it.  Endpoints started before
    the poller runs, or after it stopped, wait on their own sockets as before.
    """

    def __init__(self, *, tick: float = POLL_TICK, batch_delay: float = BATCH_DELAY) -> None:
        self.tick = tick
        self.batch_delay = batch_delay
        self.running = False
        self._last_round = -math.inf
        self._epoll: select.epoll | None = None
        self._by_fd: dict[int, UdptlEndpoint] = {}
        #: endpoints holding events no one was woken for yet -> when they must be
        self.batches: dict[UdptlEndpoint, float] = {}
        # When waiting tasks want to be woken with nothing read: (deadline, entry number,
        # endpoint); an entry the endpoint has since replaced is skipped when it comes up.
        self._deadlines: list[tuple[float, int, UdptlEndpoint]] = []
        self._entries = 0
        self._round: trio.CancelScope | None = None

    @property
    def attached(self) -> int:
        return len(self._by_fd)

    def attach(self, endpoint: UdptlEndpoint) -> None:
        if endpoint._poller is self or self._epoll is None or endpoint._raw is None:
            return
        fd = endpoint._raw.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._by_fd[fd] = endpoint
        endpoint._poller = self
        endpoint._poller_fd = fd
        # The call's task may be waiting on the socket itself right now: let it return,
        # so its next wait is the poller's.
        endpoint.interrupt()

    def detach(self, endpoint: UdptlEndpoint) -> None:
        if endpoint._poller is not self:
            return
        endpoint._poller = None
        endpoint._deadline_entry = None  # its entries in the heap are dropped when met
        self.batches.pop(endpoint, None)
        fd = endpoint._poller_fd
        if self._by_fd.get(fd) is endpoint:
            del self._by_fd[fd]
            if self._epoll is not None:
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):
                    pass

    def wake_at(self, endpoint: UdptlEndpoint, deadline: float) -> None:
        """Wake ``endpoint``'s waiting task at ``deadline`` unless something does earlier.
        A call's T.30 deadline rarely changes between wake-ups: the entry is kept then."""
        if deadline == math.inf:
            return
        entry = endpoint._deadline_entry
        if entry is not None and entry[0] == deadline:
            return
        self._entries += 1
        endpoint._deadline_entry = (deadline, self._entries)
        heapq.heappush(self._deadlines, (deadline, self._entries, endpoint))
        scope = self._round
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    async def run(self) -> None:
        """Read the attached sockets until cancelled."""
        if self.running:
            raise RuntimeError("the UDPTL poller is already running")
        epoll = self._epoll = select.epoll()
        self.running = True
        try:
            last = -math.inf
            while True:
                due = min(self.batches.values(), default=math.inf)
                if self._deadlines:
                    due = min(due, self._deadlines[0][0])
                if due > trio.current_time():
                    with trio.move_on_at(due) as self._round:
                        await trio.lowlevel.wait_readable(epoll.fileno())
                    self._round = None
                now = trio.current_time()
                if now < last + self.tick:
                    # Coalesce: what arrives meanwhile is read in the same round.
                    await trio.sleep_until(last + self.tick)
                    now = trio.current_time()
                last = now
                self.poll(now)
        finally:
            self.running = False
            for endpoint in list(self._by_fd.values()):
                self.detach(endpoint)
                endpoint._wake()  # its task goes back to its own socket
            self._epoll = None
            epoll.close()

    def poll(self, now: float) -> None:
        """One round: read every readable socket, hand over the batches that are due."""
        epoll = self._epoll
        if epoll is None:
            return
        by_fd = self._by_fd
        # A call receives ~20 datagrams a second: a round on time finds one at most, and
        # reading only that one saves the read that would fail (EAGAIN); the level-triggered
        # epoll reports a socket with more again in the next round.  A late round (the
        # loop stalled) reads everything waiting, so a backlog cannot build up.
        limit = 1 if now - self._last_round <= 3 * self.tick else DRAIN_LIMIT
        self._last_round = now
        for fd, _ in epoll.poll(0, max(1, len(by_fd))):
            endpoint = by_fd.get(fd)
            if endpoint is not None:
                endpoint._poll(now, self, limit)
        if self.batches:
            for endpoint, due in list(self.batches.items()):
                if due <= now:
                    del self.batches[endpoint]
                    endpoint._wake()
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(by_fd) + 256:
            # Entries replaced by a newer deadline, or of calls gone, wait in the heap until
            # their time; when they outnumber the live ones, drop them (they hold endpoints).
            deadlines[:] = [item for item in deadlines
                            if item[2]._deadline_entry == (item[0], item[1]) and item[2]._poller is self]
            heapq.heapify(deadlines)
        while deadlines and deadlines[0][0] <= now:
            deadline, entry, endpoint = heapq.heappop(deadlines)
            if endpoint._deadline_entry == (deadline, entry):
                endpoint._deadline_entry = None
                endpoint._wake()
