"""Can this process carry one more call?  Admission judged by measurement (issue 14).

A fax gateway that answers more calls than its event loop can serve damages all of them:
datagrams queue in the kernel while the loop is busy, the receive buffers overflow, the
kernel drops them and pages arrive short or the T.30 timers run out.  The sender's fax
machine retries a 503 later, so refusing is the safe side: a new INVITE gets 503 with
Retry-After when

- the **event loop lags**: the 75th percentile of how late a fixed 100 ms sleep woke,
  over the last 2 s, is above ``[limits] max_event_loop_lag`` (one slow page write or
  garbage collection is not overload, a loop that is late a quarter of the time is);
- the process uses more than ``[limits] max_cpu`` of one core over the last 2 s (one
  trio process runs on one core, whatever the machine has); or
- a confirmed page waited more than ``SLOW_PAGE_WRITE_SECONDS`` for the disk before our
  MCF could go (``page_write_held``) in the last ``SLOW_PAGE_WRITE_MEMORY`` seconds: the
  calls already answered are being harmed (their senders' T4 runs out), whatever the
  CPU and lag say - the page ends of calls admitted together come together; or
- one more call would take it there: a call is taken to cost ``PRIOR_CPU_PER_CALL`` of
  CPU per second until its cost is learnt while at least ``MIN_CALLS_FOR_ESTIMATE``
  calls run (CPU rate / calls: it follows a rise at once and a fall slowly, because calls
  admitted together reach their costly moments - page ends - together later), so a
  burst of INVITEs arriving while the load is still low is not all admitted.

Sans-IO: the gateway's watcher task feeds ``sample`` (the clock, the lag it measured,
the process's CPU seconds, the calls in progress); admission asks ``refusal``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MIN_CALLS_FOR_ESTIMATE", "PRIOR_CPU_PER_CALL", "SAMPLE_INTERVAL", "SLOW_PAGE_WRITE_MEMORY",
           "SLOW_PAGE_WRITE_SECONDS", "WINDOW", "OverloadMonitor", "udp_receive_errors"]

SAMPLE_INTERVAL = 0.1  # seconds between the watcher's wake-ups (its lateness is the lag)
WINDOW = 2.0  # seconds of samples judged together
MIN_CALLS_FOR_ESTIMATE = 10  # fewer calls tell too little about what one costs
# bench/load.py on this 2-core box: 0.06-0.09 s of CPU per 1-page fax of ~34 s.
PRIOR_CPU_PER_CALL = 0.0025
RISE_WEIGHT = 0.2  # per sample: a dearer call is believed within half a second
FALL_WEIGHT = 0.01  # a cheaper one over ~10 s (the cheap start of calls is not their cost)
LAG_QUANTILE = 0.75
# T.30 gives the sender T4 = 3 s for our response; a page write that held the MCF longer
# than this means answered calls are already waiting on the disk (t38gw.session).
SLOW_PAGE_WRITE_SECONDS = 2.5
SLOW_PAGE_WRITE_MEMORY = 10.0  # seconds new calls are refused after one


@dataclass
class OverloadMonitor:
    max_lag: float  # seconds; 0: lag is not judged
    max_cpu: float  # share of one core; 0: CPU is not judged
    window: float = WINDOW
    _samples: deque[tuple[float, float, float, int]] = field(default_factory=deque)  # (now, lag, cpu, calls)
    cpu_per_call: float = PRIOR_CPU_PER_CALL  # CPU seconds per call-second (learnt as calls run)
    _slow_write: tuple[float, float] | None = None  # (when, seconds) of the last slow page write

    def page_write_held(self, now: float, seconds: float) -> None:
        """A confirmed page took ``seconds`` to reach the disk, our MCF waiting for it."""
        if seconds > SLOW_PAGE_WRITE_SECONDS:
            self._slow_write = (now, seconds)

    def sample(self, now: float, lag: float, cpu_seconds: float, calls: int) -> None:
        """One watcher wake-up: ``lag`` seconds late, the process's CPU time so far,
        the calls in progress."""
        samples = self._samples
        samples.append((now, max(0.0, lag), cpu_seconds, calls))
        while samples and samples[0][0] < now - self.window:
            samples.popleft()
        if calls >= MIN_CALLS_FOR_ESTIMATE and self.window_full:
            per_call = self.cpu_rate / calls
            weight = RISE_WEIGHT if per_call > self.cpu_per_call else FALL_WEIGHT
            self.cpu_per_call += weight * (per_call - self.cpu_per_call)

    @property
    def window_full(self) -> bool:
        samples = self._samples
        return len(samples) >= 2 and samples[-1][0] - samples[0][0] >= self.window * 0.75

    @property
    def cpu_rate(self) -> float:
        """The process's CPU over the window, in cores (1.0 = one core busy)."""
        samples = self._samples
        if len(samples) < 2:
            return 0.0
        elapsed = samples[-1][0] - samples[0][0]
        return (samples[-1][2] - samples[0][2]) / elapsed if elapsed > 0 else 0.0

    @property
    def judged_lag(self) -> float:
        """The lag admission judges: its 75th percentile over the window."""
        if not self._samples:
            return 0.0
        lags = sorted(s[1] for s in self._samples)
        return lags[min(len(lags) - 1, int(len(lags) * LAG_QUANTILE))]

    @property
    def max_lag_seen(self) -> float:
        """The worst lag in the window (the ``t38gw_event_loop_lag_seconds`` gauge)."""
        return max((s[1] for s in self._samples), default=0.0)

    def refusal(self, calls: int) -> str:
        """Why one more call (beyond ``calls`` in progress) cannot be taken, or ""."""
        if self._slow_write is not None and self._samples:
            when, seconds = self._slow_write
            if self._samples[-1][0] - when < SLOW_PAGE_WRITE_MEMORY:
                return (f"a confirmed page waited {seconds:.1f} s for the disk before our MCF "
                        f"(over {SLOW_PAGE_WRITE_SECONDS:g} s, {self._samples[-1][0] - when:.0f} s ago)")
        if not self.window_full:
            return ""
        if self.max_lag and (lag := self.judged_lag) > self.max_lag:
            return (f"the event loop runs {lag * 1000:.0f} ms late ({LAG_QUANTILE:.0%} of the time over {self.window:g} s; "
                    f"limits.max_event_loop_lag {self.max_lag * 1000:.0f} ms)")
        if not self.max_cpu:
            return ""
        rate = self.cpu_rate
        if rate > self.max_cpu:
            return f"the process uses {rate:.0%} of a core (limits.max_cpu {self.max_cpu:.0%})"
        needed = (calls + 1) * self.cpu_per_call
        if self.cpu_per_call and needed > self.max_cpu:
            return (f"{calls + 1} calls at {self.cpu_per_call * 1000:.1f} ms of CPU per call-second would need "
                    f"{needed:.0%} of a core (limits.max_cpu {self.max_cpu:.0%})")
        return ""


def udp_receive_errors(snmp: Path = Path("/proc/net/snmp")) -> dict[str, int]:
    """The kernel's UDP receive error counters (``InErrors``, ``RcvbufErrors``: datagrams
    dropped, most often because a socket's receive buffer was full), host-wide for the
    network namespace; {} where there is no /proc (not Linux)."""
    try:
        lines = [line.split() for line in snmp.read_text().splitlines() if line.startswith("Udp:")]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    values = dict(zip(lines[0][1:], lines[1][1:], strict=False))
    return {name: int(values[name]) for name in ("InErrors", "RcvbufErrors") if name in values}
