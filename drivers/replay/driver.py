"""Plays recorded readings: field-data replays, demos, and load for tests and benchmarks."""

from __future__ import annotations

import asyncio
import time

from drivers.replay import Config
from drivers.replay.records import ReplayDecodeError, iter_records
from gateway.driver import Driver
from gateway.model import Reading

__all__ = ["ReplayDriver"]

# Readings handed to the windows between two yields to the event loop at full speed.
_CHUNK = 512


class ReplayDriver(Driver[Config]):
    type_name = "replay"

    async def run(self) -> None:
        while True:
            await self._play_once()
            if not self.config.loop:
                self.ctx.log.info("replay_finished", path=self.config.path, readings=self.ctx.readings)
                await asyncio.Event().wait()  # done; idle until the gateway stops
            self.ctx.count("loops")

    async def _play_once(self) -> None:
        speed = self.config.speed
        keep_ts = self.config.timestamps == "original"
        first_ts: float | None = None
        wall_start = time.monotonic()
        play_start = self.ctx.clock()
        emitted = 0
        for item in iter_records(self.config.path):
            if isinstance(item, ReplayDecodeError):
                self.ctx.decode_error(item, line=item.line)
                continue
            device, metric, value, ts = item
            if first_ts is None:
                first_ts = ts
            offset = ts - first_ts
            if speed > 0:
                due = wall_start + offset / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif emitted % _CHUNK == 0:
                await asyncio.sleep(0)
            event_ts = ts if keep_ts else (play_start + offset / speed if speed > 0 else self.ctx.clock())
            self.ctx.emit(Reading(device, metric, value, event_ts))
            emitted += 1
