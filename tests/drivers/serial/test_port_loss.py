"""USB unplug and replug, emulated by removing the port's symlink with its pty pair and
re-creating it at the same path pointing to a new pair; and the loop never blocks on a read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from simulators.serial import ModbusBusSim, Sds011Sim, WxtSim, xy_md02
from tests.drivers.serial.conftest import Harness, make_config, running
from tests.support.wait import async_wait_for

pytestmark = pytest.mark.timeout(60)


def _modbus(tmp_path: Path) -> tuple[Any, Any, str]:
    sim = ModbusBusSim([xy_md02(1)], link=tmp_path / "ttyUSB0")
    config = make_config(
        port=sim.path,
        protocol="modbus",
        reopen_backoff_initial=0.05,
        reopen_backoff_max=0.2,
        modbus={"timeout": 0.15, "retries": 0, "devices": [{"unit": 1, "interval": 0.05, "map": "xy_md02"}]},
    )
    return sim, config, "serial:ttyUSB0/1"


def _sds011(tmp_path: Path) -> tuple[Any, Any, str]:
    sim = Sds011Sim(tmp_path / "ttyUSB0", period=0.05)
    config = make_config(
        port=sim.path,
        protocol="sds011",
        reopen_backoff_initial=0.05,
        reopen_backoff_max=0.2,
        sds011={"silence_timeout": 5.0},
    )
    return sim, config, "serial:ttyUSB0/a160"


def _wxt(tmp_path: Path) -> tuple[Any, Any, str]:
    sim = WxtSim(tmp_path / "ttyUSB0", mode="polled")
    config = make_config(
        port=sim.path,
        protocol="wxt",
        reopen_backoff_initial=0.05,
        reopen_backoff_max=0.2,
        wxt={"poll_interval": 0.05, "timeout": 0.3},
    )
    return sim, config, "serial:ttyUSB0/0"


@pytest.mark.parametrize("make", [_modbus, _sds011, _wxt], ids=["modbus", "sds011", "wxt"])
async def test_unplug_replug_same_path(tmp_path: Path, harness: Harness, make: Any) -> None:
    sim, config, device = make(tmp_path)
    await sim.start()
    metric = {"modbus": "temperature", "sds011": "pm2_5", "wxt": "temperature"}[config.protocol]
    try:
        async with running(config, harness) as driver:
            await async_wait_for(lambda: len(harness.of(device, metric)) >= 3, timeout=10)
            sim.unplug()
            await async_wait_for(lambda: harness.ctx.counters.get("port_lost") == 1, timeout=10)
            assert harness.statuses(device) == ["offline"]
            # several reopen attempts fail while the link is gone: still logged once
            await async_wait_for(
                lambda: harness.ctx.counters.get("port_reopen_failures", 0) >= 3, timeout=10
            )
            before = len(harness.of(device, metric))
            sim.replug()
            await async_wait_for(lambda: harness.ctx.counters.get("port_reopened") == 1, timeout=10)
            await async_wait_for(lambda: len(harness.of(device, metric)) >= before + 3, timeout=10)
            assert driver.opened.is_set()
    finally:
        await sim.stop()
    assert harness.statuses(device) == ["offline", "ok"]
    assert harness.log.count("warning", "port_unavailable") == 1
    assert harness.log.count("info", "port_reopened") == 1


async def test_port_missing_at_start_is_retried(tmp_path: Path, harness: Harness) -> None:
    sim, config, device = _wxt(tmp_path)
    async with running(config, harness):
        await async_wait_for(
            lambda: harness.ctx.counters.get("port_reopen_failures", 0) >= 2, timeout=10
        )
        await sim.start()
        try:
            await async_wait_for(lambda: harness.of(device, "temperature"), timeout=10)
        finally:
            await sim.stop()
    assert harness.ctx.counters["port_lost"] == 1


async def test_event_loop_never_blocks_on_reads(tmp_path: Path, harness: Harness) -> None:
    """A ticker on the loop measures the longest gap between its wake-ups while two drivers
    read ports that are mostly silent: a blocking read would stall it for a whole timeout
    (5 s on the WXT line, 0.3 s per Modbus request); scheduling noise on a loaded CI machine
    stays well under the 1 s bound."""
    wxt_sim = WxtSim(tmp_path / "ttyA", mode="automatic", period=0.5)
    bus = ModbusBusSim([xy_md02(1)], link=tmp_path / "ttyB")
    await wxt_sim.start()
    await bus.start()
    wxt_config = make_config(port=wxt_sim.path, protocol="wxt", wxt={"mode": "automatic", "timeout": 5.0})
    # unit 2 never answers: every poll waits a 0.3 s timeout
    bus_config = make_config(
        port=bus.path,
        protocol="modbus",
        name="bus",
        modbus={"timeout": 0.3, "retries": 0, "offline_after": 100,
                "devices": [{"unit": 2, "interval": 0.05, "map": "xy_md02"}]},
    )
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)  # the probe's own period
            now = loop.time()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    try:
        async with running(wxt_config, harness), running(bus_config, harness):
            await async_wait_for(lambda: harness.ctx.counters.get("misses", 0) >= 4, timeout=10)
    finally:
        task.cancel()
        await wxt_sim.stop()
        await bus.stop()
    assert max(gaps) < 1.0, max(gaps)
