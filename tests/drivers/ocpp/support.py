"""A running `ocpp` driver on loopback with a collecting DriverContext."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from drivers.ocpp import Config
from drivers.ocpp.driver import OcppDriver
from gateway.driver import DriverContext
from gateway.model import Event, Reading


@dataclass
class Running:
    driver: OcppDriver
    ctx: DriverContext
    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.driver.port}{self.driver.config.path_prefix}"


@contextlib.asynccontextmanager
async def running_driver(state_dir: Path, **settings: Any) -> AsyncIterator[Running]:
    raw = {"type": "ocpp", "name": "ocpp", "host": "127.0.0.1", "port": 0, **settings}
    raw.setdefault("allowed_ids", ["SIM[0-9]+"])
    config = msgspec.convert(raw, Config)
    assert config.validate() == []
    readings: list[Reading] = []
    events: list[Event] = []
    ctx = DriverContext(
        "ocpp", gateway_id="gw-test", state_dir=state_dir,
        submit=readings.append, submit_event=events.append,
    )
    driver = OcppDriver(config, ctx)
    task = asyncio.ensure_future(driver.run())
    listening = asyncio.ensure_future(driver.listening.wait())
    await asyncio.wait([task, listening], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what stopped it
    assert driver.listening.is_set(), "driver did not start listening"
    try:
        yield Running(driver, ctx, readings, events)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        listening.cancel()


def as_tuples(readings: Any) -> list[tuple[str, str, Any, float]]:
    return sorted((r.device, r.metric, r.value, r.ts) for r in readings)
