"""`edge-gateway-sim lorawan`: virtual packet forwarders or a network-server publisher."""

from __future__ import annotations

import argparse
import asyncio
import sys

from simulators.lorawan.forwarder import VirtualForwarder
from simulators.lorawan.publisher import NetworkServerPublisher
from simulators.lorawan.sensors import FAMILIES, make_fleet


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway-sim lorawan", description=__doc__)
    parser.add_argument("mode", choices=("forwarder", "publisher", "devices"),
                        help="forwarder: Semtech UDP to the gateway; publisher: network-server JSON to MQTT;"
                             " devices: print the [[drivers.devices]] TOML for the simulated fleet")
    parser.add_argument("--server", default="127.0.0.1:1700", help="forwarder: host:port of the gateway")
    parser.add_argument("--broker", default="127.0.0.1:1883", help="publisher: MQTT broker host:port")
    parser.add_argument("--per-family", type=int, default=1, help="sensors per codec family")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated codec families")
    parser.add_argument("--otaa-every", type=int, default=2, help="every n-th sensor joins by OTAA (0: none)")
    parser.add_argument("--gateways", type=int, default=1, help="forwarder: virtual gateways hearing each frame")
    parser.add_argument("--formats", default="chirpstack_v4,tts_v3", help="publisher: JSON flavours in turn")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between rounds of uplinks")
    parser.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=1, help="key generator seed (match the gateway config)")
    return parser


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _run(args: argparse.Namespace) -> int:
    fleet = make_fleet(args.per_family, families=args.families.split(","), otaa_every=args.otaa_every, seed=args.seed)
    if args.mode == "forwarder":
        sim = VirtualForwarder(_host_port(args.server), fleet, gateways=args.gateways,
                               interval=args.interval, duration=args.duration)
        await sim.start()
        try:
            await asyncio.wait_for(sim.done.wait(), args.duration + 30)
        finally:
            await sim.stop()
        print(f"sent: {sim.counts}")
    else:
        host, port = _host_port(args.broker)
        pub = NetworkServerPublisher(host, port, fleet, formats=tuple(args.formats.split(",")),
                                     interval=args.interval, duration=args.duration)
        await pub.start()
        try:
            await asyncio.wait_for(pub.done.wait(), args.duration + 30)
        finally:
            await pub.stop()
        print(f"sent: {pub.counts}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.mode == "devices":
        fleet = make_fleet(args.per_family, families=args.families.split(","), otaa_every=args.otaa_every, seed=args.seed)
        for sensor in fleet:
            print("[[drivers.devices]]")
            for key, value in sensor.device_config().items():
                print(f'{key} = "{value}"')
            print()
        return 0
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
