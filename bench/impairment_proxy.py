"""A seeded UDPTL impairment proxy on real UDP sockets (t38gw issue #14).

The simulated-time model of ``udptl.impairment`` (random and Gilbert-Elliott burst loss,
duplication, reordering, jitter), applied per direction to the datagrams between a
T.38 far end and a gateway.  One UDP socket, bound to ``--listen``:

* a datagram from ``--target`` (the gateway's UDPTL address) goes to the peer;
* a datagram from anywhere else goes to ``--target``; its source becomes the peer
  unless ``--peer`` fixed it (datagrams for an unknown peer are dropped and counted).

Everything leaves from the listen socket, so the gateway sees one address for the far
end, as ``[t38] media_latching = "strict"`` wants.  The proxy does not rewrite SDP:

1. give the gateway one UDPTL port, so that the target is known before the call
   (``[t38] udptl_ports = "40000-40000"``);
2. the far end advertises the proxy's ``--listen`` address in its SDP (``c=`` and the
   ``m=image`` port), so the gateway sends there and accepts media from there;
3. the far end sends its UDPTL to the proxy's ``--listen`` address instead of the port in
   the gateway's answer (a test far end: ``ProxiedFarEnd`` below; SIPp: ``-mi``/``-mp``
   and a scenario whose SDP carries the proxy's port);
4. ``--peer`` is the far end's own UDPTL address (else learnt from its first datagram;
   the gateway's first DIS would otherwise have nowhere to go).

Run: ``.venv/bin/python bench/impairment_proxy.py --listen 127.0.0.1:41000 --target
127.0.0.1:40000 --peer 127.0.0.1:41500 --loss 0.1 --seed 7`` (``--burst 4`` for
Gilbert-Elliott bursts of 4 datagrams on average at the ``--loss`` long-run rate,
``--duplicate``, ``--reorder`` with ``--reorder-positions`` or ``--reorder-delay``,
``--jitter`` with ``--jitter-distribution``, ``--direction`` to impair one way only,
``--duration``; counters print every ``--stats-every`` s and at the end).

``--demo`` checks it for real: a ``t38gw serve`` subprocess, this proxy, and a SpanDSP far
end (tests/e2e/farend.py) faxing through it; prints the gateway's verdict, whether the
pages are pixel-identical, and the proxy's counters.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from udptl.impairment import GilbertElliott, Impairment  # noqa: E402

Address = tuple[str, int]


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return (host or "127.0.0.1", int(port))


@dataclass
class ProxyCounters:
    from_peer: int = 0
    from_target: int = 0
    no_peer_yet: int = 0  # datagrams from the target before any peer was known
    send_errors: int = 0


class ImpairmentProxy:
    """Forward datagrams between a peer and ``target`` through two seeded models."""

    def __init__(self, listen: Address, target: Address, to_target: Impairment, to_peer: Impairment,
                 peer: Address | None = None) -> None:
        self.listen = listen
        self.target = target
        self.peer = peer
        self.peer_fixed = peer is not None
        self.to_target = to_target
        self.to_peer = to_peer
        self.counters = ProxyCounters()
        self.bound: Address | None = None
        self._due: list[tuple[float, int, Address, bytes]] = []
        self._order = itertools.count()
        self._wake = trio.Event()

    def _schedule(self, arrivals: list[tuple[float, bytes]], destination: Address) -> None:
        for when, datagram in arrivals:
            heapq.heappush(self._due, (when, next(self._order), destination, datagram))
        if arrivals:
            self._wake.set()

    def datagram_from(self, data: bytes, source: Address, now: float) -> None:
        """Sans-IO core: route one datagram that arrived at ``now``."""
        if source == self.target:
            self.counters.from_target += 1
            if self.peer is None:
                self.counters.no_peer_yet += 1
                return
            self._schedule(self.to_peer.transmit(data, now), self.peer)
        else:
            self.counters.from_peer += 1
            if not self.peer_fixed:
                self.peer = source
            self._schedule(self.to_target.transmit(data, now), self.target)

    async def serve(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            # A burst (a peer replaying a capture) must not overflow the default buffer
            # and add losses of the kernel's own to the model's; the kernel caps it at rmem_max.
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 << 20)
            await sock.bind(self.listen)
            self.bound = sock.getsockname()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, sock)
                task_status.started(self.bound)
                while True:
                    data, source = await sock.recvfrom(65535)
                    self.datagram_from(data, (source[0], source[1]), trio.current_time())

    async def _send_loop(self, sock: trio.socket.SocketType) -> None:
        while True:
            now = trio.current_time()
            while self._due and self._due[0][0] <= now:
                _, _, destination, datagram = heapq.heappop(self._due)
                try:
                    await sock.sendto(datagram, destination)
                except OSError:
                    self.counters.send_errors += 1  # e.g. ECONNREFUSED from an earlier send
            self._wake = trio.Event()
            with trio.move_on_at(self._due[0][0] if self._due else now + 1.0):
                await self._wake.wait()

    def report(self) -> str:
        lines = [f"proxy {self.bound} <-> target {self.target}, peer {self.peer}: {self.counters}"]
        for name, model in (("to target", self.to_target), ("to peer", self.to_peer)):
            lines.append(f"  {name} [{model.describe()}]: {model.counters}")
        return "\n".join(lines)


def build_models(args: argparse.Namespace) -> tuple[Impairment, Impairment]:
    """(to target, to peer), each from its own generator derived from ``--seed``."""
    seeds = random.Random(args.seed)

    def model(impaired: bool) -> Impairment:
        rng = random.Random(seeds.getrandbits(64))
        if not impaired:
            return Impairment(rng, delay=args.delay)
        burst = GilbertElliott.from_mean_burst(args.burst, args.loss) if args.burst else None
        return Impairment(rng, loss=0.0 if burst else args.loss, burst_loss=burst, duplicate=args.duplicate,
                          reorder=args.reorder, delay=args.delay, jitter=args.jitter,
                          reorder_delay=args.reorder_delay, reorder_positions=args.reorder_positions,
                          jitter_distribution=args.jitter_distribution)

    to_target = model(args.direction in ("both", "to-target"))
    to_peer = model(args.direction in ("both", "to-peer"))
    return to_target, to_peer


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loss", type=float, default=0.0, help="loss probability (long-run rate with --burst)")
    parser.add_argument("--burst", type=float, default=0.0,
                        help="Gilbert-Elliott: mean burst length in datagrams (0: independent loss)")
    parser.add_argument("--duplicate", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--reorder-positions", type=int, default=0,
                        help="hold a reordered datagram back by this many later ones (0: by --reorder-delay)")
    parser.add_argument("--reorder-delay", type=float, default=0.05)
    parser.add_argument("--delay", type=float, default=0.0, help="one-way delay added, s")
    parser.add_argument("--jitter", type=float, default=0.0, help="s: uniform upper bound or exponential mean")
    parser.add_argument("--jitter-distribution", choices=["uniform", "exponential"], default="uniform")
    parser.add_argument("--direction", choices=["both", "to-target", "to-peer"], default="both")
    parser.add_argument("--seed", type=int, default=1)


async def run_standalone(proxy: ImpairmentProxy, duration: float | None, stats_every: float) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(proxy.serve)
        print(f"listening on {bound[0]}:{bound[1]}", flush=True)

        async def stats() -> None:
            while True:
                await trio.sleep(stats_every)
                print(proxy.report(), flush=True)

        if stats_every > 0:
            nursery.start_soon(stats)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            with trio.move_on_after(duration if duration else float("inf")):
                async for _ in signals:
                    break
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------ demo
def run_demo(args: argparse.Namespace) -> int:
    """A real ``t38gw serve``, this proxy in a thread, a SpanDSP far end faxing through it."""
    import tempfile

    from tests.e2e.farend import CallPlan, FarEnd
    from tests.e2e.support import GatewayProcess, free_port, tiff_pages
    from tests.t38gw.t30.pages import random_page

    class ProxiedFarEnd(FarEnd):
        """Advertises the proxy in its SDP and sends its UDPTL there."""

        def __init__(self, gateway_sip, plan, workdir, proxy_address: Address) -> None:
            self.proxy_address = proxy_address
            super().__init__(gateway_sip, plan, workdir)

        @property
        def advertised_udptl_port(self) -> int:
            return self.proxy_address[1]

        def _start_t38(self, answer_body: bytes) -> None:
            super()._start_t38(answer_body)
            if self.media_remote is not None:
                self.media_remote = self.proxy_address

    rng = random.Random(args.seed)
    pages = [(random_page(rng, 1728, height), 1728, height) for height in (rng.randrange(200, 400) for _ in range(args.pages))]
    with tempfile.TemporaryDirectory(prefix="t38gw-proxy-demo-") as tmp:
        workdir = Path(tmp)
        gateway = GatewayProcess(workdir, udptl_span=1)
        gateway.start()
        trio_token: list[trio.lowlevel.TrioToken] = []
        scopes: list[trio.CancelScope] = []
        ready = threading.Event()
        listen = ("127.0.0.1", free_port())
        to_target, to_peer = build_models(args)
        ec = {"red": "t38UDPRedundancy", "fec": "t38UDPFEC", "none": "t38UDPNoEC"}[args.demo_ec]
        plan = CallPlan(pages=pages, ecm=not args.demo_no_ecm, error_correction=ec, max_seconds=180.0)
        far_end = ProxiedFarEnd(gateway.sip_address, plan, workdir, listen)
        proxy = ImpairmentProxy(listen, ("127.0.0.1", gateway.udptl_ports[0]), to_target, to_peer,
                                peer=far_end.udptl.getsockname())

        async def proxy_main() -> None:
            trio_token.append(trio.lowlevel.current_trio_token())
            async with trio.open_nursery() as nursery:
                scopes.append(nursery.cancel_scope)
                await nursery.start(proxy.serve)
                ready.set()

        thread = threading.Thread(target=trio.run, args=(proxy_main,), daemon=True)
        thread.start()
        try:
            if not ready.wait(10):
                raise RuntimeError("proxy did not start")
            started = time.monotonic()
            result = far_end.run()
            metas = gateway.wait_for_faxes(1, timeout=60)
            meta = metas[0]
            tiff = gateway.folder(meta) / "fax.tif"
            got = [(bitmap, w, h) for bitmap, w, h, _, _ in tiff_pages(tiff)] if tiff.exists() else []
            identical = sum(1 for a, b in zip(got, pages) if a == b)
            print(f"far end: phase E {result.phase_e_status}, {time.monotonic() - started:.1f} s; "
                  f"gateway: {meta['status']} {meta.get('reason') or ''}; "
                  f"{len(got)}/{len(pages)} pages archived, {identical} pixel-identical")
            print(proxy.report())
            return 0 if meta["status"] == "received" and identical == len(pages) else 1
        finally:
            gateway.stop()
            if trio_token and scopes:
                trio.from_thread.run_sync(scopes[0].cancel, trio_token=trio_token[0])
            thread.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_address, default=("127.0.0.1", 0))
    parser.add_argument("--target", type=parse_address, help="the gateway's UDPTL HOST:PORT")
    parser.add_argument("--peer", type=parse_address, help="the far end's UDPTL HOST:PORT (else learnt)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--stats-every", type=float, default=10.0)
    add_model_arguments(parser)
    parser.add_argument("--demo", action="store_true", help="fax through the proxy into a real t38gw serve")
    parser.add_argument("--pages", type=int, default=2, help="--demo: pages to send")
    parser.add_argument("--demo-ec", choices=["red", "fec", "none"], default="red",
                        help="--demo: the far end's T38FaxUdpEC offer")
    parser.add_argument("--demo-no-ecm", action="store_true")
    args = parser.parse_args(argv)
    if args.demo:
        return run_demo(args)
    if args.target is None:
        parser.error("--target is required (or --demo)")
    to_target, to_peer = build_models(args)
    proxy = ImpairmentProxy(args.listen, args.target, to_target, to_peer, peer=args.peer)
    trio.run(run_standalone, proxy, args.duration, args.stats_every)
    print(proxy.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
