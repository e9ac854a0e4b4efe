"""The OCPP fleet: charge points (1.6 and 2.0.1) over loopback WebSockets, each on its own
timetable; connections dropped on purpose.

A fleet can hold one share of the city's charge points (`part` of `parts`: every charge point
whose index in its group is `part` modulo `parts`), so that simulators.city.procs can run the
fleet in several processes; identities, seeds and timetable slots stay those of the whole fleet,
so a charge point sends the same in a share as in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from simulators.city.fleet import DeviceGroup
from simulators.city.scenario import ChargePointGroup

__all__ = ["ChargePointFleet", "first_idents", "ident"]

BOOTS_IN_FLIGHT = 64  # handshakes at once: 468 x scale boots at once would collide


def ident(group: int, index: int) -> str:
    """A charge point's identity: its group and its index in the group (SimChargePoint's rule)."""
    return f"CP{group}-{index:04d}"


def first_idents(groups: list[ChargePointGroup], count: int) -> list[str]:
    """The first `count` charge points of the city in fleet order (groups, then indexes): the
    ones a cp_disconnect fault drops, in one process or across several."""
    out: list[str] = []
    for g, group in enumerate(groups):
        for i in range(group.count):
            if len(out) == count:
                return out
            out.append(ident(g, i))
    return out


class ChargePointFleet(DeviceGroup):
    protocol = "ocpp"
    # a step is up to six calls of up to 10 s each (the client's response timeout) when the
    # gateway lags: cancelled mid-call, a reading recorded as sent might never have gone out
    # (scale 30: +75 unexplained with a 15 s wait)
    stop_wait = 70.0

    def __init__(self, groups: list[ChargePointGroup], *, seed: int, part: int = 0, parts: int = 1,
                 boots_in_flight: int = BOOTS_IN_FLIGHT) -> None:
        super().__init__()
        self.groups = groups
        self.seed = seed
        self.part, self.parts = part, parts
        self.boots_in_flight = boots_in_flight
        # (group, the charge point's slot in its group's interval as a fraction, the charge point)
        self.members: list[tuple[ChargePointGroup, float, Any]] = []
        self.drops = 0
        self.reconnects = 0
        self.errors: Counter[str] = Counter()
        self._drop: set[str] = set()
        self.booted = 0
        self.steps = 0  # session steps taken on the timetable
        self.step_readings = 0  # readings those steps sent

    def owns(self, device: str) -> bool:
        return device.startswith("ocpp:")

    def driver_configs(self, port: int) -> list[dict[str, Any]]:  # type: ignore[override]
        if not any(g.count for g in self.groups):
            return []
        return [{"type": "ocpp", "name": "charge-points", "host": "127.0.0.1", "port": port, "path_prefix": "/ocpp/",
                 "allowed_ids": ["CP[0-9]+-[0-9]{4,}"], "heartbeat_interval": 3600, "ping_interval": 0}]

    async def start(self, port: int) -> None:
        await self.boot(port)
        self.run(time.time())

    async def boot(self, port: int) -> None:
        """Make this share's charge points, connect and boot them (bounded in parallel)."""
        from simulators.ocpp.fleet import FleetConfig, SimChargePoint

        for g, group in enumerate(self.groups):
            if not group.count:
                continue
            config = FleetConfig(
                url=f"ws://127.0.0.1:{port}/ocpp/", version=group.version, charge_points=group.count,
                connectors=group.connectors, id_prefix=f"CP{g}-", seed=self.seed + g, start_time=time.time(),
                time_step=group.interval, fault_probability=group.fault_probability, reconnect_delay=0.5,
            )
            for i in range(self.part, group.count, self.parts):
                self.members.append((group, i / group.count, SimChargePoint(config, i)))
        limit = asyncio.Semaphore(self.boots_in_flight)

        async def boot(cp: Any) -> None:
            async with limit:
                try:
                    cp.now = time.time()
                    await cp.start()
                    self.booted += 1
                except Exception as error:  # noqa: BLE001 - counted, the run goes on
                    self.errors[f"boot: {type(error).__name__}"] += 1

        await asyncio.gather(*(boot(cp) for _, _, cp in self.members))

    def run(self, t0: float) -> None:
        """Every charge point on its timetable from wall-clock time `t0`, its slot spread over its
        group's interval."""
        loop = asyncio.get_running_loop()
        start = loop.time() + (t0 - time.time())
        for group, slot, cp in self.members:
            self.tasks.append(asyncio.create_task(self._run_cp(cp, group.interval, start + group.interval * slot)))

    @property
    def charge_point_list(self) -> list[Any]:
        return [cp for _, _, cp in self.members]

    async def _run_cp(self, cp: Any, interval: float, start: float) -> None:
        loop = asyncio.get_running_loop()
        k = 0
        while not self.stopping.is_set():
            delay = start + k * interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)  # the charge point's timetable
                if self.stopping.is_set():
                    return
            else:
                self.pace.note(-delay)
            cp.now = time.time() - cp.config.time_step  # step() adds time_step: stamp the wall clock
            connects = cp.connects
            before = len(cp.expected)
            try:
                await cp.step()
            except Exception as error:  # noqa: BLE001 - counted; the charge point carries on
                self.errors[f"step: {type(error).__name__}"] += 1
            self.steps += 1
            self.step_readings += len(cp.expected) - before
            self.reconnects += cp.connects - connects
            if cp.ident in self._drop:
                self._drop.discard(cp.ident)
                with contextlib.suppress(Exception):
                    await cp.drop()
                self.drops += 1
            k += 1

    def proc_facts(self) -> dict[str, Any]:
        """For the report: the charge points ran in the runner's own process."""
        return {"processes": 1}

    def disconnect(self, count: int) -> None:
        """The first `count` charge points of the city drop their connection after their current
        step (between messages, so nothing is half sent); their next message reconnects."""
        self.drop(first_idents(self.groups, count))

    def drop(self, idents: Iterable[str]) -> None:
        """These charge points (the ones of this share among them) drop after their current step."""
        mine = {cp.ident for cp in self.charge_point_list}
        self._drop.update(i for i in idents if i in mine)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for cp in self.charge_point_list:
            for expected in cp.expected:
                out[expected.device] += 1
        return out

    def nominal_rate(self) -> float:
        """Steps due per second times the readings a step sent on average in this run (what a
        step sends depends on the connectors' simulated sessions)."""
        if not self.steps:
            return 0.0
        return sum(1 / group.interval for group, _, _ in self.members) * self.step_readings / self.steps

    @property
    def charge_points(self) -> int:
        return len(self.members)

    async def close(self) -> None:
        await self.stop_sending()
        await asyncio.gather(*(cp.stop() for cp in self.charge_point_list), return_exceptions=True)


def steps_per_second(groups: list[ChargePointGroup]) -> float:
    """Session steps the city's charge points take per second on their timetables."""
    return sum(g.count / g.interval for g in groups if g.count)
