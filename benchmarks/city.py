"""The city at increasing scale against one gateway: where does it fall behind?

    python -m benchmarks.city [--scale S] [--scenario F] [--duration D]

Runs the scenario (default: the reference city, real report intervals, MQTT uplink to a local
Mosquitto and the platform receiver, no faults) at scale 1, 2, 5, 10, 20, 50, 100 ... up to S,
and prints per scale, measured on the gateway process while the devices report (start-up, the
charge points' boot storm, settle and drain left out):
  readings/s handled (the gateway's reading counter), gateway CPU share of one core
  (utime+stime from /proc/<pid>/stat), peak RSS (VmHWM from /proc/<pid>/status), outbox bytes
  written per reading (write_bytes from /proc/<pid>/io), end-to-end latency p50/p99 (batch
  arrival at the platform receiver minus the window's end: the age of the window's newest
  reading when the platform gets it, so never below `grace`).
It stops at the first scale where the gateway falls behind: readings unaccounted for, p99
latency beyond window + grace + 10 s, or the gateway using more than 90 % of a core. Where the
simulators themselves (one Python process) cannot keep their timetable, it says so: that scale
measures the simulators, not the gateway.

The baseline measured in the same run is scale 1; ratios are per-reading CPU cost against it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.report import peak_rss_mib
from simulators.city.runner import CityRun, RunOptions
from simulators.city.scenario import load_scenario

STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
ROOT = Path(__file__).resolve().parents[1]


def run_scale(path: Path, scale: float, duration: float, workdir: Path, uplink: str | None,
              window: int = 0) -> dict[str, Any]:
    scenario = load_scenario(path, scale=scale)
    city = msgspec.structs.replace(scenario.city, duration=duration, **({"uplink": uplink} if uplink else {}))
    scenario = msgspec.structs.replace(scenario, city=city, faults=[])
    if window:  # short windows so a short run closes several of them while the devices report
        scenario = msgspec.structs.replace(scenario, city=msgspec.structs.replace(city, window=window, grace=2.0))
    options = RunOptions(workdir=workdir / f"scale-{scale:g}", progress=False, settle_timeout=30.0, stop_timeout=180.0)
    return asyncio.run(CityRun(scenario, scale, options).run())


def verdict(report: dict[str, Any]) -> str:
    run, city_window = report["run"], report.get("window", 60)
    steady = run.get("gateway_steady") or {}
    unexplained, sent = report["totals"]["unexplained"], report["totals"]["sent"]
    if unexplained > 0.001 * sent:  # more than one in a thousand: losing, not a stray frame
        return f"behind: {unexplained:,} readings unaccounted for"
    p99 = run["latency_s"]["p99"]
    if p99 is not None and p99 > city_window + 15:
        return f"behind: p99 latency {p99:.1f} s"
    if (steady.get("cpu_share") or 0) > 0.9:
        return "behind: gateway CPU saturated"
    if run["simulator_worst_lag_s"] > 2.0:
        return f"simulators behind their timetable by {run['simulator_worst_lag_s']:.1f} s (simulator-bound)"
    return f"keeps up ({unexplained} unexplained)" if unexplained else "keeps up"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.city", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="highest scale to try (default 1)")
    parser.add_argument("--scales", default="", help="explicit comma-separated scales instead of 1, 2, 5, ... up to --scale")
    parser.add_argument("--scenario", default=str(ROOT / "config/scenarios/reference.toml"))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds the devices report per scale")
    parser.add_argument("--uplink", choices=["file", "mqtt"], help="override the scenario's uplink")
    parser.add_argument("--window", type=int, default=10,
                        help="gateway window (s) for the runs, grace 2 s (default 10; 0 keeps the scenario's)")
    parser.add_argument("--workdir", default="", help="keep each run here (default: a temporary folder)")
    args = parser.parse_args(argv)
    scales = ([float(x) for x in args.scales.split(",")] if args.scales
              else [s for s in STEPS if s <= args.scale] or [args.scale])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="city-bench-"))
    window = args.window or load_scenario(args.scenario).city.window
    signal.signal(signal.SIGTERM, _interrupt)  # clean up simulators, brokers and gateway on kill
    print(f"== city benchmark: {Path(args.scenario).name}, {args.duration:g} s per scale, scales {scales}")
    header = (f"  {'scale':>6} {'sensors':>8} {'CPs':>7} {'readings/s':>11} {'gw CPU':>7} {'peak RSS':>9}"
              f" {'B/reading':>10} {'p50 s':>7} {'p99 s':>7} {'CPU/reading vs x1':>18}  verdict")
    print(header)
    baseline: float | None = None
    for scale in scales:
        try:
            report = run_scale(Path(args.scenario), scale, args.duration, workdir, args.uplink, args.window)
        except KeyboardInterrupt:
            print("  interrupted")
            break
        except Exception as error:  # noqa: BLE001 - the scale that breaks the box is a result too
            print(f"  {scale:>6g} failed to run: {type(error).__name__}: {error}")
            break
        report["window"] = window
        run = report["run"]
        steady = run.get("gateway_steady") or {}
        gp = run["gateway_process"]
        rate = steady.get("readings_per_second") or 0.0
        cpu_per_reading = (steady.get("cpu_seconds") or 0) / steady["readings"] if steady.get("readings") else None
        if baseline is None:
            baseline = cpu_per_reading
        ratio = (cpu_per_reading / baseline) if cpu_per_reading and baseline else None
        lat = run["latency_s"]
        state = verdict(report)
        print(f"  {scale:>6g} {run['climate_sensors']:>8,} {run['charge_points']:>7,} {rate:>11,.1f}"
              f" {(steady.get('cpu_share') or 0) * 100:>6.1f}% {gp['peak_rss_mib']:>7.1f}Mi"
              f" {steady.get('write_bytes_per_reading') or 0:>10,.1f} {lat['p50'] or 0:>7.2f} {lat['p99'] or 0:>7.2f}"
              f" {ratio if ratio is not None else float('nan'):>18.2f}  {state}", flush=True)
        if not state.startswith("keeps up"):
            break
    print(f"  runs kept in {workdir}; peak RSS of this (simulator) process: {peak_rss_mib():.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
