"""The driver inside the real runtime: TOML-shaped config -> Gateway -> file uplink."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway
from simulators.ocpp import Fleet, FleetConfig
from tests.support.batches import read_batches
from tests.support.ports import free_port
from tests.support.wait import async_wait_for


@pytest.mark.slow  # end to end: a charge point fleet through the whole gateway
async def test_charge_points_reach_the_file_uplink(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config({
        "gateway": {"id": "gw-ocpp", "state_dir": str(tmp_path / "state")},
        "health": {"listen": ""},
        "drivers": [{"type": "ocpp", "name": "charge-points", "host": "127.0.0.1", "port": port,
                     "path_prefix": "/ocpp/", "allowed_ids": ["SIM[0-9]{4}"]}],
    })
    gateway = Gateway(config)
    run = asyncio.ensure_future(gateway.run(drain=True))
    await async_wait_for(lambda: gateway.supervisors and gateway.supervisors[0].driver.listening.is_set(),
                         timeout=10, what="driver listening")
    # wall-clock timestamps: the runtime judges lateness by its own clock
    fleet = Fleet(FleetConfig(url=f"ws://127.0.0.1:{port}/ocpp/", version="2.0.1", charge_points=2,
                              connectors=1, fault_probability=0.0, plug_probability=1.0,
                              start_time=time.time() - 30, time_step=2.0))
    await fleet.start()
    await fleet.step(8)
    await fleet.stop()
    expected = fleet.expected
    await async_wait_for(lambda: gateway.supervisors[0].ctx.readings == len(expected), timeout=10,
                         what="readings in the runtime")
    gateway.request_stop()
    summary = await asyncio.wait_for(run, 30)
    assert summary.readings == len(expected) and summary.decode_errors == 0
    windows = [msgspec.to_builtins(w) for d in read_batches(tmp_path / "state" / "batches" / "batches.jsonl.gz")
               for w in d.windows]
    devices = {w["device"] for w in windows}
    assert devices == {"ocpp:SIM0000/1", "ocpp:SIM0001/1"}
    energy = [w for w in windows if w["metric"] == "energy_active_import_register"]
    register = {}
    for e in expected:
        if e.metric == "energy_active_import_register":
            register.setdefault(e.device, []).append(e.value)
    for device, values in register.items():
        mine = sorted((w for w in energy if w["device"] == device), key=lambda w: w["start"])
        assert mine[0]["first"] == min(values) and mine[-1]["last"] == max(values)
        assert all(w["delta"] >= 0 and w.get("resets", 0) == 0 for w in mine)
    assert any("Occupied" in (w.get("durations") or {}) for w in windows)
