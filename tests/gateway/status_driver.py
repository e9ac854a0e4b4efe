"""A test driver that reports the status of `connectors` connectors once, then stays quiet."""

from __future__ import annotations

import asyncio

from gateway.driver import Driver, DriverSettings
from gateway.model import Reading


class Config(DriverSettings):
    connectors: int = 0


class StatusDriver(Driver[Config]):
    async def run(self) -> None:
        now = self.ctx.clock()
        for i in range(self.config.connectors):
            self.ctx.emit(Reading(f"ocpp:CP-{i}/1", "connector_status", "Available", now))
        await asyncio.Event().wait()


def load_driver() -> type[StatusDriver]:
    return StatusDriver
