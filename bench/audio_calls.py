"""Concurrent G.711 fax calls into a real ``t38gw serve``: gateway CPU per audio call-second,
calls one core carries, RSS per call.

For each N: a fresh ``t38gw serve`` subprocess on loopback (tests/e2e/support.py
``GatewayProcess``) with ``[t38] audio_fallback = true``, ``[sip] t38_reinvite_after = -1``
(no re-INVITE to T.38: every call stays on audio), a wide UDPTL/RTP port range and
``[limits] max_calls`` above N.  A SEPARATE process (this script with ``--callers``) then
places N calls from one ``selectors`` loop: each call is ``tests.e2e.audio_farend``'s
raw-SIP UAC (INVITE/ACK/BYE, 488 to any T.38 re-INVITE) with its SpanDSP audio fax
terminal sending ``--pages`` pages as PCMU RTP, 160 octets every 20 ms; the loop ticks
every call on one 20 ms clock (as the gateway's ``_tick_audio`` does), so one thread
carries them all.  Calls start spread over ``--ramp`` seconds.

Measured, for the gateway process only (/proc/<pid>/stat utime+stime, its threads
included): CPU from the first INVITE until the last caller hung up, divided by the sum of
the calls' durations (answer -> hang-up, as each caller saw it); VmRSS before the calls and
its peak (sampled every 0.2 s, and VmHWM).  The callers' process CPU is reported apart
(it competes for the same 2 cores).  Afterwards the API (/v1/faxes, /v1/faxes/{id}) is
asked for every fax: ``received``, ``media`` "g711u", and its archived fax.tif compared
pixel by pixel with what that caller sent.  The gateway log is scanned for error lines
(``audio_tick_failed`` and any level error/critical).

Also: "steady", the gateway's CPU rate (sampled every 0.2 s) while all N calls are in their
media phase, per call - the media path alone, without set-up and archive work; how busy
the whole machine was (/proc/stat), so that load from other processes shows; the callers'
own stalls and, per call, gaps over 60 ms between the gateway's RTP packets (when many
calls see one at the same second and the callers did not stall, the gateway's loop did).

Run: ``.venv/bin/python bench/audio_calls.py`` (``--calls 20 50 100``, ``--pages 2``,
``--ramp 2``, ``--keep`` to keep the work folders).  Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._proc import machine_cpu, proc_cpu, proc_times, status_kib  # noqa: E402

TICK = 0.02


# -- the callers' process ----------------------------------------------------------------
def caller_pages(index: int, pages: int):
    from tests.e2e.test_inbound import source_pages

    return source_pages(1000 + index, pages)


def caller_number(index: int) -> str:
    return f"555{index:05d}"


def run_callers(host: str, port: int, count: int, pages: int, ramp: float, workdir: Path,
                max_seconds: float) -> dict:
    """N audio far ends in one thread.  Returns per-call results and this process's CPU.

    Prints "go" on stdout once every far end is built (pages, TIFFs, sockets): the
    measuring side opens its window there."""
    from tests.e2e.audio_farend import PT_PCMU, AudioCallPlan, AudioFarEnd

    setup_start = time.monotonic()
    calls = []
    for index in range(count):
        plan = AudioCallPlan(pages=caller_pages(index, pages), ecm=True, offer_payload_types=(PT_PCMU,),
                             caller=caller_number(index), seed=1000 + index, max_seconds=max_seconds)
        calls.append(AudioFarEnd((host, port), plan, workdir))
    setup_seconds = time.monotonic() - setup_start
    print("go", flush=True)

    selector = selectors.DefaultSelector()
    for far in calls:
        for sock, kind in ((far.sip, "sip"), (far.rtp, "rtp")):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, (far, kind))

    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    start_unix = time.time()
    start = time.monotonic()
    starts = [start + ramp * index / max(count, 1) for index in range(count)]
    started = [False] * count
    ended_at: list[float | None] = [None] * count
    next_tick = start
    late_ticks = 0  # ticks run more than 10 ms after their time (this loop overloaded)
    stalls: list[tuple[float, float]] = []  # (s since start, lateness) of ticks > 40 ms late: ours
    rtp_gaps: list[tuple[float, float, str]] = []  # > 60 ms between two RTP packets of one call: theirs?
    last_rtp: dict = {}
    sip_errors: list[str] = []
    slow_steps: list[tuple[float, str, float]] = []  # one far end's step > 5 ms: (s, what, ms)
    worst_lateness = 0.0
    deadline = start + ramp + max_seconds
    while time.monotonic() < deadline and not all(ended_at[i] is not None for i in range(count)):
        timeout = max(0.0, min(next_tick - time.monotonic(), 0.02))
        for key, _ in selector.select(timeout):
            far, kind = key.data
            sock = key.fileobj
            while True:
                try:
                    data = sock.recvfrom(65535)[0]  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # e.g. ICMP port unreachable after the gateway closed its port
                if kind == "sip":
                    try:
                        began = time.monotonic()
                        far._on_sip_message(data)
                        took = time.monotonic() - began
                        if took > 0.005:
                            slow_steps.append((round(began - start, 2), "sip", round(took * 1000, 1)))
                    except Exception as exc:  # a message the minimal UAC cannot parse: count it, go on
                        sip_errors.append(f"{type(exc).__name__}: {exc} in {data[:300]!r}")
                else:
                    arrival = time.monotonic()
                    last = last_rtp.get(far)
                    if last is not None and arrival - last > 0.060:
                        rtp_gaps.append((round(last - start, 3), round(arrival - last, 3), far.plan.caller))
                    last_rtp[far] = arrival
                    far._on_rtp(data)
        now = time.monotonic()
        for index, far in enumerate(calls):
            if not started[index] and now >= starts[index]:
                started[index] = True
                far._send_request("INVITE", far.sdp(False))
        if now >= next_tick:
            lateness = now - next_tick
            worst_lateness = max(worst_lateness, lateness)
            if lateness > 0.010:
                late_ticks += 1
            if lateness > 0.040:
                stalls.append((round(next_tick - start, 3), round(lateness, 3)))
        while now >= next_tick:
            next_tick += TICK
            for index, far in enumerate(calls):
                if started[index] and ended_at[index] is None:
                    began = time.monotonic()
                    far._tick_audio()
                    took = time.monotonic() - began
                    if took > 0.005:
                        slow_steps.append((round(began - start, 2), "tick", round(took * 1000, 1)))
            if next_tick < now - 1.0:
                next_tick = now  # far behind: do not race to catch up
        for index, far in enumerate(calls):
            if not started[index] or ended_at[index] is not None:
                continue
            far._retransmit(now)
            fax = far.fax
            result = far.result
            if fax is not None and fax.phase_e_status is not None and result.phase_e_status is None:
                result.phase_e_status = fax.phase_e_status
                if not result.bye_from_gateway and far.bye_cseq is None:
                    far._send_request("BYE")
                    result.bye_sent = True
            if result.bye_from_gateway:
                far.hung_up_at = far.hung_up_at or now
                if fax is None or fax.phase_e_status is not None or now - far.hung_up_at > 5.0:
                    far.finished = True
            if far.finished:
                ended_at[index] = now
                last_rtp.pop(far, None)
    wall = time.monotonic() - start
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)

    out = []
    for index, far in enumerate(calls):
        result = far.result
        fax = far.fax
        if fax is not None:
            result.pages_sent_confirmed = sum(1 for kind, _ in fax.events if kind == "phase_d")
            if result.phase_e_status is None:
                result.phase_e_status = fax.phase_e_status
            fax.close()
        end = ended_at[index] if ended_at[index] is not None else time.monotonic()
        out.append({
            "caller": far.plan.caller,
            "invite_status": result.invite_status,
            "phase_e_status": result.phase_e_status,
            "pages_confirmed": result.pages_sent_confirmed,
            "finished": ended_at[index] is not None,
            "call_seconds": (end - far.answered_at) if far.answered_at is not None else 0.0,
            "ended_offset": (ended_at[index] - start) if ended_at[index] is not None else None,
            "rtp_sent": result.rtp_sent,
            "rtp_received": result.rtp_received,
            "rtp_missing": far.playout.missing,
            "rtp_late": far.playout.late,
            "underruns": far.playout.underruns,
            "error": result.error,
        })
        for sock in (far.sip, far.rtp):
            selector.unregister(sock)
            sock.close()
    return {
        "calls": out,
        "wall": wall,
        "setup_seconds": setup_seconds,
        "cpu": (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime),
        "late_ticks": late_ticks,
        "worst_lateness": worst_lateness,
        "stalls": stalls,
        "slow_steps": slow_steps,
        "start_unix": start_unix,
        "rtp_gaps": rtp_gaps,
        "sip_errors": sip_errors,
    }


# -- the measuring side ------------------------------------------------------------------
class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.cpu_timeline: list[tuple[float, float]] = []  # (monotonic, CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
                self.cpu_timeline.append((time.monotonic(), proc_cpu(self.pid)[0]))
            except OSError:
                return

    def cpu_rate(self, begin: float, end: float) -> float | None:
        """The process's CPU seconds per second between two monotonic times (sampled)."""
        inside = [(t, cpu) for t, cpu in self.cpu_timeline if begin <= t <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1.0:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)


