"""The fault table: one small city per fault, against the real gateway, every loss named.

    python -m benchmarks.faults [--only KIND,...] [--duration S] [--json FILE] [--workdir DIR]  (make faults)

Each row runs the same small city (LoRaWAN over UDP, Modbus and SDS011 on ptys, BLE tags on the
mock BlueZ, OCPP charge points, the file uplink) with one fault from the scenario language
(simulators/city/scenario.py) and prints: fault | sent | covered | named losses | unexplained,
where named losses are the report's own categories (frames corrupted on purpose, bytes unread
when a cable was pulled, BLE not scanning, the gateway's late/future drops, link losses, and per
device: what evicted batches covered, what was sent while the gateway was down, what a SIGKILL
caught unstored). The verdict fails (exit status 1) on any unexplained reading, either sign, or
a batch missing at the platform that the gateway did not evict.

The rows beyond the protocol faults:
- disk_full: the gateway's state folder is a tmpfs the run mounts (root only: without the
  permission the row is skipped, saying why); a filler file takes all of it for a while.
- gateway_kill: SIGKILL, restarted by the runner; gateway_term: SIGTERM under load (a clean
  stop; the runner's gateway drains on stop), restarted. What the devices sent while it was
  down is `gateway_down`; what a SIGKILL caught between checkpoints is `unstored` (at most the
  checkpoint interval, 1 s here).
- broker_restart: the MQTT uplink with `ack = "platform"` to a Mosquitto without persistence,
  restarted empty; the platform receiver acknowledges what its ledger holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from simulators.city.faults import FaultUnavailable
from simulators.city.runner import CityRun, RunOptions
from simulators.city.scenario import parse_scenario

FAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "uplink_outage": {"kind": "uplink_outage", "at": 4.0, "duration": 4.0},
    "corrupt": {"kind": "corrupt", "at": 3.0, "duration": 6.0, "rate": 0.2},
    "serial_unplug": {"kind": "serial_unplug", "at": 3.0, "duration": 4.0, "ports": 2},
    "ble_stall": {"kind": "ble_stall", "at": 3.0},
    "cp_disconnect": {"kind": "cp_disconnect", "at": 4.0, "count": 2},
    "clock_jump": {"kind": "clock_jump", "at": 5.0, "seconds": 20.0},
    "disk_full": {"kind": "disk_full", "at": 4.0, "duration": 4.0, "size_mib": 16},
    "gateway_kill": {"kind": "gateway_kill", "at": 5.0, "down": 2.0},
    "gateway_term": {"kind": "gateway_term", "at": 5.0, "down": 2.0},
    "broker_restart": {"kind": "broker_restart", "at": 4.0, "down": 3.0},
}
# rows that need more than the file uplink
CITY: dict[str, dict[str, Any]] = {"broker_restart": {"uplink": "mqtt", "mqtt_ack": "platform"}}
NAMED = ("damaged_on_purpose", "in_flight_when_unplugged", "not_scanning", "gateway_dropped", "link_losses", "evicted",
         "gateway_down", "unstored")


def scenario(fault: dict[str, Any], duration: float, city: dict[str, Any] | None = None) -> Any:
    return parse_scenario({
        "city": {"name": "faults", "duration": duration, "window": 5, "grace": 1.0, "max_lateness": 600.0,
                 "uplink": "file", "checkpoint": 1.0, **(city or {})},
        "lorawan": [{"count": 5, "interval": 2.0, "gateways": 1}],
        "serial": [{"kind": "modbus", "ports": 1, "units_per_port": 2, "interval": 1.0},
                   {"kind": "sds011", "ports": 1, "interval": 1.0}],
        "ble": [{"count": 5, "interval": 0.5, "repeats": 2}],
        "charge_points": [{"count": 3, "interval": 1.0}],
        "faults": [fault] if fault else [],
    })


def run_one(name: str, fault: dict[str, Any], duration: float, workdir: Path) -> dict[str, Any]:
    try:
        report = asyncio.run(CityRun(scenario(fault, duration, CITY.get(name)), 1,
                                     RunOptions(workdir=workdir / name, progress=False)).run())
    except FaultUnavailable as why:
        return {"fault": name, "skipped": str(why)}
    totals = report["totals"]
    named = sum(totals[k] for k in NAMED)
    unexplained = sum(p["unexplained"] for p in report["protocols"].values())
    dropped = report["dropped"]
    return {"fault": name, "sent": totals["sent"], "covered": totals["covered"], "named": named,
            "named_by_category": {k: totals[k] for k in NAMED if totals[k]}, "unexplained": unexplained,
            "missing_seq": sum(len(v) for v in dropped["missing_seq"].values()),
            "missing_seq_not_evicted": sum(len(v) for v in dropped["missing_seq_not_evicted"].values()),
            "faults": [f["what"] for f in report.get("faults", [])], "outages": dropped["outages"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated fault names (default: all)")
    parser.add_argument("--duration", type=float, default=14.0, help="seconds the devices report per row")
    parser.add_argument("--json", default="", help="write the rows to this file")
    parser.add_argument("--workdir", default="", help="keep each row's run here (report.json, gateway.log; "
                        "default: a temporary folder)")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown}; known: {', '.join(FAULTS)}")
    rows = []
    print(f"{'fault':<16}{'sent':>8}{'covered':>9}{'named losses':>14}{'unexplained':>13}")
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        for name in names:
            row = run_one(name, FAULTS[name], args.duration, Path(args.workdir or tmp))
            rows.append(row)
            if "skipped" in row:
                print(f"{row['fault']:<16}skipped: {row['skipped']}", flush=True)
                continue
            print(f"{row['fault']:<16}{row['sent']:>8,}{row['covered']:>9,}{row['named']:>14,}{row['unexplained']:>13,}",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    failed = [r["fault"] for r in rows if r.get("unexplained") or r.get("missing_seq_not_evicted")]
    print(f"verdict: {'FAIL: unexplained losses in ' + ', '.join(failed) if failed else 'every loss named'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
