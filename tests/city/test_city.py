"""A scale-1 city (256 climate sensors, 468 charge points) on every simulator against the real
gateway process, with an uplink outage (the platform's Mosquitto stopped and restarted),
corrupted LoRaWAN and serial frames and dropped charge-point connections: at the end every
reading the simulators sent is either covered by a window the platform received or lost for a
reason the report names."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from simulators.city.runner import CityRun, RunOptions
from simulators.city.scenario import load_scenario, parse_scenario
from tests.support.log_events import events_of, not_snake_case

# slow: a whole city of simulators against the gateway process (make test-fast leaves it out)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
async def test_scale_1_city_loses_nothing_it_cannot_name(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "config/scenarios/busy.toml", scale=1)
    assert (scenario.climate_sensors(), scenario.charge_point_count()) == (256, 468)
    scenario = msgspec.structs.replace(scenario, city=msgspec.structs.replace(scenario.city, duration=24.0))
    city = CityRun(scenario, 1, RunOptions(workdir=tmp_path / "city", progress=False))
    report = await city.run()

    protocols = report["protocols"]
    assert set(protocols) == {"lorawan-udp", "lorawan-ns", "serial", "ble", "ocpp"}
    for name, line in protocols.items():
        # a lower bound: how much the simulators send in 24 s is their pacing's; that each
        # reading is covered or named (unexplained == 0) is the exact check
        assert line["sent"] > 0, name
        assert line["unexplained"] == 0, (name, line)
    # every device of the city took part
    assert protocols["ocpp"]["devices"] == 468 * 2 + 312  # connectors, plus connector 0 of the 1.6 ones
    assert protocols["lorawan-udp"]["devices"] + protocols["lorawan-ns"]["devices"] == 180
    assert protocols["ble"]["devices"] == 32
    assert report["run"]["charge_points_booted"] == 468
    # the faults happened and left their traces
    assert {f["kind"] for f in report["faults"]} == {"corrupt", "cp_disconnect", "uplink_outage"}
    # a lower bound: the fault corrupts a frame by chance over a 10 s stretch of a paced run
    assert protocols["lorawan-udp"]["damaged_on_purpose"] > 0
    # each frame the simulator corrupted is refused once as bad_mic (the copies several packet
    # forwarders relay are one frame); only a frame the kernel dropped at the socket is not
    corrupted = sum(len(frames) for frames in city.lora.corrupted.values())
    bad_mic = sum(n for cause, n in report["dropped"]["decode_errors"].items() if cause.endswith(":bad_mic"))
    kernel_drops = report["run"]["udp_datagrams_dropped_by_kernel"]
    assert bad_mic == corrupted or 0 < corrupted - bad_mic <= kernel_drops, (bad_mic, corrupted, kernel_drops)
    assert report["run"]["ocpp_drops"] == 40  # dropped between messages; reconnect on the next one
    # a lower bound: a dropped charge point reconnects with its next message, and whether that
    # comes before the end is its interval's; the gateway counts exactly the connections made
    assert report["run"]["ocpp_reconnects"] > 0
    connections = report["gateway"]["driver_events"]["charge-points:connections"]
    assert connections == 468 + report["run"]["ocpp_reconnects"], (connections, report["run"])
    # nothing missing in the batch numbering, nothing invalid, the books balance
    assert report["dropped"]["missing_seq"] == {}
    assert report["dropped"]["invalid_batches"]["count"] == 0
    totals = report["totals"]
    assert totals["sent"] == (totals["covered"] + totals["damaged_on_purpose"] + totals["gateway_dropped"]
                              + totals["link_losses"] + totals["in_flight_when_unplugged"] + totals["not_scanning"])
    # the bus watch read the whole private bus and saw every measurement the BLE simulator counts
    watch = report["run"]["ble_bus_watch"]
    assert watch["synced"] is True
    assert watch["tags_with_unmatched_measurements"] == 0, watch
    written = await asyncio.to_thread(Path(report["report_path"]).read_text)
    assert json.loads(written)["totals"] == totals


@pytest.mark.timeout(90)
async def test_unplug_stall_and_clock_jump_are_accounted_for(tmp_path: Path) -> None:
    """A small city on the file uplink: serial ports pulled and plugged back, the BLE scanner
    stalled (the gateway must restart it), the gateway's own clock stepped forward (device-stamped
    readings become late revisions) and the output folder made unwritable for a while."""
    scenario = parse_scenario({
        "city": {"name": "faults", "duration": 16.0, "window": 5, "grace": 1.0, "max_lateness": 600.0, "uplink": "file"},
        "lorawan": [{"count": 5, "interval": 2.0, "gateways": 1}],
        "serial": [{"kind": "modbus", "ports": 1, "units_per_port": 2, "interval": 1.0},
                   {"kind": "sds011", "ports": 1, "interval": 1.0}],
        "ble": [{"count": 7, "interval": 0.5, "repeats": 2}],
        "charge_points": [{"count": 3, "interval": 1.0}],
        "faults": [{"kind": "serial_unplug", "at": 2.0, "duration": 4.0, "ports": 2},
                   {"kind": "ble_stall", "at": 3.0},
                   {"kind": "clock_jump", "at": 8.0, "seconds": 20.0},
                   {"kind": "uplink_outage", "at": 9.0, "duration": 3.0}],
    })
    report = await CityRun(scenario, 1, RunOptions(workdir=tmp_path / "city", progress=False, log_level="info")).run()

    # every line the gateway and its drivers logged has a snake_case event key (the run summary
    # printed at exit is the only other text in that file)
    log = await asyncio.to_thread((tmp_path / "city" / "gateway.log").read_text)
    events = events_of(line for line in log.splitlines() if line.startswith("{"))
    assert not_snake_case(events) == []
    assert {"port_unavailable", "port_reopened", "scanner_restarting", "clock_stepped", "uplink_unavailable",
            "endpoint_listening", "port_opened"} <= set(events), sorted(set(events))

    for name, line in report["protocols"].items():
        assert line["sent"] > 0, name  # a lower bound: what 16 s of pacing sends; exact below
        assert line["unexplained"] == 0, (name, line)
    assert {f["kind"] for f in report["faults"]} == {"serial_unplug", "ble_stall", "clock_jump", "uplink_outage"}
    # charge points stamp their own (unjumped) time: after the step their readings arrive late.
    # Lower bounds: how many is the pacing's, and the gateway's revision count is scraped before
    # the drain while the platform's is counted after it, so the two are not comparable
    late = report["late_revisions"]
    assert late["late_readings_accepted"] > 0
    assert late["superseded_at_platform"] > 0
    assert report["dropped"]["missing_seq"] == {}
