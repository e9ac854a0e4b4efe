"""Windows throughput against a bare dict-accumulation loop in the same process.

    python -m benchmarks.windows [--readings N]

N readings from 1,000 devices x 5 gauge metrics, event time advancing over 10 windows, go
through (a) `Aggregator.add` one Reading at a time, (b) `Aggregator.add_many` with tuples, and
(c) the baseline: a loop that keys a dict by (device, metric, window start) and folds count,
min, max, sum and last into a list: the least any windowing must do. Targets (issue): (a) at
least 0.5 of the baseline, (b) at least 1.0; the run exits 1 when one is missed.

A second, fair baseline (d) is printed beside it: the same bare fold, but organised the way the
aggregator is, window start -> {(device, metric): accumulator} with the current window's dict
reused while consecutive readings fall in it (the aggregator's batch path does exactly that),
so the ratio against it shows the cost of everything the aggregator does beyond the fold
(kinds, lateness, future checks, ties broken by the value).
"""

from __future__ import annotations

import argparse
import gc
import random
from typing import Any

from benchmarks.report import interleaved_best, print_ratio
from gateway.model import Reading
from gateway.windows import Aggregator

METRICS = ("temperature", "humidity", "pressure", "co2", "pm2_5")
T0 = 1_767_225_600


def make_rows(n: int, devices: int = 1000) -> list[tuple[str, str, float, float]]:
    rng = random.Random(7)
    names = [f"lora:{i:016x}" for i in range(devices)]
    span = 600.0  # ten 60 s windows
    return [
        (names[i % devices], METRICS[(i // devices) % len(METRICS)], rng.uniform(0, 40), T0 + span * i / n)
        for i in range(n)
    ]


def bare_loop(rows: list[tuple[str, str, float, float]]) -> dict[Any, list[float]]:
    windows: dict[Any, list[float]] = {}
    for device, metric, value, ts in rows:
        key = (device, metric, int(ts // 60) * 60)
        acc = windows.get(key)
        if acc is None:
            windows[key] = [1, value, value, value, value]
        else:
            acc[0] += 1
            if value < acc[1]:
                acc[1] = value
            elif value > acc[2]:
                acc[2] = value
            acc[3] += value
            acc[4] = value
    return windows


def bare_windowed_loop(rows: list[tuple[str, str, float, float]]) -> dict[int, dict[Any, list[float]]]:
    windows: dict[int, dict[Any, list[float]]] = {}
    current_start = current_end = 0.0
    bucket: dict[Any, list[float]] = {}
    for device, metric, value, ts in rows:
        if not current_start <= ts < current_end:
            start = int(ts // 60) * 60
            found = windows.get(start)
            if found is None:
                found = windows[start] = {}
            bucket, current_start, current_end = found, start, start + 60
        key = (device, metric)
        acc = bucket.get(key)
        if acc is None:
            bucket[key] = [1, value, value, value, value]
        else:
            acc[0] += 1
            if value < acc[1]:
                acc[1] = value
            elif value > acc[2]:
                acc[2] = value
            acc[3] += value
            acc[4] = value
    return windows


def per_reading(readings: list[Reading]) -> Aggregator:
    agg = Aggregator(window=60, grace=10, max_lateness=3600, now=T0 + 600)
    add = agg.add
    for reading in readings:
        add(reading)
    return agg


def batch(rows: list[tuple[str, str, float, float]]) -> Aggregator:
    agg = Aggregator(window=60, grace=10, max_lateness=3600, now=T0 + 600)
    agg.add_many(rows)
    return agg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = make_rows(args.readings)
    readings = [Reading(*row) for row in rows]  # drivers build these; not part of the timing
    gc.collect()
    n = len(rows)
    base, fair, single, many = interleaved_best(args.runs, [
        ("bare dict loop (baseline)", n, lambda: bare_loop(rows)),
        ("bare loop, window reused (fair)", n, lambda: bare_windowed_loop(rows)),
        ("Aggregator.add (per reading)", n, lambda: per_reading(readings)),
        ("Aggregator.add_many (batch)", n, lambda: batch(rows)),
    ])
    agg = per_reading(readings)
    assert agg.open_series == len(bare_loop(rows)), "both must build the same windows"
    assert sum(len(b) for b in bare_windowed_loop(rows).values()) == len(bare_loop(rows))
    r1 = print_ratio("windows: per-reading path", single, base, "readings/s")
    r2 = print_ratio("windows: batch path", many, base, "readings/s")
    f1 = single.rate / fair.rate
    f2 = many.rate / fair.rate
    print(f"== against the fair baseline ({fair.rate:,.0f} readings/s): per-reading {f1:.2f}, batch {f2:.2f}")
    print(f"targets: per-reading >= 0.5 (got {r1:.2f}), batch >= 1.0 (got {r2:.2f})")
    if r1 < 0.5 or r2 < 1.0:
        print("verdict: missed")
        raise SystemExit(1)
    print("verdict: met")


if __name__ == "__main__":
    main()
