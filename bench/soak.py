"""Soak bench (issue 14): steady T.38 calls for an hour into one ``t38gw serve``.

A fresh ``t38gw serve`` (as bench/load.py starts it: loopback, wide UDPTL range, a
webhook to a receiver in this process, ``[server] workers`` with ``--workers`` when
supported) and bench/replayer.py in its own process keeping ``--concurrent`` calls up (a
new call as soon as one ends; e.g. 80 % of the capacity bench/load.py measured) for
``--minutes``, replaying the recorded SpanDSP sender (``--capture``).

Every ``--every`` s (60) it prints: the gateway's RSS (summed over its processes), open
file descriptors (/proc/<pid>/fd of each), UDP sockets it holds (its fds matched against
/proc/net/udp inodes) and UDPTL ports in use as /metrics says (``t38gw_udptl_ports_in_use``,
when exported), calls started / active / done / failed / refused as the replayer counts
them.  At the end, once every call is over and every fax final, it prints the same figures
against the baseline taken before the first call (what should return there: fds, UDP
sockets, ports in use; RSS is shown with its growth), and the faxes' statuses from the API
with a pixel-by-pixel check of the last ``--check-pages`` received pages.

Asserts nothing.  ``.venv/bin/python bench/soak.py --minutes 1`` is the smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._proc import descendants  # noqa: E402
from bench.load import PAGE_PATH, ProcessTree, all_faxes, read_metrics, workers_supported  # noqa: E402


def open_fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def fd_kinds(pids: list[int], port_names: dict[int, str] | None = None) -> Counter:
    """What the open fds are: "socket", "pipe", "anon_inode:[eventfd]", or a file's folder/name
    with the fax id folders collapsed (which kind grows tells a leak's source)."""
    kinds: Counter = Counter()
    socket_kind: dict[str, str] = {}
    tcp_states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}  # include/net/tcp_states.h
    for table in ("tcp", "tcp6", "udp", "udp6", "unix"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if table == "unix" and len(fields) > 6:
                socket_kind[fields[6]] = "unix"
            elif len(fields) > 9:
                state = tcp_states.get(fields[3], fields[3]) if table.startswith("tcp") else ""
                # Name the TCP peer when it is one we know (the webhook receiver, the API).
                ports = {int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)}
                peer = next((f" ({name})" for port, name in (port_names or {}).items() if port in ports), "")
                socket_kind[fields[9]] = f"{table} {state}{peer}".strip()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:"):
                kinds["socket " + socket_kind.get(target[8:-1], "?")] += 1
            elif target.startswith("pipe:"):
                kinds[target.split(":")[0]] += 1
            elif target.startswith("/"):
                kinds["file " + "/".join(Path(target).parts[-2:]) if "archive" not in target
                      else "file archive/.../" + Path(target).name] += 1
            else:
                kinds[target] += 1
    return kinds


def udp_sockets(pids: list[int]) -> int:
    """UDP sockets the processes hold: their fds' socket inodes found in /proc/net/udp
    (proc(5); the table is the network namespace's, so match by inode)."""
    inodes = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9:
            inodes.add(fields[9])
    held = 0
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held += 1
        except OSError:
            pass
    return held


def snapshot(tree: ProcessTree, metrics_url: str) -> dict:
    pids = descendants(tree.root)
    metrics = read_metrics(metrics_url)
    return {"rss_kib": tree.rss(), "fds": open_fds(pids), "udp_sockets": udp_sockets(pids),
            "ports_in_use": metrics.get("t38gw_udptl_ports_in_use"), "processes": len(pids)}


