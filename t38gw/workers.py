"""Several gateway processes on one host: one SIP port, every core used (issue 14).

One trio process runs on one core.  With ``[server] workers = N`` (``"auto"``: one per
core) ``t38gw serve`` becomes a small **supervisor** and starts N **worker** processes,
each a whole gateway (call cores, UDPTL, T.30, page writing) for the calls it owns:

- The supervisor binds the SIP UDP port and reads every datagram on it.  It hands each
  one, unparsed, to the worker that owns its Call-ID (``owner_of``: CRC-32 of the
  Call-ID modulo N), over a socketpair, with the address it came from.  Every message of
  a dialog (the INVITE, its ACK and CANCEL, re-INVITEs, BYE, and the responses to our
  own requests) carries the same Call-ID, so one process holds all of a dialog's state;
  the supervisor keeps none.  Workers send from the same UDP socket (inherited), so
  responses leave from the port the trunk sent to.  Call-IDs we make (outbound calls,
  REGISTER) are drawn until they hash to their maker (``sip.UAConfig.call_id_owner``).
- TCP and TLS listeners, REGISTER to trunks, the send-job runner, retention sweeps and
  the HTTP API (``/v1/faxes``, ``/metrics``) run in worker 0 only.
- Shared state lives in files every worker opens: the archive folders, the archive
  index and the spool (SQLite in WAL mode, writers serialised by SQLite's lock, so the
  API sees every worker's faxes), and the audit trail (its own lock file).  Each worker
  delivers the webhooks it spooled (``Spool`` owner); worker 0 also those another
  worker has left long overdue (``spool.ADOPT_AFTER_SECONDS``).  Each worker writes its
  metrics every second to ``<spool>.metrics/worker-K.prom``; worker 0's ``/metrics``
  adds them up, so counters and gauges describe the whole gateway.
- UDPTL/RTP ports: each worker binds its own slice of ``[t38] udptl_ports``;
  ``[limits] max_calls`` is shared out evenly; admission by load is per process (each
  has its own event loop and core).
- A worker that dies is started again (after a back-off).  On its way up it closes the
  faxes it left in progress exactly as after a crash of a one-process gateway (its
  confirmed pages kept, ``partial``/``failed``, the webhook sent), picking them from the
  index by Call-ID owner; the other workers' calls go on untouched.  The first start of
  worker 0 recovers everything, before the other workers start.

Scaling past one host uses the same split: a Call-ID-hashing SIP dispatcher (Kamailio's
``dispatcher`` module, algorithm 0 over the Call-ID) in front of N hosts; each host
then has its own archive, index and spool (they are local files; SQLite is not shared
over a network file system), so the API of each host shows its own faxes.
"""

from __future__ import annotations

import math
import re
import signal
import socket as _socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import trio

from sip.transport import frame_datagram
from t38gw.config import Config

__all__ = ["READY", "WorkerRole", "call_id_of", "merge_expositions", "metrics_dir", "owner_of",
           "port_slice", "supervise"]

log = structlog.get_logger("t38gw.workers")

READY = b"\x00ready"  # a worker's message to the supervisor once it serves
START_TIMEOUT = 600.0  # the first worker may rebuild a large index first
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
STOP_MARGIN = 30.0  # beyond the workers' own shutdown grace
MAX_SIP_DATAGRAM = 65535

# RFC 3261 7.3.3 / 20.8: "Call-ID" or its compact form "i", any case, in the header part.
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


def owner_of(call_id: str, workers: int) -> int:
    """The worker that owns the dialog of ``call_id`` (stable across processes)."""
    return zlib.crc32(call_id.encode("utf-8", "replace")) % workers


def call_id_of(datagram: bytes) -> str | None:
    """The Call-ID of a SIP message as it is written, or None (not SIP, or none)."""
    head = datagram.split(b"\r\n\r\n", 1)[0]
    match = _CALL_ID.search(head)
    return match.group(1).decode("utf-8", "replace") if match else None


def port_slice(low: int, high: int, index: int, count: int) -> tuple[int, int]:
    """Worker ``index``'s share of the UDPTL port range (disjoint, covering it)."""
    size = high - low + 1
    first = low + size * index // count
    last = low + size * (index + 1) // count - 1
    if last < first:
        raise ValueError(f"the UDPTL port range {low}-{high} is too small for {count} workers")
    return first, last


def metrics_dir(config: Config) -> Path:
    return Path(str(config.spool) + ".metrics")


@dataclass
class WorkerRole:
    """What makes a gateway process one of N workers (None in a one-process gateway)."""

    index: int
    count: int
    listener: _socket.socket | None  # the supervisor's SIP UDP socket (sending only)
    feed: _socket.socket | None  # SIP datagrams from the supervisor; READY goes back on it
    recover: str  # "all" (the first worker 0), "own" (a restarted worker)

    @property
    def leader(self) -> bool:
        """Worker 0: the API, TCP/TLS, registration, jobs, retention."""
        return self.index == 0

    def owns(self, call_id: str) -> bool:
        return owner_of(call_id, self.count) == self.index

    def tell_ready(self) -> None:
        if self.feed is not None:
            try:
                self.feed.send(READY)
            except OSError:
                pass


