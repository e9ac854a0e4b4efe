"""`edge-gateway-sim ble`: BLE climate tags on a private mock BlueZ.

Starts a private system D-Bus with python-dbusmock's bluez5 template, prints the
DBUS_SYSTEM_BUS_ADDRESS to export for the gateway (bleak follows it), and advertises N tags of
each format until --duration runs out. --stall-after makes the tags go silent the way a stalled
BlueZ scanner does, to watch the gateway recover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from simulators.ble.sim import BleSimulator
from simulators.ble.tags import DEFAULT_KEY, FORMATS, make_tags

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway-sim ble", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", type=int, default=2, help="tags per format (default 2)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)}")
    parser.add_argument("--interval", type=float, default=1.0, help="advertising interval, s (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="advertisements per measurement (default 3)")
    parser.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds (default 60)")
    parser.add_argument("--stall-after", type=float, default=0.0, help="go silent after this many seconds (0: never)")
    parser.add_argument("--stall-mode", choices=("scanner", "adapter", "forever"), default="scanner",
                        help="what ends the stall: a scanner restart, an adapter power cycle, nothing")
    parser.add_argument("--bthome-key", default=DEFAULT_KEY.hex(), help="AES key of the bthome_enc tags (32 hex)")
    parser.add_argument("--passive", action="store_true", help="advertise without waiting for StartDiscovery")
    return parser


async def _run(args: argparse.Namespace) -> int:
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        print(f"edge-gateway-sim ble: unknown formats {unknown}; known: {', '.join(FORMATS)}")
        return 2
    if not 1 <= args.tags <= 256:
        print("edge-gateway-sim ble: --tags is per format, 1 to 256 (one MAC byte holds the index)")
        return 2
    tags = make_tags(args.tags, formats, bytes.fromhex(args.bthome_key))
    sim = BleSimulator(tags, interval=args.interval, repeats=args.repeats, require_discovery=not args.passive)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        print(f"DBUS_SYSTEM_BUS_ADDRESS={sim.address}", flush=True)
        for tag in tags:
            extra = f" key={args.bthome_key}" if tag.format == "bthome_enc" else ""
            print(f"tag {tag.mac} {tag.format}{extra}", flush=True)
        if args.stall_after > 0:
            loop.call_later(args.stall_after, sim.stall, args.stall_mode)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        measurements = sum(len(t.sent) for t in tags)
        print(f"sent advertisements={sim.advertisements_sent} measurements={measurements} "
              f"discovery_starts={sim.discovery_starts} power_cycles={sim.power_cycles} "
              f"stalled_ticks={sim.stalled_ticks} late_rounds={sim.late_rounds} "
              f"slowest_round={sim.slowest_round:.3f}s errors={dict(sim.errors)}", flush=True)
    return 1 if sim.errors else 0


def main(argv: list[str]) -> int:
    return asyncio.run(_run(_parser().parse_args(argv)))
