"""CPU time, memory and disk writes of another process, read from /proc (Linux, proc(5)).

One reader for the city runner and the benchmarks (benchmarks.peer_support.proc re-exports it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcSample", "cpu_seconds", "parse_stat_cpu", "peak_rss_mib", "rss_mib", "sample", "thread_cpu_seconds",
           "write_bytes"]

_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat_cpu(stat: str, ticks_per_second: int = _TICKS) -> float:
    """utime + stime (fields 14 and 15 of /proc/<pid>/stat) in seconds. The command name (field
    2) may hold spaces and parentheses, so fields are counted after its last ')'."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state), so utime (14) and stime (15) are fields[11] and fields[12]
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def cpu_seconds(pid: int) -> float:
    """CPU seconds of every thread of `pid` so far (children not included)."""
    return parse_stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds so far of each live thread of `pid`, by thread id (the main thread's is pid).
    Threads that already ended are missing here but counted in cpu_seconds()."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = parse_stat_cpu((task / "stat").read_text())
        except (OSError, ValueError):
            continue  # the thread ended between listing and reading
    return out


def _status_mib(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mib(pid: int) -> float:
    """VmHWM of `pid` (its peak resident set so far) in MiB; 0 when unreadable."""
    return _status_mib(pid, "VmHWM:")


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` (its resident set now) in MiB; 0 when unreadable."""
    return _status_mib(pid, "VmRSS:")


def write_bytes(pid: int) -> int:
    """Bytes `pid` caused to be written to storage so far (/proc/<pid>/io write_bytes); 0 when
    unreadable."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class ProcSample:
    """One reading of a process at a monotonic time."""

    at: float
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    rss_mib: float = 0.0
    write_bytes: int = 0


def sample(pid: int, at: float) -> ProcSample:
    """CPU, memory and writes of a live process; zeros once it is gone."""
    try:
        cpu = cpu_seconds(pid)
    except OSError:
        return ProcSample(at)
    return ProcSample(at, cpu, peak_rss_mib(pid), rss_mib(pid), write_bytes(pid))