def all_faxes(gateway) -> list[dict]:
    """Every fax in GET /v1/faxes, following next_cursor (a page holds at most the default limit)."""
    import httpx

    faxes: list[dict] = []
    cursor = None
    for _ in range(1000):
        params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(f"{gateway.api}/v1/faxes", params=params, timeout=10).json()
        faxes += page["faxes"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return faxes


def wait_for_final_metas(gateway, count: int, timeout: float) -> list[dict]:
    """Poll (bounded) until ``count`` faxes exist and none is in progress; their metas."""
    deadline = time.monotonic() + timeout
    final: dict[str, dict] = {}
    metas: list[dict] = []
    while True:
        metas = []
        for fax in all_faxes(gateway):
            meta = final.get(fax["id"]) or gateway.meta(fax["id"])
            if not meta.get("in_progress"):
                final[fax["id"]] = meta
            metas.append(meta)
        if (len(metas) >= count and len(final) == len(metas)) or time.monotonic() > deadline:
            return metas
        time.sleep(0.5)


def log_problems(gateway) -> Counter:
    problems: Counter = Counter()
    for event in gateway.log_events():
        level = str(event.get("level", "")).lower()
        name = str(event.get("event", ""))
        if name == "audio_tick_failed" or level in ("error", "critical", "exception"):
            problems[f"{level}:{name}"] += 1
        elif level == "warning":
            problems[f"warning:{name}"] += 1
    for line in gateway.log_text().splitlines():
        if line and not line.startswith("{") and ("Traceback" in line or "Error" in line):
            problems[f"raw:{line.strip()[:100]}"] += 1
    return problems


def one_run(count: int, args, base: Path) -> dict:
    from tests.e2e.support import GatewayProcess, tiff_pages

    workdir = base / f"n{count}"
    workdir.mkdir()
    gateway = GatewayProcess(
        workdir, reinvite_after=-1, t38_extra="audio_fallback = true", udptl_span=max(400, 8 * count),
        extra_config=f"\n[limits]\nmax_calls = {max(500, 2 * count)}\n")
    gateway.start()
    assert gateway.proc is not None
    pid = gateway.proc.pid
    try:
        time.sleep(1.0)  # let start-up work settle
        idle_cpu_0, _ = proc_cpu(pid)
        time.sleep(2.0)
        idle_cpu_1, _ = proc_cpu(pid)
        idle_rate = (idle_cpu_1 - idle_cpu_0) / 2.0
        rss_idle = status_kib(pid, "VmRSS")
        callers_dir = workdir / "callers"
        callers_dir.mkdir()
        command = [sys.executable, __file__, "--callers", str(count), "--sip-port", str(gateway.sip_port),
                   "--pages", str(args.pages), "--ramp", str(args.ramp), "--max-seconds", str(args.max_seconds),
                   "--workdir", str(callers_dir)]
        with RssSampler(pid) as sampler:
            callers_log = open(workdir / "callers.log", "wb")
            callers = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=callers_log, cwd=REPO)
            # The callers build their pages and TIFFs first; the window opens at their "go".
            assert callers.stdout is not None
            go = callers.stdout.readline()
            cpu_0, children_0 = proc_cpu(pid)
            _, stime_0, _ = proc_times(pid)
            machine_0 = machine_cpu()
            wall_0 = time.monotonic()
            if go.strip() != b"go":
                callers.wait(30)
                raise RuntimeError(f"callers did not start: {go!r} {(workdir / 'callers.log').read_text()[-3000:]}")
            output, _ = callers.communicate(timeout=args.ramp + args.max_seconds + 120)
            callers_log.close()
            cpu_1, _ = proc_cpu(pid)
            _, stime_1, _ = proc_times(pid)
            machine_1 = machine_cpu()
            wall_calls = time.monotonic() - wall_0
            if callers.returncode != 0:
                raise RuntimeError(f"callers exited {callers.returncode}: {(workdir / 'callers.log').read_text()[-3000:]}")
            report = json.loads(output)
            # Steady state: every call answered and past its start-up (ramp + 6 s), none ended yet
            # (the earliest hang-up, as the callers saw it): only the media path runs then.
            first_end = min((call["ended_offset"] for call in report["calls"] if call["ended_offset"] is not None),
                            default=wall_calls)
            steady_window = (wall_0 + args.ramp + 6.0, wall_0 + first_end - 1.0)
            steady_rate = sampler.cpu_rate(*steady_window)
            # The faxes are written to the archive as the calls end; wait until all are final.
            metas = wait_for_final_metas(gateway, count, timeout=60)
            cpu_2, children_2 = proc_cpu(pid)
        rss_peak = max(sampler.peak, status_kib(pid, "VmRSS"))
        rss_hwm = status_kib(pid, "VmHWM")

        expected = {caller_number(i): caller_pages(i, args.pages) for i in range(count)}
        received = identical = 0
        statuses: Counter = Counter()
        media: Counter = Counter()
        gateway_rtp: Counter = Counter()
        reasons: Counter = Counter()
        with_bad_rows = 0  # "received" (pages confirmed) yet a page has bad rows
        for meta in metas:
            statuses[meta.get("status")] += 1
            media[meta.get("media")] += 1
            for key, value in (meta.get("rtp") or {}).items():
                if isinstance(value, (int, float)):
                    gateway_rtp[key] += value
            if meta.get("status") != "received":
                reasons[str(meta.get("reason"))[:80]] += 1
            if meta.get("status") != "received" or meta.get("media") != "g711u":
                continue
            if any(page.get("bad_rows") for page in meta.get("pages", [])):
                with_bad_rows += 1
            received += 1
            pages = expected.get(meta.get("sip", {}).get("caller"))
            try:
                archived = tiff_pages(gateway.folder(meta) / "fax.tif")
            except Exception:
                continue
            if pages is not None and [(b, w, h) for b, w, h, _, _ in archived] == list(pages):
                identical += 1
        calls = report["calls"]
        call_seconds = sum(call["call_seconds"] for call in calls)
        caller_ok = sum(1 for call in calls if call["phase_e_status"] == 0 and call["pages_confirmed"] == args.pages)
        return {
            "n": count, "received": received, "identical": identical, "faxes": len(metas),
            "statuses": dict(statuses), "reasons": dict(reasons), "with_bad_rows": with_bad_rows,
            "start_unix": report["start_unix"], "media": dict(media), "caller_ok": caller_ok,
            "call_seconds": call_seconds, "mean_call": call_seconds / max(len(calls), 1),
            "wall_calls": wall_calls, "gw_cpu_calls": cpu_1 - cpu_0, "gw_cpu_total": cpu_2 - cpu_0,
            "gw_stime_calls": stime_1 - stime_0,
            "steady_rate": steady_rate, "steady_seconds": steady_window[1] - steady_window[0],
            "machine_busy": machine_1[0] - machine_0[0], "machine_total": machine_1[1] - machine_0[1],
            "gw_children_cpu": children_2 - children_0, "idle_rate": idle_rate,
            "rss_idle": rss_idle, "rss_peak": rss_peak, "rss_hwm": rss_hwm,
            "callers_cpu": report["cpu"], "callers_wall": report["wall"], "callers_setup": report["setup_seconds"],
            "late_ticks": report["late_ticks"], "worst_lateness": report["worst_lateness"],
            "caller_rtp": {k: sum(call[k] for call in calls) for k in ("rtp_sent", "rtp_received", "rtp_missing",
                                                                       "rtp_late", "underruns")},
            "gateway_rtp": dict(gateway_rtp), "problems": log_problems(gateway),
            "invite_statuses": dict(Counter(call["invite_status"] for call in calls)),
            "errors": [call["error"] for call in calls if call["error"]][:5],
            "stalls": report["stalls"], "slow_steps": report["slow_steps"], "rtp_gaps": report["rtp_gaps"], "sip_errors": report["sip_errors"],
            "workdir": str(workdir),
        }
    finally:
        gateway.stop()


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'N':>4} {'recv/ident':>10} {'call s':>7} {'wall s':>7} {'gw CPU s':>9} {'CPU/call-s':>11} "
          f"{'+archive':>9} {'steady':>8} {'calls/core':>10} {'RSS idle':>9} {'RSS peak':>9} {'RSS/call':>9} "
          f"{'callers CPU':>11} {'callers %':>9}")
    for row in rows:
        per_second = row["gw_cpu_calls"] / row["call_seconds"] if row["call_seconds"] else float("nan")
        with_archive = row["gw_cpu_total"] / row["call_seconds"] if row["call_seconds"] else float("nan")
        per_call = (row["rss_peak"] - row["rss_idle"]) / row["n"]
        steady = row["steady_rate"] / row["n"] if row["steady_rate"] is not None else None
        steady_text = f"{steady * 1000:6.2f}ms" if steady is not None else f"{'-':>8}"
        print(f"{row['n']:>4} {row['received']:>4}/{row['identical']:<5} {row['call_seconds']:7.0f} "
              f"{row['wall_calls']:7.1f} {row['gw_cpu_calls']:9.2f} {per_second * 1000:9.2f}ms "
              f"{with_archive * 1000:7.2f}ms {steady_text} {1 / per_second if per_second else 0:10.0f} "
              f"{row['rss_idle'] / 1024:7.1f}MB {row['rss_peak'] / 1024:7.1f}MB {per_call:7.0f}KB "
              f"{row['callers_cpu']:10.1f}s {100 * row['callers_cpu'] / row['callers_wall']:8.0f}%")


