"""Durable throughput and SD-card bytes per reading with the demo window settings.

    python -m benchmarks.outbox [--readings N]

Simulated time (so it runs in seconds): N readings from 500 series arrive evenly over event
time; every `commit_interval` the tick closes due windows and commits them to a real SQLite
outbox on disk, with a checkpoint of dirty open windows every `checkpoint` seconds, exactly
as the runtime does. Bytes are taken from /proc/self/io (`write_bytes`: what reached the block
layer; `wchar`: what went through write(2)). Baseline in the same run: the same readings stored
the naive way, one INSERT and one commit each, with the same journal settings.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from benchmarks.report import Measurement, peak_rss_mib
from gateway.model import Reading
from gateway.outbox import Commit, Outbox, encode_checkpoint
from gateway.windows import Aggregator

T0 = 1_767_225_600
METRICS = ("temperature", "humidity", "co2", "pm2_5", "battery")


def io_counters() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = int(value)
    return out


def run_gateway(tmp: Path, n: int, window: int, grace: float, checkpoint: float, commit_interval: float,
                rate: float) -> tuple[Measurement, dict[str, int], int]:
    outbox = Outbox(tmp / "outbox.sqlite", gateway_id="bench", uplinks=["u"], window=window,
                    max_lateness=60, max_bytes=1 << 30, batch_max_records=500)
    outbox.open()
    agg = Aggregator(window=window, grace=grace, max_lateness=60, now=T0)
    series = [(f"lora:{i:016x}", METRICS[i % len(METRICS)]) for i in range(500)]
    io0, cpu0, wall0 = io_counters(), time.process_time(), time.perf_counter()
    next_tick, next_checkpoint = T0 + commit_interval, T0 + checkpoint
    for i in range(n):
        ts = T0 + i / rate
        while ts >= next_tick:
            commit = Commit(now=next_tick, close=agg.close_due(next_tick))
            commit.carry = agg.carry_changes()
            if next_tick >= next_checkpoint:
                row = encode_checkpoint(agg.dirty_open())
                if row is not None:
                    commit.checkpoints.append(row)
                next_checkpoint += checkpoint
            outbox.commit(commit)
            next_tick += commit_interval
        device, metric = series[i % len(series)]
        agg.add(Reading(device, metric, 20.0 + (i % 7), ts))
    outbox.commit(Commit(now=next_tick, close=agg.flush_all()))
    outbox.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    io1 = io_counters()
    size = sum(p.stat().st_size for p in tmp.glob("outbox.sqlite*"))
    return Measurement("gateway outbox (grouped commits)", n, wall, cpu), {k: io1[k] - io0[k] for k in io1}, size


def run_naive(tmp: Path, n: int) -> tuple[Measurement, dict[str, int]]:
    db = sqlite3.connect(tmp / "naive.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE r (device TEXT, metric TEXT, value REAL, ts REAL)")
    io0, cpu0, wall0 = io_counters(), time.process_time(), time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO r VALUES (?, ?, ?, ?)", (f"lora:{i % 500:016x}", "temperature", 20.0, T0 + i))
        db.execute("COMMIT")
    db.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    io1 = io_counters()
    return Measurement("naive: one commit per reading", n, wall, cpu), {k: io1[k] - io0[k] for k in io1}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=100.0, help="readings per second of event time")
    args = parser.parse_args()
    # demo settings (config/demo.toml): 5 s windows, 1 s grace, checkpoint 2 s, commit 0.5 s
    with tempfile.TemporaryDirectory() as tmp:
        ours, io_ours, size = run_gateway(Path(tmp), args.readings, 5, 1.0, 2.0, 0.5, args.rate)
        naive_n = min(args.readings, 20_000)
        naive, io_naive = run_naive(Path(tmp), naive_n)
    print("== outbox: durable readings/s and bytes written per reading (demo window settings)")
    for m, io in ((ours, io_ours), (naive, io_naive)):
        print(f"  {m.name:<36} {m.rate:>12,.0f} readings/s  {m.cpu_seconds:.2f} s CPU  "
              f"write_bytes/reading {io['write_bytes'] / m.count:>8.1f}  wchar/reading {io['wchar'] / m.count:>8.1f}")
    print(f"  ratio readings/s gateway / naive: {ours.rate / naive.rate:.1f}")
    wb_ratio = (io_naive['wchar'] / naive.count) / max(1e-9, io_ours['wchar'] / ours.count)
    print(f"  ratio bytes per reading naive / gateway (wchar): {wb_ratio:.1f}")
    print(f"  database files at the end: {size / 1024:.0f} KiB; peak RSS {peak_rss_mib():.1f} MiB")


if __name__ == "__main__":
    main()
