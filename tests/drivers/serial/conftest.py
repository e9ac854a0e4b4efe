"""Shared pieces of the serial driver tests: a collecting DriverContext, a running driver,
and the aggregator the end-to-end tests feed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from drivers.serial import Config
from drivers.serial.driver import SerialDriver
from gateway.batch import WindowRecord
from gateway.driver import DriverContext
from gateway.model import Event, Reading
from gateway.windows import Aggregator, finalize


class RecordingLog:
    """Stands in for the structlog logger: keeps (level, message, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str, message: str, **fields: Any) -> None:
        self.lines.append((level, message, fields))

    def debug(self, message: str, **fields: Any) -> None:
        self._log("debug", message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self._log("info", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._log("warning", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log("error", message, **fields)

    def bind(self, **_: Any) -> RecordingLog:
        return self

    def count(self, level: str, contains: str) -> int:
        return sum(1 for lv, msg, _ in self.lines if lv == level and contains in msg)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.readings: list[Reading] = []
        self.events: list[Event] = []
        self.log = RecordingLog()
        self.ctx = DriverContext(
            "serial",
            gateway_id="gw-test",
            state_dir=tmp_path / "state",
            submit=self.readings.append,
            submit_event=self.events.append,
            logger=self.log,
        )

    def of(self, device: str, metric: str) -> list[Reading]:
        return [r for r in self.readings if r.device == device and r.metric == metric]

    def statuses(self, device: str) -> list[str]:
        return [str(e.value) for e in self.events if e.device == device and e.name == "sensor_status"]

    def windows(self, window: int = 60) -> list[WindowRecord]:
        """Every collected reading through the real aggregator, all windows closed."""
        aggregator = Aggregator(window=window, grace=0.0, max_lateness=3600.0)
        for reading in self.readings:
            aggregator.add(reading)
        result = aggregator.flush_all()
        return [
            finalize(device, metric, start, window, acc)
            for start, (device, metric), acc in result.closed
        ]


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def make_config(**raw: Any) -> Config:
    raw.setdefault("type", "serial")
    raw.setdefault("name", "serial-test")
    config = msgspec.convert(raw, Config, strict=True)
    assert config.validate() == []
    return config


@contextlib.asynccontextmanager
async def running(config: Config, harness: Harness) -> AsyncIterator[SerialDriver]:
    driver = SerialDriver(config, harness.ctx)
    task = asyncio.create_task(driver.run())
    try:
        yield driver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