def print_details(row: dict) -> None:
    if row["steady_rate"] is not None:
        print(f"  N={row['n']}: steady state ({row['steady_seconds']:.0f} s with all {row['n']} calls in the media "
              f"phase): gateway {row['steady_rate'] * 100:.0f}% of a core = {row['steady_rate'] / row['n'] * 1000:.2f} ms"
              f" per call-second -> ~{row['n'] / row['steady_rate']:.0f} calls per core")
    print(f"  N={row['n']}: faxes {row['faxes']} statuses {row['statuses']} media {row['media']}; callers saw "
          f"INVITE {row['invite_statuses']}, {row['caller_ok']} sent all pages OK; mean call {row['mean_call']:.1f} s; "
          f"gateway idle {row['idle_rate'] * 1000:.1f} ms CPU/s, children CPU {row['gw_children_cpu']:.2f} s, "
          f"VmHWM {row['rss_hwm'] / 1024:.1f} MB; gateway CPU busy {100 * row['gw_cpu_calls'] / row['wall_calls']:.0f}% "
          f"of a core during the calls, {100 * row['gw_stime_calls'] / max(row['gw_cpu_calls'], 1e-9):.0f}% of it "
          f"in the kernel (stime: the sockets; on loopback a sendto also runs the receiver's side)")
    others = row["machine_busy"] - row["gw_cpu_calls"] - row["callers_cpu"]
    print(f"    machine: {100 * row['machine_busy'] / max(row['machine_total'], 1e-9):.0f}% of all "
          f"{os.cpu_count()} cores busy during the calls; other processes used {others / row['wall_calls']:.2f} "
          f"core(s) on average (anything well above 0 makes these real-time figures pessimistic)")
    if row["reasons"] or row["with_bad_rows"]:
        print(f"    not received: {row['reasons']}; received with bad rows (ECM, confirmed): {row['with_bad_rows']}")
    first_invite = time.strftime("%H:%M:%S", time.gmtime(row["start_unix"]))
    print(f"    first INVITE {first_invite} UTC, log in {row['workdir']}; callers loop: {row['late_ticks']} ticks >10 ms late, worst {row['worst_lateness'] * 1000:.0f} ms; "
          f"caller RTP {row['caller_rtp']}; gateway RTP (meta sums) {row['gateway_rtp']}")
    if row["problems"]:
        print(f"    gateway log: {dict(row['problems'].most_common(12))}")
    else:
        print("    gateway log: no errors, no warnings")
    if row["stalls"]:
        print(f"    callers' own stalls (tick >40 ms late, at s after the first INVITE: lateness): "
              f"{', '.join(f'{at:.1f}:{late * 1000:.0f}ms' for at, late in row['stalls'][:15])}")
    if row["slow_steps"]:
        steps = row["slow_steps"]
        print(f"    callers' far-end steps >5 ms: {len(steps)} (tick: {sum(1 for _, w, _ in steps if w == 'tick')}, "
              f"sip: {sum(1 for _, w, _ in steps if w == 'sip')}), worst {max(ms for _, _, ms in steps):.0f} ms, "
              f"by second: {dict(sorted(Counter(round(at) for at, _, _ in steps).items())[:12])}")
    if row["rtp_gaps"]:
        gaps = row["rtp_gaps"]
        by_time = Counter(round(at) for at, _, _ in gaps)
        print(f"    gateway RTP gaps >60 ms seen by callers: {len(gaps)} in {len({c for _, _, c in gaps})} calls, "
              f"worst {max(g for _, g, _ in gaps) * 1000:.0f} ms; by second after the first INVITE: "
              f"{dict(sorted(by_time.items())[:20])}")
    if row["sip_errors"]:
        # Loopback is shared: a test spraying junk at random ports (tests/e2e/test_inbound.py
        # spray_garbage) can hit a caller's socket; such datagrams land here, not in a fax.
        print(f"    SIP messages the callers could not handle (possibly junk from another process on loopback): "
              f"{len(row['sip_errors'])}, first: {row['sip_errors'][0]}")
    if row["errors"]:
        print(f"    caller errors: {row['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[20, 50, 100], help="N values, one run each")
    parser.add_argument("--pages", type=int, default=2, help="pages per fax (1728x300, chart + random)")
    parser.add_argument("--ramp", type=float, default=2.0, help="s over which the N calls start")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="bound on one call")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    # The callers' process (started by the bench itself).
    parser.add_argument("--callers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sip-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.callers is not None:
        report = run_callers("127.0.0.1", args.sip_port, args.callers, args.pages, args.ramp, args.workdir,
                             args.max_seconds)
        print(json.dumps(report), flush=True)
        return

    print(f"{args.pages} page(s) of 1728x300 per fax, PCMU, ECM, calls started over {args.ramp:g} s; "
          f"{os.cpu_count()} CPUs; gateway and callers are separate processes")
    rows = []
    base = Path(tempfile.mkdtemp(prefix="t38gw-bench-audio-calls-"))
    try:
        for count in args.calls:
            row = one_run(count, args, base)
            rows.append(row)
            print_table([row])
            print_details(row)
            sys.stdout.flush()
        print("\nCPU/call-s: gateway CPU (utime+stime, all its threads) from the first INVITE to the last hang-up,"
              "\n  over the sum of call durations (answer -> hang-up); +archive adds what it spent until every fax"
              "\n  was final in the API (documents, meta); calls/core = 1 / CPU per call-second;"
              "\n  steady = the gateway's CPU rate while all N calls were in their media phase (from ramp + 6 s"
              "\n  to 1 s before the first hang-up), per call; RSS/call = (peak VmRSS - idle VmRSS) / N.")
        print_table(rows)
        for row in rows:
            print_details(row)
    finally:
        if args.keep:
            print(f"work folders kept in {base}")
        else:
            subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
