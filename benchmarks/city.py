"""The city at increasing scale against one gateway: where does it fall behind?

    python -m benchmarks.city [--scale S | --scales 1,10,20] [--window 60] [--json FILE]

Runs the scenario (default: the reference city, MQTT uplink to a local Mosquitto and the platform
receiver, no faults) at scale 1, 2, 5, 10, 20, 50, ... up to S. Each scale reports for three
charge-point intervals (180 s on the reference city), and no device's interval is longer than
the charge points' (`--max-interval`, default that interval: the reference LoRaWAN sensors' 300 s
becomes 60 s), so every device reports at least three times. Per scale it prints:

- readings/s covered at the platform against the readings/s the scenario should produce (the
  devices' nominal rates; the charge points' readings per step as measured in the run);
- gateway CPU share of one core while the devices report (utime+stime, /proc/<pid>/stat), peak
  RSS (ru_maxrss), end-to-end latency p99 (batch arrival at the platform minus window end);
- issue 11's product figures, per reading covered at the platform: uplink bytes (MQTT payloads of
  batches and events as the platform receiver got them), SD bytes (the gateway process's
  write_bytes over its whole life from rusage, ru_oublock x 512, which is /proc/<pid>/io
  write_bytes; its log goes through a pipe to this process, so only its state folder counts),
  window records received (distinct batches), gateway CPU seconds per 1,000 readings (whole life:
  start-up, boot storm, run, drain).

The verdict of a scale fails on any unexplained reading (negative or positive), on a simulator
error (a charge point that did not boot, a failed step, a failed BLE advertisement), when the
simulators fell more than 2 s behind their timetable or delivered under 90 % of the readings the
scenario should produce (the scale then measures the simulators, not the gateway), on gateway
CPU at 95 % of a core or more, or on p99 latency beyond window + grace + 15 s. The first failing
scale ends the run; the exit status is 1 when any scale failed.

The charge points run in worker processes (simulators.city.procs), one per 4,000 of them unless
`--sim-procs N` says otherwise, so that one event loop does not limit the scale. A scale whose
charge-point sockets would not fit under the gateway's descriptor limit (RLIMIT_NOFILE, which it
inherits from this process) is refused before anything runs, with one line giving both figures.
`--gateway-python` runs the gateway with another interpreter (a venv without the test and
simulator extras measures the RSS a box would see).

`--json FILE` writes one record per scale (keys `scale`, `uplink_bytes_per_reading`,
`sd_bytes_per_reading`, `records_per_reading`, `cpu_s_per_1000_readings`, `unexplained`,
`readings_expected`, `readings_covered`, `gateway_cpu_pct`, `peak_rss_mib`, `latency_p99_s`,
`verdict`, and more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.report import peak_rss_mib
from simulators.city.procs import CHARGE_POINTS_PER_PROC, auto_procs
from simulators.city.runner import CityRun, RunOptions
from simulators.city.scenario import Scenario, load_scenario

STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
ROOT = Path(__file__).resolve().parents[1]
COVERAGE_FLOOR = 0.9  # covered / expected below this: the load was not produced (a device reports
# once more or less than the nominal rate says depending on its phase: a few % either way)


def raise_fd_limit() -> int:
    """Soft descriptor limit up to the hard one (inherited by the gateway and the brokers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def descriptors_needed(scenario: Scenario) -> int:
    """What the gateway process holds open at this size, roughly: a socket per charge point, about
    five descriptors per serial port (issue 12's measurement), a few hundred for the rest."""
    return scenario.charge_point_count() + 5 * sum(g.ports for g in scenario.serial) + 300


def descriptor_refusal(scenario: Scenario, scale: float, limit: int) -> str:
    """One line when the gateway could not hold this scale's connections under `limit` (the
    descriptor limit it inherits from this process), else ""."""
    scaled = scenario.scaled(scale)
    needed = descriptors_needed(scaled)
    if needed <= limit:
        return ""
    return (f"scale {scale:g} not run: the gateway would need ~{needed:,} descriptors "
            f"({scaled.charge_point_count():,} charge-point sockets, {sum(g.ports for g in scaled.serial):,} serial "
            f"ports, ~300 others) and RLIMIT_NOFILE is {limit:,} (the hard limit; raising it needs CAP_SYS_RESOURCE)")


def cp_interval(scenario: Scenario) -> float:
    return max((g.interval for g in scenario.charge_points if g.count), default=60.0)


def prepare(scenario: Scenario, *, duration: float, max_interval: float, window: int,
            uplink: str | None) -> Scenario:
    """The scenario as benchmarked: no faults, its intervals capped, the run's duration/window."""
    city = msgspec.structs.replace(scenario.city, duration=duration, **({"uplink": uplink} if uplink else {}))
    if window and window != scenario.city.window:  # short windows close several times in a run
        city = msgspec.structs.replace(city, window=window, grace=2.0)

    def cap(group: Any) -> Any:
        return msgspec.structs.replace(group, interval=min(group.interval, max_interval)) if max_interval else group

    return msgspec.structs.replace(
        scenario, city=city, faults=[],
        lorawan=[cap(g) for g in scenario.lorawan], serial=[cap(g) for g in scenario.serial],
        charge_points=[cap(g) for g in scenario.charge_points],
    )


def run_scale(scenario: Scenario, scale: float, workdir: Path, *, gateway_python: str = "",
              sim_procs: int = 1) -> dict[str, Any]:
    options = RunOptions(workdir=workdir / f"scale-{scale:g}", progress=False, settle_timeout=60.0,
                         stop_timeout=240.0, python=gateway_python or sys.executable, sim_procs=sim_procs)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    report = asyncio.run(CityRun(scenario, scale, options).run())
    after = resource.getrusage(resource.RUSAGE_SELF)
    report["run"]["simulator_process"] = {
        "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "wall_seconds": round(time.monotonic() - started, 2),
    }
    return report


def simulator_errors(report: dict[str, Any]) -> dict[str, int]:
    run = report["run"]
    errors = {f"ocpp {cause}": n for cause, n in run.get("ocpp_errors", {}).items()}
    errors |= {f"ble {cause}": n for cause, n in (run.get("ble_bus_watch") or {}).get("simulator_errors", {}).items()}
    not_booted = run["charge_points"] - run["charge_points_booted"]
    if not_booted:
        errors["charge points not booted"] = not_booted
    return errors


def figures(report: dict[str, Any], scale: float) -> dict[str, Any]:
    """One scale's record: issue 11's per-reading figures and issue 12's capacity figures."""
    run, totals = report["run"], report["totals"]
    covered = totals["covered"]
    gp = run["gateway_process"]
    steady = run.get("gateway_steady") or {}
    seconds = run["sending_seconds"] or 1.0
    per = (lambda x: round(x / covered, 2)) if covered else (lambda x: None)
    return {
        "scale": scale,
        "climate_sensors": run["climate_sensors"],
        "charge_points": run["charge_points"],
        "sending_seconds": run["sending_seconds"],
        "readings_expected": run["readings_expected"],
        "readings_sent": totals["sent"],
        "readings_covered": covered,
        "expected_per_second": run["nominal_readings_per_second"],
        # start-up readings (charge point boots, OTAA joins) left out: the rate while reporting
        "covered_per_second": round((covered - run["readings_sent_before_devices_report"]) / seconds, 1),
        "unexplained": totals["unexplained"],
        "uplink_bytes_per_reading": per(run["uplink"]["wire_bytes"]),
        "sd_bytes_per_reading": per(gp["write_bytes"]),
        "records_per_reading": per(run["uplink"]["records_received"]),
        "cpu_s_per_1000_readings": round(1000 * gp["cpu_seconds"] / covered, 3) if covered else None,
        "gateway_cpu_pct": round(100 * (steady.get("cpu_share") or 0), 1),
        "gateway_cpu_pct_whole_life": round(100 * (gp["cpu_share"] or 0), 1),
        "peak_rss_mib": gp["peak_rss_mib"],
        "latency_p50_s": run["latency_s"]["p50"],
        "latency_p99_s": run["latency_s"]["p99"],
        "simulator_worst_lag_s": run["simulator_worst_lag_s"],
        "simulator_errors": simulator_errors(report),
        "sim_procs": run.get("ocpp_processes", {}).get("processes", 1),
        "simulator_cpu_pct_whole_run": simulator_cpu_pct(run),
        "ble_not_scanning": totals.get("not_scanning", 0),
    }


def simulator_cpu_pct(run: dict[str, Any]) -> list[float]:
    """CPU share of one core over the whole run (start-up to drain): the runner's process (LoRaWAN,
    serial, BLE, the platform receiver, and the charge points when they run in it), then each
    charge-point worker."""
    sim = run.get("simulator_process") or {}
    wall = sim.get("wall_seconds") or 0.0
    if not wall:
        return []
    workers = run.get("ocpp_processes", {}).get("worker_cpu_seconds", [])
    return [round(100 * s / wall, 1) for s in [sim["cpu_seconds"], *(w or 0.0 for w in workers)]]


def verdict(record: dict[str, Any], window: float, grace: float) -> str:
    if record["unexplained"]:
        return f"FAIL: {record['unexplained']:+,} readings unexplained"
    if record["simulator_errors"]:
        return f"FAIL: simulator errors {record['simulator_errors']}"
    if record["simulator_worst_lag_s"] > 2.0:
        return f"FAIL: simulators {record['simulator_worst_lag_s']:.1f} s behind their timetable (simulator-bound)"
    expected = record["readings_expected"]
    if expected and record["readings_covered"] < COVERAGE_FLOOR * expected:
        return (f"FAIL: {record['readings_covered'] / expected:.1%} of the readings the scenario should "
                "produce reached the platform")
    if record["gateway_cpu_pct"] >= 95.0:
        return f"FAIL: gateway CPU saturated ({record['gateway_cpu_pct']:.0f} % of a core)"
    p99 = record["latency_p99_s"]
    if p99 is not None and p99 > window + grace + 15:
        return f"FAIL: p99 latency {p99:.1f} s"
    if p99 is None:
        # the platform receiver (a paho thread in the simulator process) got no batch while the
        # devices reported: it lagged the broker, so latency was not measured at this scale
        return "keeps up (latency not measured: the platform receiver lagged)"
    return "keeps up"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.city", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="highest scale to try (default 1)")
    parser.add_argument("--scales", default="", help="explicit comma-separated scales instead of 1, 2, 5, ... up to --scale")
    parser.add_argument("--scenario", default=str(ROOT / "config/scenarios/reference.toml"))
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds the devices report per scale (default: three charge-point intervals)")
    parser.add_argument("--max-interval", type=float, default=-1.0,
                        help="cap on every device's interval, s (default: the charge points' interval; 0: as written)")
    parser.add_argument("--uplink", choices=["file", "mqtt"], help="override the scenario's uplink")
    parser.add_argument("--window", type=int, default=10,
                        help="gateway window (s) for the runs, grace 2 s (default 10; 60 or 0 keeps the "
                             "reference scenario's 60 s windows and its grace)")
    parser.add_argument("--workdir", default="", help="keep each run here (default: a temporary folder)")
    parser.add_argument("--json", default="", help="write the per-scale records to this file")
    parser.add_argument("--sim-procs", type=int, default=0,
                        help="processes running the charge points (default 0: one per "
                             f"{CHARGE_POINTS_PER_PROC:,} charge points of the scale)")
    parser.add_argument("--gateway-python", default="",
                        help="interpreter that runs the gateway (e.g. a venv with the gateway alone, no test or "
                             "simulator extras, as on a box; default: this one)")
    args = parser.parse_args(argv)
    scales = ([float(x) for x in args.scales.split(",")] if args.scales
              else [s for s in STEPS if s <= args.scale] or [args.scale])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="city-bench-"))
    base = load_scenario(args.scenario)
    interval = cp_interval(base)
    duration = args.duration or 3 * interval
    max_interval = interval if args.max_interval < 0 else args.max_interval
    bench = prepare(base, duration=duration, max_interval=max_interval, window=args.window, uplink=args.uplink)
    window, grace = bench.city.window, bench.city.grace
    fds = raise_fd_limit()
    for scale in scales:
        refusal = descriptor_refusal(bench, scale, fds)
        if refusal:
            print(f"benchmarks.city: {refusal}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _interrupt)  # clean up simulators, brokers and gateway on kill
    intervals = [g.interval for g in base.lorawan] + [g.interval for g in base.serial]
    capped = sorted({i for i in intervals if max_interval and i > max_interval})
    print(f"== city benchmark: {Path(args.scenario).name}, {duration:g} s per scale, window {window} s "
          f"(grace {grace:g} s), uplink {bench.city.uplink}, scales {scales}, descriptor limit {fds}")
    if capped:
        print(f"   device intervals capped at {max_interval:g} s (as written: {', '.join(f'{c:g}' for c in capped)} s)"
              " so every device reports at least three times")
    print(f"  {'scale':>6} {'sensors':>8} {'CPs':>7} {'covered/s':>10} {'expected/s':>10} {'gw CPU':>7}"
          f" {'peak RSS':>9} {'p99 s':>6} {'up B/rd':>8} {'SD B/rd':>8} {'rec/rd':>7} {'CPU s/1k':>8}  verdict")
    records: list[dict[str, Any]] = []
    failed = False
    for scale in scales:
        procs = args.sim_procs or auto_procs(bench.scaled(scale).charge_point_count())
        try:
            report = run_scale(bench.scaled(scale), scale, workdir, gateway_python=args.gateway_python,
                               sim_procs=procs)
        except KeyboardInterrupt:
            print("  interrupted")
            failed = True
            break
        except Exception as error:  # noqa: BLE001 - the scale that breaks the box is a result too
            print(f"  {scale:>6g} failed to run: {type(error).__name__}: {error}")
            records.append({"scale": scale, "verdict": f"FAIL: did not run ({type(error).__name__}: {error})"})
            failed = True
            break
        record = figures(report, scale)
        record["window_s"] = window
        record["verdict"] = state = verdict(record, window, grace)
        records.append(record)

        def show(value: Any, spec: str) -> str:
            return format(value, spec) if value is not None else "-"

        print(f"  {scale:>6g} {record['climate_sensors']:>8,} {record['charge_points']:>7,}"
              f" {record['covered_per_second']:>10,.1f} {record['expected_per_second']:>10,.1f}"
              f" {record['gateway_cpu_pct']:>6.1f}% {record['peak_rss_mib']:>7.1f}Mi"
              f" {show(record['latency_p99_s'], '>6.1f')} {show(record['uplink_bytes_per_reading'], '>8.2f')}"
              f" {show(record['sd_bytes_per_reading'], '>8.1f')} {show(record['records_per_reading'], '>7.3f')}"
              f" {show(record['cpu_s_per_1000_readings'], '>8.3f')}  {state}", flush=True)
        print(f"         simulators: {procs} charge-point process(es); CPU % of a core over the whole run "
              f"(runner, then workers): {record['simulator_cpu_pct_whole_run']}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=2) + "\n")
        if not state.startswith("keeps up"):
            failed = True
            break
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2) + "\n")
    print(f"  runs kept in {workdir}; peak RSS of this (simulator) process: {peak_rss_mib():.1f} MiB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
