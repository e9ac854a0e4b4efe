"""`edge-gateway-sim platform`: subscribe to the gateways' batches and write a loss report."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from simulators.platform.receiver import PlatformReceiver


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="edge-gateway-sim platform",
        description="Receive batches over MQTT, validate them against schema/batch-v1.json, "
        "remove duplicates, find gaps and write a JSON report.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    parser.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    parser.add_argument("--share-group", default="",
                        help="take batch/event topics as MQTT 5 shared subscription $share/<group>/")
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    parser.add_argument("--username", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--ca-file", default="", help="CA bundle: connect with TLS")
    parser.add_argument("--client-id", default="", help="MQTT client id (default: broker-assigned)")
    parser.add_argument("--session-expiry", type=int, default=0,
                        help="seconds the broker keeps this receiver's session and queued "
                        "messages while it is away (needs --client-id; 0: clean session)")
    parser.add_argument("--ack", action="store_true",
                        help="acknowledge each accounted batch on <prefix>/<gateway>/ack "
                        "(end to end, for uplinks with ack = \"platform\")")
    parser.add_argument("--report", default="", help="write the JSON report here (default stdout)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (0: until SIGINT/SIGTERM)")
    args = parser.parse_args(argv)

    receiver = PlatformReceiver(
        args.host, args.port, prefix=args.prefix, share_group=args.share_group,
        protocol=args.protocol, username=args.username, password=args.password,
        ca_file=args.ca_file, client_id=args.client_id, session_expiry=args.session_expiry,
        ack=args.ack,
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        receiver.start_sync()
    except (OSError, TimeoutError) as error:
        print(f"edge-gateway-sim platform: cannot subscribe on {args.host}:{args.port}: {error}",
              file=sys.stderr)
        return 1
    done.wait(args.duration if args.duration > 0 else None)
    receiver.stop_sync()
    if args.report:
        receiver.write_report(args.report)
    else:
        json.dump(receiver.report(), sys.stdout, indent=2, sort_keys=True)
        print()
    report = receiver.report()
    print(f"platform: {report['batches']} batches, {report['readings_covered']} readings covered, "
          f"{report['duplicates']['batches']} duplicate batches, "
          f"{sum(len(v) for v in report['gaps'].values())} missing seq, "
          f"{report['invalid']['count']} invalid", file=sys.stderr)
    return 0
