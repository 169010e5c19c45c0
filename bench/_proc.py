"""Process accounting from /proc (proc(5)) for the benches that measure a real gateway:
bench/load.py, bench/soak.py and bench/audio_calls.py.  Linux only."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int, tid: int | None = None) -> list[str]:
    """/proc/<pid>/stat (or a thread's, /proc/<pid>/task/<tid>/stat) after the command
    name: [0] is field 3 (state), [1] field 4 (ppid)..."""
    with open(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def proc_stat(pid: int) -> tuple[int, float, float]:
    """(ppid, utime+stime, reaped children's cutime+cstime) in seconds, from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    # proc(5): after the ")" field 3 is state, 4 ppid; utime, stime, cutime, cstime are 14-17.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, (int(fields[13]) + int(fields[14])) / CLK_TCK


def proc_times(pid: int) -> tuple[float, float, float]:
    """(utime, stime, reaped children's cutime+cstime) in seconds, from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    utime, stime, cutime, cstime = (int(fields[i]) for i in range(11, 15))
    return utime / CLK_TCK, stime / CLK_TCK, (cutime + cstime) / CLK_TCK


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's) in seconds."""
    utime, stime, children = proc_times(pid)
    return utime + stime, children


def thread_cpu(pid: int, tid: int) -> float:
    """utime+stime in seconds of one thread (``tid``) of ``pid``: the main thread is ``tid == pid``."""
    fields = _stat_fields(pid, tid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = proc_stat(int(entry))[0]
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def status_kib(pid: int, key: str) -> int:
    """A kiB field of /proc/<pid>/status (VmRSS, VmHWM...); 0 when it or the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat's "cpu" line."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    # proc(5): user nice system idle iowait irq softirq steal ...; idle + iowait are not busy.
    total = sum(values[:8])
    return (total - values[3] - values[4]) / CLK_TCK, total / CLK_TCK


def udp_errors() -> dict[str, int]:
    """The kernel's Udp InErrors and RcvbufErrors (proc(5) /proc/net/snmp; all sockets)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    table = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))
    return {"InErrors": table.get("InErrors", 0), "RcvbufErrors": table.get("RcvbufErrors", 0)}
