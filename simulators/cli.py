"""`edge-gateway-sim <simulator> ...`: each simulator package has a `cli.main(argv)`."""

from __future__ import annotations

import importlib
import sys

SIMULATORS = {
    "platform": "simulators.platform.cli",
    "ocpp": "simulators.ocpp.cli",
    "lorawan": "simulators.lorawan.cli",
    "serial": "simulators.serial.cli",
    "ble": "simulators.ble.cli",
    "city": "simulators.city.cli",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in SIMULATORS:
        print("usage: edge-gateway-sim {" + ",".join(SIMULATORS) + "} [options]")
        print("  each simulator speaks the hardware's wire protocol; --help after its name")
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        module = importlib.import_module(SIMULATORS[args[0]])
    except ModuleNotFoundError as error:
        print(f"edge-gateway-sim: simulator {args[0]!r} is not available ({error})")
        return 2
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
