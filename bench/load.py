"""Load bench (issue 14): N concurrent T.38 faxes into one real ``t38gw serve``.

For each N in ``--calls`` and each capture of ``--mode`` (ECM MMR, non-ECM MR: the
recorded SpanDSP senders in tests/vectors, written by tools/record_t38_capture.py; one
page of 1728 x 2286 pels, 14.4k, fine):

1. a fresh ``t38gw serve`` (tests/e2e/support.py ``GatewayProcess``) on loopback with
   ``[limits] max_calls`` above N, a wide UDPTL port range, one webhook pointing at an HTTP
   receiver inside this bench that timestamps every POST, and ``[server] workers`` from
   ``--workers`` when the gateway's configuration has that key;
2. bench/replayer.py in a SEPARATE process: N calls started over ``--ramp`` s, each an
   INVITE with a T.38 offer and a blind replay of the capture (see its docstring for the
   T.30 response latency definition);
3. every fax is then asked of the API (GET /v1/faxes, following next_cursor, and
   GET /v1/faxes/{id}), and its archived fax.tif compared pixel by pixel with the page the
   capture carries (tests/vectors/t38_sender_page.png).

Printed per N: calls answered / refused with 503 / failed; faxes received and pages
identical; gateway CPU per fax (utime+stime from /proc/<pid>/stat of the gateway and every
descendant process, from the first INVITE until every fax's webhook was posted - before
the bench reads the API - over the faxes received; user/system/main-thread split of the
live processes beside it); each process's CPU utilisation during the calls (gateway processes and
the replayer: its CPU is on the same 2 cores); RSS per call ((peak summed VmRSS of the
gateway's processes - the idle figure) / N); p50/p99 T.30 response latency; p50/p99 MCF ->
webhook POST received; the kernel's UDP receive errors (/proc/net/snmp Udp InErrors and
RcvbufErrors: machine-wide, so other processes' drops count too); the largest
``t38gw_event_loop_lag_seconds`` seen in /metrics (sampled every 2 s; "-" when the gateway
does not export it); how busy the whole machine was (the box is shared).  Beside them:
where a webhook's time goes (from the last page confirmed to the fax archived and its
webhook spooled, and to the POST received, from the gateway's log), and a reference measured in the
same run - the capture through our sans-IO UDPTL and T.30 cores alone, in-process - with
the gateway's CPU per fax as a multiple of it (figures from different days compare by it).

Asserts nothing.  Run: ``.venv/bin/python bench/load.py --calls 100 300 --mode both``
(``--ramp 5``, ``--workers auto``, ``--keep`` keeps the work folders, ``--json FILE`` writes
the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._proc import descendants, machine_cpu, proc_stat, proc_times, status_kib, thread_cpu, udp_errors  # noqa: E402

MODES = {"ecm": ["ecm_mmr"], "nonecm": ["nonecm_mr"], "both": ["nonecm_mr", "ecm_mmr"]}
PAGE_PATH = REPO / "tests" / "vectors" / "t38_sender_page.png"


# -- /proc ----------------------------------------------------------------------------------
class SocketDrops:
    """Datagrams the kernel dropped per UDP socket (the "drops" column of /proc/net/udp,
    proc(5)), the largest value seen per socket, split by whose port it is: the gateway's
    (its SIP port and UDPTL range) or any other (the replayer's, or other processes')."""

    def __init__(self, gateway_ports: tuple[int, int], sip_port: int) -> None:
        self.low, self.high = gateway_ports
        self.sip_port = sip_port
        self.seen: dict[tuple[str, int], tuple[bool, int]] = {}  # (inode, port) -> (gateway's?, drops)

    def sample(self) -> None:
        try:
            lines = Path("/proc/net/udp").read_text().splitlines()[1:]
        except OSError:
            return
        for line in lines:
            fields = line.split()
            if len(fields) < 13:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            drops = int(fields[12])
            if drops:
                ours = self.low <= port <= self.high or port == self.sip_port
                key = (fields[9], port)
                self.seen[key] = (ours, max(drops, self.seen.get(key, (ours, 0))[1]))

    def totals(self) -> tuple[int, int]:
        """(drops on the gateway's sockets, drops on other sockets)."""
        gateway = sum(d for ours, d in self.seen.values() if ours)
        return gateway, sum(d for ours, d in self.seen.values() if not ours)


class ProcessTree:
    """CPU of a process and its descendants (dead ones through the root's cutime/cstime),
    peak summed VmRSS, and one /metrics series' peak, sampled every ``every`` s."""

    def __init__(self, root: int, every: float = 0.5, metrics_url: str | None = None,
                 drops: SocketDrops | None = None) -> None:
        self.root = root
        self.drops = drops
        self.every = every
        self.metrics_url = metrics_url
        self.peak_rss = 0
        self.cpu_by_pid: dict[int, float] = {}
        self.metrics_peak: dict[str, float] = {}
        self.metrics_last: dict[str, float] = {}
        self.timeline: list[tuple[float, float]] = []  # (wall clock, CPU seconds as ``cpu()``)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cpu(self, by_pid: dict[int, float] | None = None) -> float:
        """Seconds used so far by the root, its live descendants and the reaped ones (each
        live process's into ``by_pid``, ``cpu_by_pid`` unless given)."""
        by_pid = self.cpu_by_pid if by_pid is None else by_pid
        total = 0.0
        for pid in descendants(self.root):
            try:
                _, used, reaped = proc_stat(pid)
            except OSError:
                continue
            by_pid[pid] = used
            total += used + (reaped if pid == self.root else 0.0)
        return total

    def split(self) -> tuple[float, float, float]:
        """(user, system, main threads') seconds of the live processes: where the CPU went."""
        user = system = main = 0.0
        for pid in descendants(self.root):
            try:
                utime, stime, _ = proc_times(pid)
                main += thread_cpu(pid, pid)
            except OSError:
                continue
            user += utime
            system += stime
        return user, system, main

    def rss(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in descendants(self.root))

    def _run(self) -> None:
        next_metrics = 0.0
        while not self._stop.wait(self.every):
            self.peak_rss = max(self.peak_rss, self.rss())
            self.timeline.append((time.time(), self.cpu({})))  # not cpu_by_pid: the run's reads use it
            if self.drops is not None:
                self.drops.sample()
            if self.metrics_url and time.monotonic() >= next_metrics:
                next_metrics = time.monotonic() + 2.0
                for name, value in read_metrics(self.metrics_url).items():
                    self.metrics_last[name] = value
                    self.metrics_peak[name] = max(value, self.metrics_peak.get(name, value))

    def __enter__(self) -> ProcessTree:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


_WANTED = ("t38gw_event_loop_lag_seconds", "t38gw_udp_receive_errors_total", "t38gw_t30_response_seconds",
           "t38gw_udptl_ports_in_use", "t38gw_calls_active", "t38gw_calls_refused", "t38gw_page_write_wait_seconds")


def read_metrics(url: str) -> dict[str, float]:
    """Samples of the series above from a Prometheus text exposition (absent: not there)."""
    import httpx

    try:
        text = httpx.get(url, timeout=2).text
    except Exception:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(_WANTED):
            continue
        match = re.match(r"^(\S+?)(\{.*\})?\s+(\S+)", line)
        if match:
            try:
                out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
            except ValueError:
                pass
    return out


def histogram_quantile(samples: dict[str, float], name: str, fraction: float) -> float | None:
    """The upper bound of the Prometheus histogram bucket holding the quantile (None: absent)."""
    buckets = []
    for key, value in samples.items():
        match = re.match(rf'^{name}_bucket\{{.*le="([^"]+)".*\}}$', key)
        if match:
            buckets.append((float(match.group(1)), value))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    wanted = fraction * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= wanted)


