"""A test driver that fails its first runs, then emits readings: exercises supervision."""

from __future__ import annotations

import asyncio

from gateway.driver import Driver, DriverSettings
from gateway.model import Event, Reading, Severity


class Config(DriverSettings):
    failures: int = 2
    readings: int = 5


class FlakyDriver(Driver[Config]):
    runs = 0

    async def run(self) -> None:
        type(self).runs += 1
        if type(self).runs <= self.config.failures:
            raise OSError("USB adapter vanished")
        now = self.ctx.clock()
        for i in range(self.config.readings):
            self.ctx.emit(Reading("test:flaky/1", "temperature", float(i), now))
        self.ctx.event(Event(device="test:flaky/1", ts=now, name="sensor_alarm", severity=Severity.ALARM))
        await asyncio.Event().wait()


def load_driver() -> type[FlakyDriver]:
    return FlakyDriver