def _line(elapsed: float, snap: dict, progress: dict | None) -> str:
    ports = f"{snap['ports_in_use']:.0f}" if snap["ports_in_use"] is not None else "-"
    calls = (f"started {progress['started']:>6} active {progress['active']:>4} done {progress['done']:>6} "
             f"failed {progress['failed']:>4} 503 {progress['refused_503']:>4}") if progress else "calls -"
    return (f"{elapsed / 60:6.1f} min  RSS {snap['rss_kib'] / 1024:7.1f} MiB  fds {snap['fds']:>5}  "
            f"UDP sockets {snap['udp_sockets']:>5}  UDPTL ports in use {ports:>5}  {calls}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long new calls are started")
    parser.add_argument("--concurrent", type=int, default=80, help="calls kept up (e.g. 80%% of capacity)")
    parser.add_argument("--capture", default="ecm_mmr", help="ecm_mmr or nonecm_mr")
    parser.add_argument("--every", type=float, default=60.0, help="s between printed lines")
    parser.add_argument("--workers", default=None, help='[server] workers ("auto" or a number), if supported')
    parser.add_argument("--check-pages", type=int, default=50, help="pixel-compare this many received pages")
    parser.add_argument("--settle", type=float, default=30.0, help="s to wait at the end for fds to return")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    from tests.e2e.support import GatewayProcess, WebhookReceiver, tiff_pages
    from tools.record_t38_capture import read_page_png

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or os.environ.get("T38GW_COMMIT", "?")
    workdir = Path(tempfile.mkdtemp(prefix="t38gw-bench-soak-"))
    webhook = WebhookReceiver().start()
    extra = f"\n[limits]\nmax_calls = {max(500, 4 * args.concurrent)}\n"
    if args.workers and workers_supported(workdir):
        extra += f"\n[server]\nworkers = {json.dumps(args.workers) if args.workers == 'auto' else args.workers}\n"
    gateway = GatewayProcess(workdir, webhook_url=webhook.url, udptl_span=max(400, 8 * args.concurrent),
                             extra_config=extra)
    gateway.start()
    assert gateway.proc is not None
    metrics_url = f"{gateway.api}/metrics"
    tree = ProcessTree(gateway.proc.pid)
    replayer = None
    try:
        time.sleep(1.5)
        baseline = snapshot(tree, metrics_url)
        port_names = {webhook.port: "webhook receiver", gateway.http_port: "HTTP API"}
        baseline_kinds = fd_kinds(descendants(tree.root), port_names)
        print(f"soak: commit {commit}, {args.concurrent} calls kept up for {args.minutes:g} min, capture "
              f"{args.capture}; baseline: {_line(0, baseline, None)}", flush=True)
        command = [sys.executable, str(REPO / "bench" / "replayer.py"), "--sip", f"127.0.0.1:{gateway.sip_port}",
                   "--capture", args.capture, "--concurrent", str(args.concurrent), "--minutes", str(args.minutes),
                   "--progress", "5", "--caller-prefix", "8"]
        replayer_log = open(workdir / "replayer.log", "wb")
        replayer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=replayer_log, cwd=REPO)
        latest: dict = {}
        final: dict = {}

        def read_output() -> None:
            assert replayer is not None and replayer.stdout is not None
            for raw in replayer.stdout:
                if raw.startswith(b'{"progress"'):
                    latest["progress"] = json.loads(raw)["progress"]
                elif raw.startswith(b'{"report"'):
                    final["report"] = json.loads(raw)["report"]

        reader = threading.Thread(target=read_output, daemon=True)
        reader.start()
        start = time.monotonic()
        next_line = start + args.every
        bound = start + args.minutes * 60 + 300
        while replayer.poll() is None and time.monotonic() < bound:
            time.sleep(min(1.0, max(0.0, next_line - time.monotonic())))
            if time.monotonic() >= next_line:
                next_line += args.every
                print(_line(time.monotonic() - start, snapshot(tree, metrics_url), latest.get("progress")), flush=True)
        if replayer.poll() is None:
            replayer.kill()
        replayer.wait(30)
        reader.join(30)
        replayer_log.close()
        report = final.get("report")
        if report is None:
            raise RuntimeError(f"no report from the replayer: {(workdir / 'replayer.log').read_text()[-3000:]}")
        calls = report["calls"]
        answered = sum(1 for c in calls if c["status"] == 200)
        # Every fax final in the API, then a moment for the ports and sockets to be released.
        deadline = time.monotonic() + 120
        faxes: list[dict] = []
        while time.monotonic() < deadline:
            faxes = all_faxes(gateway.api)
            if len(faxes) >= answered and not any(f.get("in_progress") for f in faxes):
                break
            time.sleep(1.0)
        # Let idle resources go (trio's idle worker threads exit after 10 s, say) before judging
        # a leak: poll until fds, UDP sockets and ports are back, for at most --settle s.
        settle_until = time.monotonic() + args.settle
        while True:
            end = snapshot(tree, metrics_url)
            back = end["fds"] <= baseline["fds"] and end["udp_sockets"] <= baseline["udp_sockets"]
            if back or time.monotonic() >= settle_until:
                break
            time.sleep(2.0)
        statuses = Counter(f.get("status") for f in faxes)
        page = read_page_png(PAGE_PATH)
        checked = identical = 0
        for fax in [f for f in faxes if f.get("status") == "received"][:args.check_pages]:
            checked += 1
            try:
                archived = tiff_pages(gateway.folder(gateway.meta(fax["id"])) / "fax.tif")
            except Exception:
                continue
            identical += [(b, w, h) for b, w, h, _, _ in archived] == [page]
        errors = Counter(c["error"] for c in calls if c["error"])
        print(f"\nend ({(time.monotonic() - start) / 60:.1f} min): {_line(time.monotonic() - start, end, None)}")
        print(f"baseline:              {_line(0, baseline, None)}")
        for key, label in (("fds", "open fds"), ("udp_sockets", "UDP sockets"), ("ports_in_use", "UDPTL ports in use"),
                           ("processes", "processes")):
            before, after = baseline[key], end[key]
            verdict = "-" if before is None or after is None else ("back to baseline" if after <= before
                                                                   else f"+{after - before:g} above baseline")
            print(f"  {label}: {before} -> {after}: {verdict}")
        if end["fds"] > baseline["fds"]:
            grown = fd_kinds(descendants(tree.root), port_names)
            grown.subtract(baseline_kinds)
            print(f"    fds above baseline by kind: {dict(c for c in grown.most_common(8) if c[1] > 0)}")
        print(f"  RSS: {baseline['rss_kib'] / 1024:.1f} -> {end['rss_kib'] / 1024:.1f} MiB "
              f"({(end['rss_kib'] - baseline['rss_kib']) / 1024:+.1f} MiB)")
        print(f"  calls: {len(calls)} started, {answered} answered, "
              f"{sum(1 for c in calls if c['status'] == 503)} refused 503, "
              f"{sum(1 for c in calls if c['status'] not in (200, 503) or (c['status'] == 200 and c['error']))} failed"
              f"{' ' + str(dict(errors.most_common(3))) if errors else ''}; faxes {len(faxes)} {dict(statuses)}; "
              f"pages checked pixel by pixel {checked}, identical {identical}; webhook POSTs {len(webhook.posts)}")
        print(f"  replayer: {report['loop_cpu']:.1f} s CPU over {report['loop_wall']:.0f} s "
              f"({100 * report['loop_cpu'] / max(report['loop_wall'], 1e-9):.0f}% of a core), "
              f"{report['timer_stalls']} timers >20 ms late")
    finally:
        if replayer is not None and replayer.poll() is None:
            replayer.kill()
            replayer.wait(10)
        gateway.stop()
        webhook.stop()
        if args.keep:
            print(f"work folder kept in {workdir}")
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    main()