# -- /metrics of the whole gateway ---------------------------------------------------------

_MAX_MERGED = {"t38gw_event_loop_lag_seconds"}  # the worst worker, not a sum
_LEADER_ONLY = {"t38gw_webhook_spool_depth"}  # read from the one shared spool


def merge_expositions(own: bytes, others: list[str]) -> bytes:
    """Worker 0's exposition with the other workers' added in, sample by sample."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for index, text in enumerate([own.decode(), *others]):
        try:
            parsed = list(text_string_to_metric_families(text))
        except (ValueError, TypeError):
            continue  # a file caught mid-write cannot happen (rename), a bad one is skipped
        for family in parsed:
            if index and family.name in _LEADER_ONLY:
                continue
            kind, doc, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if family.name in _MAX_MERGED:
                    samples[key] = max(samples.get(key, 0.0), sample.value)
                else:
                    samples[key] = samples.get(key, 0.0) + sample.value
    lines: list[str] = []
    for name, (kind, doc, samples) in families.items():
        exposed = name + "_total" if kind == "counter" else name
        lines.append(f"# HELP {exposed} {doc}")
        lines.append(f"# TYPE {exposed} {kind}")
        for (sample_name, labels), value in samples.items():
            text_labels = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample_name}{{{text_labels}}} {_number(value)}" if labels
                         else f"{sample_name} {_number(value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# -- the supervisor -------------------------------------------------------------------------

@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    feed: _socket.socket | None = None  # the supervisor's end of the socketpair
    ready: trio.Event = field(default_factory=trio.Event)
    started_at: float = 0.0
    restarts: int = 0
    dropped: int = 0  # datagrams not handed over (the worker was down or not reading)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux prctl), so no
    worker outlives it holding the SIP port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def supervise(config: Config, config_path: str | None, log_args: list[str]) -> int:
    """Run ``config.server.workers`` worker processes behind one SIP UDP port until
    SIGTERM/SIGINT; 0 after a clean stop, 1 if they could not start."""
    count = config.server.workers
    udp = [lst for lst in config.sip.listen if lst.transport == "udp"]
    if str(config.spool) == ":memory:":
        log.error("startup_failed", error="server.workers > 1 needs a spool file the workers share, not :memory:")
        return 1
    try:
        port_slice(*config.t38.udptl_ports, count - 1, count)
    except ValueError as exc:
        log.error("startup_failed", error=f"t38.udptl_ports: {exc}")
        return 1
    listener: _socket.socket | None = None
    if udp:
        spec = udp[0]
        listener = _socket.socket(_socket.AF_INET6 if ":" in spec.host else _socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            listener.bind((spec.host, spec.port))
        except OSError as exc:
            listener.close()
            log.error("startup_failed", error=f"sip.listen: cannot bind {spec}: {exc.strerror or exc}")
            return 1
        listener.setblocking(False)
    metrics_dir(config).mkdir(mode=0o700, exist_ok=True)
    for stale in metrics_dir(config).glob("worker-*.prom"):
        stale.unlink(missing_ok=True)  # a previous run's (perhaps more) workers
    workers = [_Worker(index) for index in range(count)]
    stopping = False
    base = [sys.executable, "-m", "t38gw.cli", *log_args, "serve"]
    if config_path is not None:
        base += ["--config", config_path]

    def spawn(worker: _Worker, recover: str) -> None:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        ours.setblocking(False)
        # Room for a burst of SIP while the worker's loop is busy (it reads them in order).
        for end in (ours, theirs):
            end.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 4 << 20)
            end.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4 << 20)
        fds = [theirs.fileno()] + ([listener.fileno()] if listener is not None else [])
        role = f"{worker.index}/{count}/{recover}/{theirs.fileno()}/{listener.fileno() if listener else -1}"
        worker.proc = subprocess.Popen([*base, "--worker", role], pass_fds=fds, preexec_fn=_die_with_parent)
        theirs.close()
        if worker.feed is not None:
            worker.feed.close()
        worker.feed = ours
        worker.ready = trio.Event()
        worker.started_at = time.monotonic()
        log.info("worker_started", worker=worker.index, pid=worker.proc.pid, recover=recover)

    async def listen_to(worker: _Worker, feed: _socket.socket) -> None:
        while True:
            try:
                await trio.lowlevel.wait_readable(feed)
                message = feed.recv(64)
            except (OSError, trio.ClosedResourceError):
                return
            if message == READY:
                worker.ready.set()
            elif not message:
                return

    async def relay() -> None:
        assert listener is not None
        sock = trio.socket.from_stdlib_socket(listener)
        while True:
            try:
                data, source = await sock.recvfrom(MAX_SIP_DATAGRAM)
            except (ConnectionRefusedError, ConnectionResetError):
                continue  # an ICMP error for a worker's earlier send
            call_id = call_id_of(data)
            worker = workers[owner_of(call_id, count) if call_id else 0]
            if worker.feed is None or worker.proc is None or worker.proc.poll() is not None:
                worker.dropped += 1  # it is being restarted: the sender retransmits (RFC 3261 17)
                continue
            try:
                worker.feed.send(frame_datagram(source[0], source[1], data))
            except (BlockingIOError, OSError):
                worker.dropped += 1

    async def keep_alive(worker: _Worker, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(0.5)
            proc = worker.proc
            if stopping or proc is None or proc.poll() is None:
                continue
            # A worker died: its calls are gone; start it again, it closes what they left.
            delay = RESTART_BACKOFF[min(worker.restarts, len(RESTART_BACKOFF) - 1)]
            if time.monotonic() - worker.started_at > 300:
                worker.restarts = 0  # it had been up a while: start over with the back-off
                delay = RESTART_BACKOFF[0]
            log.error("worker_died", worker=worker.index, pid=proc.pid, exit_status=proc.returncode,
                      restart_in=delay, datagrams_dropped=worker.dropped)
            await trio.sleep(delay)
            if stopping:
                return
            worker.restarts += 1
            spawn(worker, "own")
            assert worker.feed is not None
            nursery.start_soon(listen_to, worker, worker.feed)

    def stop_all(sig: int) -> None:
        for worker in workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(sig)

    async def wait_all(timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while any(w.proc is not None and w.proc.poll() is None for w in workers):
                await trio.sleep(0.1)
            return True
        return False

    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                # Worker 0 first: it recovers what a previous run left before anyone serves.
                for worker in workers:
                    spawn(worker, "all" if worker.index == 0 else "none")
                    assert worker.feed is not None and worker.proc is not None
                    nursery.start_soon(listen_to, worker, worker.feed)
                    with trio.move_on_after(START_TIMEOUT):
                        while not worker.ready.is_set():
                            if worker.proc.poll() is not None:
                                break
                            await trio.sleep(0.05)
                    if not worker.ready.is_set():
                        log.error("startup_failed", error=f"worker {worker.index} did not start "
                                  f"(exit status {worker.proc.poll()})")
                        stopping = True
                        stop_all(signal.SIGTERM)
                        await wait_all(STOP_MARGIN)
                        stop_all(signal.SIGKILL)
                        return 1
                if listener is not None:
                    nursery.start_soon(relay)
                for worker in workers:
                    nursery.start_soon(keep_alive, worker, nursery)
                log.info("workers_started", workers=count, pids=[w.proc.pid for w in workers if w.proc],
                         sip=f"{udp[0].host}:{listener.getsockname()[1]}" if listener and udp else None)
                signum = None
                async for received in signals:
                    signum = received
                    break
                stopping = True
                log.info("signal_received", signal=signal.Signals(signum).name if signum else None,
                         action="graceful shutdown of every worker")
                stop_all(signal.SIGTERM)  # each finishes its calls (its own grace), then exits
                finished = await _wait_or_second_signal(signals, wait_all, STOP_MARGIN + 60.0)
                if not finished:
                    stop_all(signal.SIGKILL)
                    await wait_all(10.0)
                nursery.cancel_scope.cancel()
    finally:
        if not stopping:  # cancelled from outside: no worker may outlive us
            stop_all(signal.SIGKILL)
        if listener is not None:
            listener.close()
    log.info("workers_stopped", exit_statuses=[w.proc.returncode if w.proc else None for w in workers])
    return 0


async def _wait_or_second_signal(signals: Any, wait_all: Any, timeout: float) -> bool:
    """Wait for the workers (bounded); a second signal stops waiting at once."""
    done = False
    async with trio.open_nursery() as nursery:

        async def waiter() -> None:
            nonlocal done
            done = await wait_all(timeout)
            nursery.cancel_scope.cancel()

        async def second() -> None:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return

        nursery.start_soon(waiter)
        nursery.start_soon(second)
    return done


def role_from_argument(text: str) -> WorkerRole:
    """``--worker INDEX/COUNT/RECOVER/FEED_FD/SIP_FD`` (set by the supervisor)."""
    index, count, recover, feed_fd, sip_fd = text.split("/")
    feed = _socket.socket(fileno=int(feed_fd))
    feed.setblocking(False)
    listener = _socket.socket(fileno=int(sip_fd)) if int(sip_fd) >= 0 else None
    if listener is not None:
        listener.setblocking(False)
    return WorkerRole(int(index), int(count), listener, feed, recover)
