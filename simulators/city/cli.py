"""`edge-gateway-sim city`: run a city (a scenario file times --scale) against the real gateway
and print the loss report."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from importlib import resources
from pathlib import Path

from gateway.errors import ConfigError
from simulators.city.scenario import load_scenario

REFERENCE = "config/scenarios/reference.toml"


def _default_scenario() -> str:
    local = Path(REFERENCE)
    if local.exists():
        return str(local)
    return str(resources.files("simulators") / ".." / REFERENCE)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway-sim city", description=__doc__)
    parser.add_argument("--scenario", default=None, help=f"scenario TOML (default {REFERENCE})")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every device count (default 1)")
    parser.add_argument("--duration", type=float, help="override city.duration (seconds)")
    parser.add_argument("--uplink", choices=["file", "mqtt"], help="override city.uplink")
    parser.add_argument("--workdir", default="city-run", help="state, ptys, logs, config and report go here")
    parser.add_argument("--report", help="write the JSON report here (default <workdir>/report.json)")
    parser.add_argument("--no-progress", action="store_true", help="no live display")
    parser.add_argument("--sim-procs", type=int, default=0,
                        help="processes running the charge points (default 0: one per 4,000 charge points)")
    parser.add_argument("--check", action="store_true", help="validate the scenario and print its size, then exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any reading is unexplained")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    path = args.scenario or _default_scenario()
    try:
        scenario = load_scenario(path, scale=args.scale)
    except ConfigError as error:
        for problem in error.problems:
            print(f"scenario error: {problem}", file=sys.stderr)
        return 2
    import msgspec

    city = scenario.city
    if args.duration is not None:
        city = msgspec.structs.replace(city, duration=args.duration)
    if args.uplink is not None:
        city = msgspec.structs.replace(city, uplink=args.uplink)
    scenario = msgspec.structs.replace(scenario, city=city)
    print(f"city {city.name!r} x{args.scale:g}: {scenario.climate_sensors():,} climate sensors, "
          f"{scenario.charge_point_count():,} charge points, {city.duration:g} s, uplink {city.uplink}")
    if args.check:
        return 0
    from simulators.city.procs import auto_procs
    from simulators.city.runner import CityRun, RunOptions, print_report

    options = RunOptions(workdir=Path(args.workdir), progress=not args.no_progress and sys.stdout.isatty(),
                         report_path=Path(args.report) if args.report else None,
                         sim_procs=args.sim_procs or auto_procs(scenario.charge_point_count()))
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: simulators, brokers and gateway cleaned up
    try:
        report = asyncio.run(CityRun(scenario, args.scale, options).run())
    except KeyboardInterrupt:
        print("edge-gateway-sim city: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:  # a part that would not start (broker, D-Bus, the gateway itself)
        print(f"edge-gateway-sim city: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 1 if args.strict and report["totals"]["unexplained"] else 0
