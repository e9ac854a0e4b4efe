"""What every fleet of the city shares: its books (readings sent, damaged on purpose, lost in
flight, unheard), its part of the gateway config, and the timetable its senders keep.

A fleet sends on an absolute timetable spread evenly over each interval, so it does not fire in
bursts, and notes how far behind that timetable it ran (its own saturation).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DERIVED_METRICS", "DeviceGroup", "Pace", "every"]

# Readings the gateway derives itself (not sent by any device): left out of the books.
DERIVED_METRICS = frozenset({"sensor_status"})


@dataclass
class Pace:
    """How far behind its timetable a sender ran (seconds): the simulators' own saturation."""

    worst_lag: float = 0.0

    def note(self, lag: float) -> None:
        if lag > self.worst_lag:
            self.worst_lag = lag


async def every(interval: float, slots: int, send: Callable[[int], Awaitable[None]], stop: asyncio.Event,
                pace: Pace) -> None:
    """Call send(i) for i in 0..slots-1, spread evenly over `interval`, until `stop`."""
    loop = asyncio.get_running_loop()
    step = interval / max(1, slots)
    start = loop.time()
    k = 0
    while not stop.is_set():
        for i in range(slots):
            due = start + k * step
            delay = due - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)  # the devices' timetable
                if stop.is_set():
                    return
            else:
                pace.note(-delay)
            await send(i)
            k += 1


class DeviceGroup:
    """Base of the fleets: `protocol` names the line of the report."""

    protocol = ""
    # s a sender may take to finish the message it is on when the devices stop
    stop_wait = 15.0

    def __init__(self) -> None:
        self.pace = Pace()
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    def sent(self) -> Counter[str]:
        """Readings sent, by device."""
        raise NotImplementedError

    def damaged(self) -> Counter[str]:
        """Readings inside frames damaged on purpose, by device."""
        return Counter()

    def lost_in_flight(self) -> Counter[str]:
        """Readings on the wire when a fault cut it (a serial cable pulled), by device."""
        return Counter()

    def not_scanning(self) -> Counter[str]:
        """Readings sent while the gateway's receiver was not listening (BLE advertisements
        routed while its scanner had no discovery session), by device."""
        return Counter()

    def driver_configs(self) -> list[dict[str, Any]]:
        return []

    def nominal_rate(self) -> float:
        """Readings per second the scenario prescribes for this fleet (its devices on their
        intervals), against which what arrived is compared."""
        return 0.0

    def owns(self, device: str) -> bool:
        raise NotImplementedError

    def label(self, device: str) -> str:
        """The report line a device belongs to."""
        return self.protocol

    async def stop_sending(self) -> None:
        """Senders finish the message they are on (a cancelled call would leave a reading
        counted as sent that never went out), then stop."""
        self.stopping.set()
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=self.stop_wait)
            for task in late:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def close(self) -> None:
        await self.stop_sending()
