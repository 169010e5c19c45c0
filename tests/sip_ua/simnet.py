"""A simulated UDP network for sans-IO user agents: latency, loss, and a trace of every
datagram, all in simulated time (no sockets, no clock)."""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from collections.abc import Callable

from sip.parser import parse_message
from sip.ua import Address, UAConfig, UserAgent


@dataclass
class Sent:
    time: float
    src: str
    dst: tuple[str, int]
    data: bytes
    dropped: bool

    @property
    def message(self):
        return parse_message(self.data)

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode()


@dataclass
class Node:
    name: str
    ua: UserAgent
    address: tuple[str, int]
    events: list = field(default_factory=list)
    on_event: Callable | None = None


class SimNet:
    """UAs on made-up loopback addresses; ``drop(sent) -> bool`` decides losses."""

    def __init__(self, latency: float = 0.01, drop: Callable[[Sent], bool] | None = None) -> None:
        self.now = 0.0
        self.latency = latency
        self.drop = drop or (lambda sent: False)
        self.nodes: dict[str, Node] = {}
        self.by_address: dict[tuple[str, int], Node] = {}
        self.trace: list[Sent] = []
        self._queue: list = []
        self._seq = itertools.count()

    def add(self, name: str, host: str, port: int = 5060, *, seed: int = 1, **config) -> Node:
        cfg = UAConfig(listen={"udp": (host, port)}, user=name, allow_from=("127.0.0.0/8",), **config)
        node = Node(name, UserAgent(cfg, rng=random.Random(seed)), (host, port))
        self.nodes[name] = node
        self.by_address[(host, port)] = node
        return node

    def flush(self) -> None:
        progress = True
        while progress:
            progress = False
            for node in list(self.nodes.values()):
                for out in node.ua.messages_to_send():
                    progress = True
                    sent = Sent(self.now, node.name, (out.destination.host, out.destination.port), out.data, False)
                    sent.dropped = bool(self.drop(sent))
                    self.trace.append(sent)
                    if not sent.dropped:
                        heapq.heappush(self._queue, (self.now + self.latency, next(self._seq), node.address, sent))
                for event in node.ua.events():
                    progress = True
                    node.events.append((self.now, event))
                    if node.on_event is not None:
                        node.on_event(node, event, self.now)

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Advance time, delivering datagrams and firing timers, up to ``until``."""
        for _ in range(200_000):
            self.flush()
            if stop is not None and stop():
                return
            deadlines = [d for n in self.nodes.values() if (d := n.ua.next_deadline()) is not None]
            next_delivery = self._queue[0][0] if self._queue else None
            candidates = deadlines + ([next_delivery] if next_delivery is not None else [])
            if not candidates:
                self.now = until
                return
            t = min(candidates)
            if t > until:
                self.now = until
                return
            self.now = max(self.now, t)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, src, sent = heapq.heappop(self._queue)
                node = self.by_address.get(sent.dst)
                if node is not None:
                    node.ua.receive(sent.data, Address("udp", src[0], src[1]), self.now)
            for node in self.nodes.values():
                d = node.ua.next_deadline()
                if d is not None and d <= self.now:
                    node.ua.handle_timer(self.now)
        raise AssertionError("simulation did not settle")

    def inject(self, data: bytes, src: tuple[str, int], dst_node: str) -> None:
        """Deliver raw bytes from an address that is not a node (a scripted peer)."""
        self.nodes[dst_node].ua.receive(data, Address("udp", src[0], src[1]), self.now)
        self.flush()

    def sent_by(self, name: str, first_line_prefix: str = "") -> list[Sent]:
        return [s for s in self.trace if s.src == name and s.first_line.startswith(first_line_prefix)]
