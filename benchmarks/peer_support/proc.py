"""CPU time and memory of another process, read from /proc (Linux): the one reader lives in
simulators.city.procstat, shared with the city runner."""

from __future__ import annotations

from simulators.city.procstat import cpu_seconds, parse_stat_cpu, peak_rss_mib, thread_cpu_seconds

__all__ = ["cpu_seconds", "parse_stat_cpu", "peak_rss_mib", "thread_cpu_seconds"]
