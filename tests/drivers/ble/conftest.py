"""Fixtures: a private mock BlueZ with simulated tags, and a BLE driver reading it via bleak."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.ble import Config
from gateway.driver import DriverContext
from gateway.model import Event, Reading
from simulators.ble import BleSimulator, SimTag


class TickingClock:
    """Strictly increasing event times inside one window, so `last` is well defined."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.ctx = DriverContext(
            "ble", gateway_id="gw-test", state_dir=tmp_path / "state",
            submit=self.readings.append, submit_event=self.events.append, clock=TickingClock(),
        )
        self.task: asyncio.Task[None] | None = None
        self.driver: Any = None

    def start(self, **config: Any) -> None:
        from drivers.ble.driver import BleDriver

        settings = Config(type="ble", name="ble", **config)
        assert settings.validate() == []
        self.driver = BleDriver(settings, self.ctx)
        self.task = asyncio.create_task(self.driver.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def of(self, mac: str, metric: str | None = None) -> list[Reading]:
        device = "ble:" + mac
        return [r for r in self.readings if r.device == device and (metric is None or r.metric == metric)]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
async def simulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await simulator(tags, **options)` -> a started BleSimulator on a private bus."""
    started: list[BleSimulator] = []

    async def make(tags: list[SimTag], **options: Any) -> BleSimulator:
        sim = BleSimulator(tags, **options)
        await sim.start()
        started.append(sim)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.address)
        return sim

    try:
        yield make
    finally:
        for sim in started:
            await sim.stop()
    # A failed advertisement is counted by the simulator, never silent: no test may have any.
    assert [dict(sim.errors) for sim in started] == [{} for _ in started]
