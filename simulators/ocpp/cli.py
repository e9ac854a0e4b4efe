"""`edge-gateway-sim ocpp`: a fleet of simulated charge points, or the CSMS stand-in."""

from __future__ import annotations

import argparse
import asyncio
import time

from simulators.ocpp.csms import CsmsStandIn
from simulators.ocpp.fleet import Fleet, FleetConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway-sim ocpp", description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:9000/",
                        help="gateway or CSMS URL ending in '/'; the charge point id is appended")
    parser.add_argument("--version", choices=["1.6", "2.0.1"], default="1.6")
    parser.add_argument("-n", "--charge-points", type=int, default=10)
    parser.add_argument("-m", "--connectors", type=int, default=2)
    parser.add_argument("--id-prefix", default="SIM")
    parser.add_argument("--password", default="", help="basic-auth password for every charge point")
    parser.add_argument("--tick", type=float, default=1.0, help="real seconds between ticks")
    parser.add_argument("--time-step", type=float, default=10.0, help="virtual seconds per tick")
    parser.add_argument("--realtime", action="store_true",
                        help="stamp messages with the wall clock instead of the virtual clock")
    parser.add_argument("--fault-probability", type=float, default=0.05)
    parser.add_argument("--quiet-until-triggered", action="store_true",
                        help="send status and meter values only when the gateway triggers them")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    parser.add_argument("--csms", action="store_true",
                        help="run the CSMS stand-in instead (listens on --port) for proxy tests")
    parser.add_argument("--port", type=int, default=9100, help="CSMS stand-in port")
    return parser


async def _run_fleet(args: argparse.Namespace) -> int:
    config = FleetConfig(
        url=args.url, version=args.version, charge_points=args.charge_points,
        connectors=args.connectors, id_prefix=args.id_prefix,
        passwords={"*": args.password} if args.password else {}, seed=args.seed,
        time_step=args.time_step, tick=args.tick, fault_probability=args.fault_probability,
        report=not args.quiet_until_triggered,
        start_time=time.time() if args.realtime else FleetConfig.start_time,
    )
    fleet = Fleet(config)
    await fleet.start()
    deadline = time.monotonic() + args.duration
    ticks = 0
    try:
        while time.monotonic() < deadline:
            if args.realtime:  # step() adds time_step: land on the wall clock
                for cp in fleet.charge_points:
                    cp.now = time.time() - config.time_step
            await fleet.step()
            ticks += 1
    finally:
        await fleet.stop()
    print(f"{len(fleet.charge_points)} charge points, {ticks} ticks, {fleet.frames_sent} frames sent,"
          f" {len(fleet.expected)} readings expected")
    return 0


async def _run_csms(args: argparse.Namespace) -> int:
    csms = CsmsStandIn(port=args.port)
    await csms.start()
    print(f"CSMS stand-in on {csms.url} for {args.duration:.0f} s")
    try:
        await asyncio.sleep(args.duration)  # the run's length
    finally:
        await csms.stop()
    print(f"{csms.connects} connections, {sum(map(len, csms.received.values()))} frames received")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_run_csms(args) if args.csms else _run_fleet(args))