def workers_supported(workdir: Path) -> bool:
    """Whether the gateway's configuration has ``[server] workers`` (issue 14's work)."""
    from t38gw.config import ConfigError, load_config

    probe = workdir / "probe.toml"
    probe.write_text("[server]\nworkers = 1\n")
    try:
        load_config(probe, environ={})
        return True
    except (ConfigError, TypeError, KeyError):
        return False
    finally:
        probe.unlink()


# -- the API and the pages --------------------------------------------------------------------------
def all_faxes(api: str) -> list[dict]:
    """Every fax in GET /v1/faxes, following next_cursor."""
    import httpx

    faxes: list[dict] = []
    cursor = None
    for _ in range(1000):
        params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(f"{api}/v1/faxes", params=params, timeout=10).json()
        faxes += page["faxes"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return faxes


def wait_for_final(gateway, count: int, timeout: float) -> list[dict]:
    """GET /v1/faxes/{id} of every fax, until ``count`` exist and none is in progress (bounded)."""
    deadline = time.monotonic() + timeout
    final: dict[str, dict] = {}
    while True:
        metas = []
        for fax in all_faxes(gateway.api):
            meta = final.get(fax["id"]) or gateway.meta(fax["id"])
            if not meta.get("in_progress"):
                final[fax["id"]] = meta
            metas.append(meta)
        if (len(metas) >= count and len(final) == len(metas)) or time.monotonic() > deadline:
            return metas
        time.sleep(0.5)


def webhook_stages(events: list[dict], posted: dict[str, float]) -> dict[str, list[float]]:
    """Where a webhook's time goes, per fax, from the gateway's log (one wall clock with
    the receiver's), both counted from the last page confirmed (the MCF decided):
    ``archived`` - until ``fax_finished`` (fax.pdf/tif, meta.json, index row, the webhook's
    spool row and the audit line written: the after-call threads); ``posted`` - until the
    POST was received (the delivery worker starts once the spool row is in, before the
    audit line)."""
    from datetime import datetime

    def at(event: dict) -> float:
        return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()

    confirmed: dict[str, float] = {}
    caller_of: dict[str, str] = {}
    archived: list[float] = []
    delivered: list[float] = []
    for event in events:
        fax = event.get("fax_id")
        if not fax or "timestamp" not in event:
            continue
        if event.get("event") == "call_incoming":
            caller_of[fax] = str(event.get("caller"))
        elif event.get("event") == "page_confirmed":
            confirmed[fax] = at(event)
        elif event.get("event") == "fax_finished" and fax in confirmed:
            archived.append(at(event) - confirmed[fax])
            if caller_of.get(fax) in posted:
                delivered.append(posted[caller_of[fax]] - confirmed[fax])
    return {"archived": archived, "posted": delivered}


def cpu_phases(events: list[dict], timeline: list[tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """The gateway's CPU in each phase of the run, from its log and the sampled CPU:
    ``invites`` (first to last ``call_incoming``: set-up while INVITEs arrive), ``pages``
    (until the first ``page_confirmed``: training and page data), ``page_ends`` (until the
    last ``webhook_delivered``: page writes, MCF, the after-call work, the POSTs) ->
    (seconds, CPU seconds).  Where a phase's CPU per fax says what the machine must give
    at once when calls started together end together."""
    from datetime import datetime

    def at(event: dict) -> float:
        return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()

    def cpu_at(when: float) -> float:  # linear between the samples around it
        before = [(t, c) for t, c in timeline if t <= when]
        after = [(t, c) for t, c in timeline if t > when]
        if not before or not after:
            return (before or after)[-1 if before else 0][1]
        (t0, c0), (t1, c1) = before[-1], after[0]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0)

    marks: dict[str, list[float]] = {"call_incoming": [], "page_confirmed": [], "webhook_delivered": []}
    for event in events:
        if event.get("event") in marks and "timestamp" in event:
            marks[event["event"]].append(at(event))
    if len(timeline) < 2 or not all(marks.values()):
        return {}
    bounds = [min(marks["call_incoming"]), max(marks["call_incoming"]), min(marks["page_confirmed"]),
              max(marks["webhook_delivered"])]
    return {name: (end - start, cpu_at(end) - cpu_at(start))
            for name, start, end in zip(("invites", "pages", "page_ends"), bounds, bounds[1:]) if end >= start}


def engine_cpu_per_fax(capture_name: str, repeat: int = 3) -> float:
    """The reference measured in the same run: CPU for the capture's datagrams through our
    sans-IO cores alone, in this process - ``UdptlReceiver`` and ``T30Receiver`` (its page
    decoding included), at the recorded times; the best of ``repeat``.  The gateway's CPU
    per fax over this is what the service around them costs (sockets, SIP, the event loop,
    archive, webhook), and it scales with the machine's speed as the gateway's does."""
    from bench.replayer import load_capture
    from t38gw.t30 import PageReceived, ReceiverConfig, T30Receiver
    from udptl.receiver import IfpReceived, UdptlReceiver

    capture = load_capture(capture_name)
    best = float("inf")
    for _ in range(repeat):
        udptl = UdptlReceiver(int(capture.meta.get("t38_version", 0)))
        engine = T30Receiver(ReceiverConfig(local_ident="1"))
        pages = 0
        started = time.process_time()
        engine.start(0.0)
        for now, datagram in zip(capture.offsets, capture.datagrams):
            deadline = engine.next_deadline()
            if deadline is not None and deadline <= now:
                engine.handle_timer(now)
            for item in udptl.datagram_received(datagram, now):
                if isinstance(item, IfpReceived) and item.packet is not None:
                    pages += sum(isinstance(e, PageReceived) for e in engine.ifp_received(item.packet, now))
            engine.ifps_to_send(now)
        best = min(best, time.process_time() - started)
        if pages != 1:
            raise RuntimeError(f"reference replay of {capture_name} gave {pages} pages, not 1")
    return best


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- one run --------------------------------------------------------------------------------------
def start_profiler(args, pid: int, capture: str, count: int) -> subprocess.Popen | None:
    """py-spy on the gateway and its workers from the first INVITE until every fax is final."""
    if not args.py_spy:
        return None
    args.py_spy.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    output = args.py_spy / f"{capture}-n{count}.txt"
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--subprocesses", "--threads", "--rate", "100",
                             "--format", "raw", "--output", str(output), "--nonblocking",
                             *(["--gil"] if args.py_spy_gil else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen | None) -> None:
    if profiler is None:
        return
    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        profiler.kill()


def one_run(count: int, capture: str, args, base: Path) -> dict:
    from tests.e2e.support import GatewayProcess, WebhookReceiver, tiff_pages
    from tools.record_t38_capture import read_page_png

    page = read_page_png(PAGE_PATH)
    engine_ref = engine_cpu_per_fax(capture)  # before anything else of this run uses the CPU
    workdir = base / f"{capture}-n{count}"
    workdir.mkdir()
    webhook = WebhookReceiver().start()
    extra = f"\n[limits]\nmax_calls = {max(500, 2 * count)}\n"
    for setting in args.limit:  # e.g. max_cpu=0.95: what admission would do with another limit
        extra += f"{setting}\n"
    workers = None
    if args.workers and workers_supported(workdir):
        workers = args.workers
        value = f'"{workers}"' if workers == "auto" else workers
        extra += f"\n[server]\nworkers = {value}\n"
    gateway = GatewayProcess(workdir, webhook_url=webhook.url, udptl_span=max(400, 4 * count), extra_config=extra)
    gateway.start()
    assert gateway.proc is not None
    drops = SocketDrops(gateway.udptl_ports, gateway.sip_port)
    tree = ProcessTree(gateway.proc.pid, metrics_url=f"{gateway.api}/metrics", drops=drops)
    replayer = None
    try:
        time.sleep(1.5)  # start-up work (workers, index) settles
        rss_idle = tree.rss()
        processes_idle = len(descendants(gateway.proc.pid))
        command = [sys.executable, str(REPO / "bench" / "replayer.py"), "--sip", f"127.0.0.1:{gateway.sip_port}",
                   "--capture", capture, "--calls", str(count), "--ramp", str(args.ramp)]
        with tree:
            replayer_log = open(workdir / "replayer.log", "wb")
            replayer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=replayer_log, cwd=REPO)
            assert replayer.stdout is not None
            go = replayer.stdout.readline()
            if go.strip() != b"go":
                replayer.wait(30)
                raise RuntimeError(f"replayer did not start: {go!r} {(workdir / 'replayer.log').read_text()[-3000:]}")
            profiler = start_profiler(args, gateway.proc.pid, capture, count)
            udp_0 = udp_errors()
            gw_cpu_0 = tree.cpu()
            split_0 = tree.split()
            pids_0 = dict(tree.cpu_by_pid)
            machine_0 = machine_cpu()
            wall_0 = time.monotonic()
            replayer_cpu = 0.0
            chunks: list[bytes] = []
            # A thread drains its output (the report is bigger than a pipe's buffer) while this
            # one samples its CPU (gone from /proc once it exits).
            reader = threading.Thread(target=lambda: chunks.append(replayer.stdout.read()), daemon=True)
            reader.start()
            while replayer.poll() is None:
                try:
                    replayer_cpu = proc_stat(replayer.pid)[1]
                except OSError:
                    pass
                time.sleep(0.5)
                if time.monotonic() - wall_0 > args.ramp + 200:
                    replayer.kill()
                    raise RuntimeError("the replayer did not finish in time")
            reader.join(30)
            output = b"".join(chunks)
            (workdir / "replayer.json").write_bytes(output)  # every call's figures, kept with --keep
            replayer_log.close()
            wall_calls = time.monotonic() - wall_0
            gw_cpu_1 = tree.cpu()
            pids_1 = dict(tree.cpu_by_pid)
            machine_1 = machine_cpu()
            udp_1 = udp_errors()
            if replayer.returncode != 0:
                raise RuntimeError(f"replayer exited {replayer.returncode}: {(workdir / 'replayer.log').read_text()[-3000:]}")
            report = next(json.loads(line)["report"] for line in output.splitlines() if line.startswith(b'{"report"'))
            calls = report["calls"]
            answered = sum(1 for call in calls if call["status"] == 200)
            # Each answered call's fax posts one webhook once it is final: the gateway's CPU is
            # read when they are in, before this bench's own API reads (a GET per fax) add to it.
            webhook.wait_for(lambda posts: len(posts) >= answered, timeout=60 + count / 10)
            gw_cpu_2 = tree.cpu()
            split_2 = tree.split()
            metas = wait_for_final(gateway, answered, timeout=60 + count / 10)
            stop_profiler(profiler)
            webhook.wait_for(lambda posts: len(posts) >= len(metas), timeout=30)
            final_metrics = read_metrics(f"{gateway.api}/metrics")
        rss_peak = tree.peak_rss
        processes = len(descendants(gateway.proc.pid))

        # Pages, pixel by pixel.
        statuses: Counter = Counter()
        reasons: Counter = Counter()
        received = identical = 0
        by_caller: dict[str, dict] = {}
        for meta in metas:
            statuses[meta.get("status")] += 1
            by_caller[(meta.get("sip") or {}).get("caller", "")] = meta
            if meta.get("status") != "received":
                reasons[str(meta.get("reason"))[:70]] += 1
                continue
            received += 1
            try:
                archived = tiff_pages(gateway.folder(meta) / "fax.tif")
            except Exception:
                continue
            if [(b, w, h) for b, w, h, _, _ in archived] == [page]:
                identical += 1

        # MCF (as the replayer saw it arrive) -> the webhook POST (as our receiver saw it).
        posted: dict[str, float] = {}
        for post in webhook.posts:
            try:
                caller = json.loads(post.body)["data"]["sip"]["caller"]
            except (ValueError, KeyError, TypeError):
                continue
            posted.setdefault(caller, post.at)
        webhook_delays = [posted[call["caller"]] - call["mcf_unix"] for call in calls
                          if call["mcf_unix"] is not None and call["caller"] in posted]
        events = gateway.log_events()
        stages = webhook_stages(events, posted)
        phases = cpu_phases(events, tree.timeline)
        latencies = [value for call in calls for value in call["latencies"]]
        invite_statuses = Counter(call["status"] for call in calls)
        failed = sum(1 for call in calls if call["status"] not in (200, 503) or (call["status"] == 200 and call["error"]))
        gateway_pids = {pid: pids_1.get(pid, 0.0) - pids_0.get(pid, 0.0) for pid in pids_1}
        return {
            "capture": capture, "n": count, "workers": workers, "answered": answered,
            "refused_503": invite_statuses.get(503, 0),
            "refused_with_retry_after": sum(1 for c in calls if c["status"] == 503 and c["retry_after"]),
            "failed": failed, "invite_statuses": {str(k): v for k, v in invite_statuses.items()},
            "faxes": len(metas), "received": received, "identical": identical,
            "statuses": dict(statuses), "reasons": dict(reasons),
            "gw_cpu_split": [b - a for a, b in zip(split_0, split_2)],
            "gw_cpu_calls": gw_cpu_1 - gw_cpu_0, "gw_cpu_total": gw_cpu_2 - gw_cpu_0, "cpu_phases": phases,
            "cpu_per_fax": (gw_cpu_2 - gw_cpu_0) / received if received else None,
            "engine_ref": engine_ref,
            "gw_util_by_pid": {str(pid): used / wall_calls for pid, used in gateway_pids.items() if used > 0},
            "gw_util": (gw_cpu_1 - gw_cpu_0) / wall_calls, "processes": processes, "processes_idle": processes_idle,
            "replayer_cpu": replayer_cpu, "replayer_loop_cpu": report["loop_cpu"],
            "replayer_util": report["loop_cpu"] / max(report["loop_wall"], 1e-9),
            "replayer_timer_stalls": report["timer_stalls"], "replayer_worst_stall": report["worst_timer_stall"],
            "replayer_late_sends": sum(c["late_sends"] for c in calls),
            "wall_calls": wall_calls, "machine_util": (machine_1[0] - machine_0[0]) / max(machine_1[1] - machine_0[1], 1e-9),
            "rss_idle_kib": rss_idle, "rss_peak_kib": rss_peak, "rss_per_call_kib": (rss_peak - rss_idle) / count,
            "t30_p50": percentile(latencies, 0.50), "t30_p99": percentile(latencies, 0.99),
            "t30_samples": len(latencies), "unanswered_turns": sum(c["unanswered_turns"] for c in calls),
            "webhook_p50": percentile(webhook_delays, 0.50), "webhook_p99": percentile(webhook_delays, 0.99),
            "webhook_samples": len(webhook_delays), "webhook_posts": len(webhook.posts),
            **{f"{stage}_{q}": percentile(values, fraction) for stage, values in stages.items()
               for q, fraction in (("p50", 0.50), ("p99", 0.99))},
            "mcf_seen": sum(1 for c in calls if c["mcf_unix"] is not None),
            "udp_in_errors": udp_1["InErrors"] - udp_0["InErrors"],
            "drops_gateway_sockets": drops.totals()[0], "drops_other_sockets": drops.totals()[1],
            "udp_rcvbuf_errors": udp_1["RcvbufErrors"] - udp_0["RcvbufErrors"],
            "event_loop_lag_max": max((v for k, v in tree.metrics_peak.items()
                                       if k.startswith("t38gw_event_loop_lag_seconds")), default=None),
            "metrics_peak": {k: v for k, v in tree.metrics_peak.items() if "_bucket" not in k and "_created" not in k},
            "gateway_t30_p50": histogram_quantile(final_metrics, "t38gw_t30_response_seconds", 0.50),
            "gateway_t30_p99": histogram_quantile(final_metrics, "t38gw_t30_response_seconds", 0.99),
            "page_write_wait_count": final_metrics.get("t38gw_page_write_wait_seconds_count"),
            "page_write_wait_p50": histogram_quantile(final_metrics, "t38gw_page_write_wait_seconds", 0.50),
            "page_write_wait_p99": histogram_quantile(final_metrics, "t38gw_page_write_wait_seconds", 0.99),
            "errors": Counter(c["error"] for c in calls if c["error"]).most_common(5),
            "no_mcf_callers": [c["caller"] for c in calls if c["status"] == 200 and c["mcf_unix"] is None][:5],
            "workdir": str(workdir),
        }
    finally:
        if replayer is not None and replayer.poll() is None:
            replayer.kill()
            replayer.wait(10)
        gateway.stop()
        webhook.stop()


def _ms(value: float | None) -> str:
    return f"{value * 1000:.0f}" if value is not None else "-"


def print_table(rows: list[dict]) -> None:
    print(f"\n{'capture':<10} {'N':>5} {'ans/503/fail':>13} {'recv/ident':>10} {'CPU/fax':>8} {'gw util':>8} "
          f"{'replayer':>9} {'MCF seen':>9} {'RSS/call':>9} {'T30 p50/p99 ms':>15} {'hook p50/p99 ms':>16} {'UDP err':>8} "
          f"{'lag max':>8} {'box':>5}")
    for row in rows:
        cpu = f"{row['cpu_per_fax']:.3f}s" if row["cpu_per_fax"] is not None else "-"
        lag = f"{row['event_loop_lag_max'] * 1000:.0f}ms" if row["event_loop_lag_max"] is not None else "-"
        print(f"{row['capture']:<10} {row['n']:>5} {row['answered']:>5}/{row['refused_503']}/{row['failed']:<5} "
              f"{row['received']:>4}/{row['identical']:<5} {cpu:>8} {100 * row['gw_util']:7.0f}% "
              f"{100 * row['replayer_util']:8.0f}% {row['mcf_seen']:>9} {row['rss_per_call_kib'] / 1024:7.2f}MiB "
              f"{_ms(row['t30_p50']):>7}/{_ms(row['t30_p99']):<7} {_ms(row['webhook_p50']):>8}/{_ms(row['webhook_p99']):<7} "
              f"{row['udp_in_errors']:>8} {lag:>8} {100 * row['machine_util']:4.0f}%")


def print_details(row: dict) -> None:
    print(f"  {row['capture']} N={row['n']}: INVITE statuses {row['invite_statuses']} "
          f"(503 with Retry-After: {row['refused_with_retry_after']}); faxes {row['faxes']} {row['statuses']}"
          f"{' not received: ' + str(row['reasons']) if row['reasons'] else ''}; workers {row['workers']}, "
          f"gateway processes {row['processes_idle']} idle / {row['processes']} after")
    print(f"    gateway CPU {row['gw_cpu_calls']:.1f} s during the calls ({row['wall_calls']:.0f} s), "
          f"{row['gw_cpu_total']:.1f} s until every webhook was posted; per process: "
          f"{ {pid: f'{100 * u:.0f}%' for pid, u in row['gw_util_by_pid'].items()} }; user/system/main "
          f"threads {'/'.join(f'{v:.1f}' for v in row['gw_cpu_split'])} s (live processes); "
          f"RSS idle {row['rss_idle_kib'] / 1024:.0f} MiB, peak {row['rss_peak_kib'] / 1024:.0f} MiB")
    print(f"    replayer: {row['replayer_loop_cpu']:.1f} s CPU in its loop (process total {row['replayer_cpu']:.1f} s), "
          f"{row['replayer_timer_stalls']} timers >20 ms late (worst {row['replayer_worst_stall'] * 1000:.0f} ms), "
          f"{row['replayer_late_sends']} late sends")
    print(f"    T.30 turns answered {row['t30_samples']}, unanswered {row['unanswered_turns']}; MCF seen "
          f"{row['mcf_seen']}, webhook POSTs {row['webhook_posts']} ({row['webhook_samples']} matched to an MCF); "
          f"kernel UDP InErrors {row['udp_in_errors']}, RcvbufErrors {row['udp_rcvbuf_errors']} (machine-wide); "
          f"per-socket drops (sampled every 0.5 s): gateway's sockets {row['drops_gateway_sockets']}, "
          f"others' (the replayer's...) {row['drops_other_sockets']}")
    if row["cpu_per_fax"] is not None:
        print(f"    reference (same run): the capture through UdptlReceiver + T30Receiver in this process "
              f"{row['engine_ref'] * 1000:.1f} ms of CPU; the gateway's CPU per fax is "
              f"{row['cpu_per_fax'] / row['engine_ref']:.1f}x that")
    if row.get("cpu_phases"):
        faxes = max(1, row["received"])
        print("    gateway CPU by phase (log marks; sampled every 0.5 s): " + "; ".join(
            f"{name.replace('_', ' ')} {seconds:.1f} s at {used / seconds if seconds else 0:.2f} cores, "
            f"{1000 * used / faxes:.1f} ms a fax" for name, (seconds, used) in row["cpu_phases"].items()))
    print(f"    webhook stages from the last page confirmed: to archived and spooled (fax_finished) p50/p99 "
          f"{_ms(row['archived_p50'])}/{_ms(row['archived_p99'])} ms, to the POST received "
          f"{_ms(row['posted_p50'])}/{_ms(row['posted_p99'])} ms")
    if row["gateway_t30_p50"] is not None:
        print(f"    the gateway's own t38gw_t30_response_seconds: p50 <= {row['gateway_t30_p50'] * 1000:.0f} ms, "
              f"p99 <= {row['gateway_t30_p99'] * 1000:.0f} ms (bucket bounds)")
    if row.get("page_write_wait_p50") is not None:
        print(f"    responses that waited for their pages to be on disk (t38gw_page_write_wait_seconds): "
              f"{row['page_write_wait_count']:.0f}, p50 <= {row['page_write_wait_p50'] * 1000:.0f} ms, "
              f"p99 <= {row['page_write_wait_p99'] * 1000:.0f} ms (bucket bounds)")
    if row["metrics_peak"]:
        print(f"    /metrics peaks: {row['metrics_peak']}")
    if row["errors"]:
        print(f"    replayer call errors: {row['errors']}")
    print(f"    work folder {row['workdir']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 300, 500, 700, 1000])
    parser.add_argument("--mode", choices=sorted(MODES), default="both")
    parser.add_argument("--ramp", type=float, default=5.0, help="s over which the N calls start")
    parser.add_argument("--workers", default=None, help='[server] workers ("auto" or a number), if supported')
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                        help="another [limits] setting for the gateway (e.g. max_cpu=0.95); repeatable")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--py-spy", type=Path, dest="py_spy",
                        help="profile the gateway (every thread, not idle) with py-spy into DIR/<capture>-n<N>.txt "
                             "(collapsed stacks)")
    parser.add_argument("--py-spy-gil", action="store_true", dest="py_spy_gil",
                        help="with --py-spy: only the thread holding the GIL (where the Python CPU goes; a thread "
                             "waiting for the GIL, or in C code that let it go, is not counted)")
    args = parser.parse_args()
    # Outside a checkout (e.g. a `git archive` export measured while the checkout is mid-edit)
    # say which commit it was with T38GW_COMMIT.
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or os.environ.get("T38GW_COMMIT", "?")
    print(f"load bench: commit {commit}, {os.cpu_count()} CPUs, captures {MODES[args.mode]}, ramp {args.ramp:g} s; "
          f"gateway and replayer are separate processes", flush=True)
    rows: list[dict] = []
    base = Path(tempfile.mkdtemp(prefix="t38gw-bench-load-"))
    try:
        for count in args.calls:
            for capture in MODES[args.mode]:
                row = one_run(count, capture, args, base)
                rows.append(row)
                print_table([row])
                print_details(row)
                sys.stdout.flush()
                if args.json:
                    args.json.write_text(json.dumps({"commit": commit, "rows": rows}, indent=1))
        print("\nCPU/fax: gateway processes' CPU from the first INVITE until every fax's webhook was posted, over faxes received;"
              "\n  gw util / replayer: CPU over the calls' wall time (100% = one core); RSS/call: (peak - idle) / N;"
              "\n  T30: end of a sender command -> the gateway's first new datagram; hook: MCF -> webhook POST;"
              "\n  MCF seen: calls whose sender received the gateway's MCF (a fax archived `received` whose"
              "\n  sender never saw MCF would be reported failed by a real sender);"
              "\n  box: the whole machine's busy share (shared with other engineers' work).")
        print_table(rows)
    finally:
        if args.keep:
            print(f"work folders kept in {base}")
        else:
            subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
