"""t38gw.overload: the admission verdict from measured lag and CPU (issue 14)."""

from __future__ import annotations

import socket
import time

import pytest

from t38gw.overload import (MIN_CALLS_FOR_ESTIMATE, PRIOR_CPU_PER_CALL, SAMPLE_INTERVAL, SLOW_PAGE_WRITE_MEMORY,
                             OverloadMonitor, udp_receive_errors)


def feed(monitor: OverloadMonitor, seconds: float, *, lag: float = 0.0, cpu_rate: float = 0.1, calls: int = 0,
         start: float = 0.0, cpu_start: float = 0.0, lag_every: int = 1) -> tuple[float, float]:
    """Samples every SAMPLE_INTERVAL for ``seconds``: the watcher woke ``lag`` late (every
    ``lag_every``-th wake-up, else on time), the process burnt ``cpu_rate`` cores."""
    now, cpu = start, cpu_start
    for index in range(round(seconds / SAMPLE_INTERVAL)):
        now += SAMPLE_INTERVAL
        cpu += cpu_rate * SAMPLE_INTERVAL
        monitor.sample(now, lag if index % lag_every == 0 else 0.0, cpu, calls)
    return now, cpu


def test_an_idle_process_admits():
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0.85)
    feed(monitor, 5, lag=0.002, cpu_rate=0.01)
    assert monitor.refusal(0) == ""
    assert monitor.cpu_rate == pytest.approx(0.01)


def test_nothing_is_judged_before_the_window_has_filled():
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0.85)
    feed(monitor, 0.5, lag=1.0, cpu_rate=1.0)
    assert monitor.refusal(0) == ""


def test_a_loop_that_is_late_most_of_the_time_refuses():
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0)
    feed(monitor, 3, lag=0.3)
    assert monitor.refusal(5).startswith("the event loop runs 300 ms late")
    assert monitor.max_lag_seen == pytest.approx(0.3)


def test_one_slow_wake_up_is_not_overload():
    # A page write or a garbage collection stalls the loop once: the median ignores it.
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0)
    feed(monitor, 3, lag=0.8, lag_every=10)
    assert monitor.refusal(5) == ""
    assert monitor.max_lag_seen == pytest.approx(0.8)  # but the gauge shows it


def test_cpu_above_the_limit_refuses_and_recovers():
    monitor = OverloadMonitor(max_lag=0, max_cpu=0.85)
    now, cpu = feed(monitor, 3, cpu_rate=0.95)
    assert monitor.refusal(3).startswith("the process uses 95% of a core")
    feed(monitor, 3, cpu_rate=0.2, start=now, cpu_start=cpu)
    assert monitor.refusal(3) == ""


def test_the_learnt_cost_of_a_call_refuses_a_burst_before_the_cpu_is_spent():
    # 100 calls take 40 % of a core: 4 ms per call-second; 213 would need 85 %.
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0.85)
    feed(monitor, 5, cpu_rate=0.4, calls=100)
    assert monitor.cpu_per_call == pytest.approx(0.004, rel=0.01)
    assert monitor.refusal(200) == ""
    refusal = monitor.refusal(250)
    assert refusal.startswith("251 calls at 4.0 ms of CPU per call-second would need 100% of a core")


def test_the_cost_of_a_call_is_not_learnt_from_a_handful():
    # Until enough calls run, a call is taken to cost the prior: a burst of INVITEs at an
    # idle gateway is admitted up to what the prior allows, not without bound.
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0.85)
    feed(monitor, 5, cpu_rate=0.3, calls=MIN_CALLS_FOR_ESTIMATE - 1)
    assert monitor.cpu_per_call == PRIOR_CPU_PER_CALL
    assert monitor.refusal(300) == ""
    assert monitor.refusal(400).startswith("401 calls at 2.5 ms")


def test_a_cheaper_moment_lowers_the_cost_only_slowly():
    # Calls admitted together are cheap at first (SIP, phase B) and dear together later
    # (page ends): the learnt cost follows a rise at once and a fall over many seconds.
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0.85)
    now, cpu = feed(monitor, 5, cpu_rate=0.4, calls=100)
    assert monitor.cpu_per_call == pytest.approx(0.004, rel=0.01)
    feed(monitor, 2, cpu_rate=0.1, calls=100, start=now, cpu_start=cpu)
    assert monitor.cpu_per_call > 0.0033  # 2 s after the load fell to a quarter


def test_zero_turns_each_judgement_off():
    monitor = OverloadMonitor(max_lag=0, max_cpu=0)
    feed(monitor, 3, lag=2.0, cpu_rate=1.0, calls=500)
    assert monitor.refusal(10_000) == ""


def test_kernel_udp_receive_errors_are_read_and_grow_when_a_socket_overflows():
    before = udp_receive_errors()
    assert set(before) == {"InErrors", "RcvbufErrors"}
    # A socket nobody reads, with the smallest receive buffer, overflows for real.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as source:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sink.bind(("127.0.0.1", 0))
        for _ in range(2000):
            source.sendto(b"x" * 200, sink.getsockname())
        deadline = time.monotonic() + 5
        while udp_receive_errors()["RcvbufErrors"] <= before["RcvbufErrors"] and time.monotonic() < deadline:
            time.sleep(0.05)
    after = udp_receive_errors()
    assert after["RcvbufErrors"] > before["RcvbufErrors"]
    assert after["InErrors"] >= after["RcvbufErrors"] - before["RcvbufErrors"] + before["InErrors"]


def test_no_proc_means_no_counters(tmp_path):
    assert udp_receive_errors(tmp_path / "missing") == {}


def test_a_page_write_that_held_our_mcf_past_t4_refuses_new_calls_for_a_while():
    # The calls already answered are being harmed (their senders' T4 runs out) even when
    # CPU and lag look fine: the page ends of calls admitted together come together.
    monitor = OverloadMonitor(max_lag=0.15, max_cpu=0.85)
    now, cpu = feed(monitor, 3, cpu_rate=0.2, calls=50)
    assert monitor.refusal(50) == ""
    monitor.page_write_held(now, 2.0)  # inside T4: no harm
    assert monitor.refusal(50) == ""
    monitor.page_write_held(now, 3.4)
    assert monitor.refusal(50).startswith("a confirmed page waited 3.4 s for the disk before our MCF")
    now, cpu = feed(monitor, SLOW_PAGE_WRITE_MEMORY - 1, cpu_rate=0.2, calls=50, start=now, cpu_start=cpu)
    assert monitor.refusal(50) != ""
    feed(monitor, 2, cpu_rate=0.2, calls=50, start=now, cpu_start=cpu)
    assert monitor.refusal(50) == ""
