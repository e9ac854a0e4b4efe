"""`edge-gateway-sim serial`: one serial device (or Modbus bus) on a pty, behind a link path.

    edge-gateway-sim serial modbus --link /tmp/ttyRS485 --units 1,2,3 --duration 600
    edge-gateway-sim serial sds011 --link /tmp/ttySDS --mode query
    edge-gateway-sim serial wxt --link /tmp/ttyWXT --mode automatic --period 5

Point a gateway `[[drivers]]` table of type "serial" at the link. Faults: --corrupt/--garbage/
--drop probabilities per answer, --silent-after seconds, --unplug-every seconds (the link
disappears for --unplug-for seconds, like a USB adapter pulled out and put back).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from simulators.serial.faults import Faults

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway-sim serial",
        description="Serial climate sensors on a pty pair (the gateway opens --link).",
    )
    parser.add_argument("device", choices=["modbus", "sds011", "wxt"])
    parser.add_argument("--link", required=True, help="path of the symlink the gateway opens")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, then stop")
    parser.add_argument("--units", default="1", help="modbus: comma-separated unit ids (XY-MD02)")
    parser.add_argument("--mode", default="", help="sds011: active|query; wxt: polled|automatic")
    parser.add_argument("--period", type=float, default=1.0, help="active/automatic period (s)")
    parser.add_argument("--address", default="0", help="wxt: station address character")
    parser.add_argument("--imperial", action="store_true", help="wxt: mph, degF, inHg, in")
    parser.add_argument("--corrupt", type=float, default=0.0, help="P(bad CRC/checksum)")
    parser.add_argument("--garbage", type=float, default=0.0, help="P(noise before an answer)")
    parser.add_argument("--drop", type=float, default=0.0, help="P(no answer)")
    parser.add_argument("--silent-after", type=float, default=0.0, help="go silent after s")
    parser.add_argument("--unplug-every", type=float, default=0.0, help="unplug period (s)")
    parser.add_argument("--unplug-for", type=float, default=2.0, help="seconds unplugged")
    return parser


def _make(args: argparse.Namespace, faults: Faults) -> Any:
    if args.device == "modbus":
        from simulators.serial.modbus_slave import ModbusBusSim, SimUnit

        units = [SimUnit(unit=int(u), faults=faults) for u in args.units.split(",") if u]
        return ModbusBusSim(units, link=args.link)
    if args.device == "sds011":
        from simulators.serial.sds011 import Sds011Sim

        return Sds011Sim(args.link, mode=args.mode or "active", period=args.period, faults=faults)
    from simulators.serial.wxt import WxtSim

    return WxtSim(
        args.link,
        address=args.address,
        mode=args.mode or "polled",
        period=args.period,
        imperial=args.imperial,
        faults=faults,
    )


def _sent(sim: Any) -> int:
    for name in ("answers_sent", "frames_sent", "messages_sent"):
        if hasattr(sim, name):
            return int(getattr(sim, name))
    return 0


async def _run(args: argparse.Namespace) -> int:
    faults = Faults(corrupt=args.corrupt, garbage=args.garbage, drop=args.drop)
    sim = _make(args, faults)
    await sim.start()
    print(f"{args.device} simulator on {sim.path} for {args.duration:.0f} s", flush=True)
    start = time.monotonic()
    next_unplug = start + args.unplug_every if args.unplug_every else float("inf")
    try:
        while (now := time.monotonic()) - start < args.duration:
            if args.silent_after and now - start >= args.silent_after and not faults.silent:
                faults.silent = True
                print("now silent", flush=True)
            if now >= next_unplug:
                sim.unplug()
                print("unplugged", flush=True)
                await asyncio.sleep(args.unplug_for)
                sim.replug()
                print(f"replugged at {sim.path}", flush=True)
                next_unplug = time.monotonic() + args.unplug_every
            await asyncio.sleep(0.1)  # the simulator's own clock tick
    finally:
        await sim.stop()
    print(
        f"sent {_sent(sim)} answers/frames; injected: {faults.corrupted} corrupted, "
        f"{faults.garbled} garbled, {faults.dropped} dropped",
        flush=True,
    )
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
