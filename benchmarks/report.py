"""Shared benchmark output: a figure, the baseline measured in the same run, their ratio,
CPU seconds and peak RSS. Absolute times on shared machines are noise; ratios are the result."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Measurement:
    name: str
    count: int
    wall_seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.wall_seconds if self.wall_seconds > 0 else float("inf")


def measure(name: str, count: int, work: Callable[[], object]) -> Measurement:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    work()
    return Measurement(name, count, time.perf_counter() - wall0, time.process_time() - cpu0)


def best_of(runs: int, name: str, count: int, work: Callable[[], object]) -> Measurement:
    """The fastest of several runs, so a noisy neighbour does not decide the ratio."""
    return min((measure(name, count, work) for _ in range(runs)), key=lambda m: m.wall_seconds)


def interleaved_best(runs: int, jobs: list[tuple[str, int, Callable[[], object]]]) -> list[Measurement]:
    """Best of `runs` for each job, running the jobs in turn within every round, so a slow
    stretch of a shared machine hits subject and baseline alike instead of skewing the ratio."""
    best: list[Measurement | None] = [None] * len(jobs)
    for _ in range(runs):
        for i, (name, count, work) in enumerate(jobs):
            m = measure(name, count, work)
            current = best[i]
            if current is None or m.wall_seconds < current.wall_seconds:
                best[i] = m
    return [m for m in best if m is not None]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_ratio(title: str, subject: Measurement, baseline: Measurement, unit: str) -> float:
    ratio = subject.rate / baseline.rate if baseline.rate else float("inf")
    print(f"== {title}")
    for m in (subject, baseline):
        print(f"  {m.name:<34} {m.rate:>14,.0f} {unit}  ({m.count:,} in {m.wall_seconds:.3f} s wall,"
              f" {m.cpu_seconds:.3f} s CPU)")
    print(f"  ratio {subject.name} / {baseline.name}: {ratio:.2f}")
    print(f"  peak RSS of this process: {peak_rss_mib():.1f} MiB")
    return ratio
