"""`edge-gateway test`: the drivers alone, each decoded reading printed, drops counted by cause.

Run as a technician would: the real command in a subprocess, against a replay file and against
an SDS011 simulator on a pty (simulators/serial) that corrupts some frames.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulators.serial import Sds011Sim
from tests.support.faults import CappedFaults
from tests.support.wait import async_wait_for

# slow: the gateway CLI as a real process (make test-fast leaves it out)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\s+(?P<device>\S+)\s+(?P<metric>\S+)\s+"
    r"(?P<value>\S+)\s+(?P<unit>\S+)$"
)


def write_config(tmp_path: Path, drivers: str) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nid = "bench"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'[health]\nlisten = ""\n[log]\nformat = "json"\n{drivers}')
    return config


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "test", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:  # a failed wait must not leave the CLI running
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_replay_readings_are_printed_and_drops_counted_by_cause(tmp_path: Path) -> None:
    now = time.time()
    rows = [
        {"device": "ble:aa", "metric": "temperature", "value": 21.5, "ts": now - 5},
        {"device": "ble:aa", "metric": "humidity", "value": 40.25, "ts": now - 4},
        {"device": "ble:aa", "metric": "temperature", "value": 21.75, "ts": now + 3600},  # future
        {"device": "ble:aa", "metric": "temperature", "value": 20.0, "ts": now - 86400},  # too old
        {"device": "ble:aa", "metric": "frobnication", "value": 1.0, "ts": now - 3},  # not in catalog
        {"device": "ocpp:CP1/1", "metric": "connector_status", "value": "Charging", "ts": now - 2},
    ]
    data = tmp_path / "day.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    config = write_config(tmp_path, f'[[drivers]]\ntype = "replay"\nname = "day"\npath = "{data}"\n'
                                    'speed = 0\ntimestamps = "original"\n'
                                    f'[[drivers]]\ntype = "replay"\nname = "other"\npath = "{data}"\n')
    # a replay idles once its file is played: the run lasts its --seconds
    code, out, err = await run_cli("-c", str(config), "--driver", "day", "--seconds", "3")
    assert code == 0, err
    printed = [m.groupdict() for line in out.splitlines() if (m := LINE.match(line))]
    assert [(p["device"], p["metric"], p["value"], p["unit"]) for p in printed] == [
        ("ble:aa", "temperature", "21.5", "Cel"),
        ("ble:aa", "humidity", "40.25", "%RH"),
        ("ocpp:CP1/1", "connector_status", "Charging", "/"),
    ]
    assert printed[0]["ts"] == datetime.fromtimestamp(now - 5, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    assert re.search(r"readings per driver:\n  day\s+3\n", out), out
    dropped = dict(re.findall(r"^  day\s+(\S+)\s+(\d+)$", out, re.M))
    assert dropped == {"event_time_in_future": "1", "event_time_too_old": "1",
                       "unknown_metric": "1", "bad_json": "1"}, out
    assert "other" not in out.split("readings per driver:")[1]


async def test_unknown_driver_name_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[drivers]]\ntype = "replay"\npath = "x.csv"\n')
    code, _, err = await run_cli("-c", str(config), "--driver", "nope", "--seconds", "1")
    assert code == 2 and "no driver named 'nope'" in err and "there are: replay" in err


async def test_sds011_on_a_pty_shows_its_readings_and_its_bad_frames(tmp_path: Path) -> None:
    # The driver flushes the port's input when it opens it, so the sensor stays silent until
    # the driver's reporting-mode command says the port is open: from then on the driver reads
    # every frame. Five frames are corrupted (seeded, among the first dozen), far inside the
    # ~45 frames that 90 readings take: the CLI must count exactly those five.
    sim = Sds011Sim(tmp_path / "ttySDS", mode="active", period=0.02,
                    faults=CappedFaults(corrupt=0.5, seed=5, silent=True, max_corrupted=5))
    await sim.start()
    try:
        config = write_config(tmp_path, f'[[drivers]]\ntype = "serial"\nname = "dust"\n'
                                        f'port = "{sim.path}"\nprotocol = "sds011"\n')
        cli = asyncio.create_task(run_cli("-c", str(config), "--seconds", "45", "--count", "90"))
        await async_wait_for(lambda: sim.commands == 1 or cli.done(), timeout=30,
                             what="the driver's reporting-mode command")
        sim.faults.silent = False
        code, out, err = await cli
    finally:
        await sim.stop()
    assert code == 0, err
    printed = [m.groupdict() for line in out.splitlines() if (m := LINE.match(line))]
    assert len(printed) == 90  # --count: exactly that many, even mid-frame
    assert {p["device"] for p in printed} == {"serial:ttySDS/a160"}
    dust = [p for p in printed if p["metric"] != "sensor_status"]
    assert {p["metric"] for p in dust} == {"pm2_5", "pm10"} and {p["unit"] for p in dust} == {"ug/m3"}
    assert all(4.0 <= float(p["value"]) <= 24.0 for p in dust)
    # the driver's online state comes as a state reading too
    assert {p["value"] for p in printed if p["metric"] == "sensor_status"} <= {"ok"}
    dropped = dict(re.findall(r"^  dust\s+(\S+)\s+(\d+)$", out, re.M))
    assert sim.commands == 1 and sim.faults.corrupted == 5
    assert dropped == {"checksum_mismatch": "5"}, out
