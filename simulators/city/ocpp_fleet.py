"""The OCPP fleet: charge points (1.6 and 2.0.1) over loopback WebSockets, each on its own
timetable; connections dropped on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from simulators.city.fleet import DeviceGroup
from simulators.city.scenario import ChargePointGroup

__all__ = ["ChargePointFleet"]


class ChargePointFleet(DeviceGroup):
    protocol = "ocpp"

    def __init__(self, groups: list[ChargePointGroup], *, seed: int) -> None:
        super().__init__()
        self.groups = groups
        self.seed = seed
        self.fleets: list[Any] = []
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
        from simulators.ocpp.fleet import Fleet, FleetConfig

        for g, group in enumerate(self.groups):
            if not group.count:
                continue
            config = FleetConfig(
                url=f"ws://127.0.0.1:{port}/ocpp/", version=group.version, charge_points=group.count,
                connectors=group.connectors, id_prefix=f"CP{g}-", seed=self.seed + g, start_time=time.time(),
                time_step=group.interval, fault_probability=group.fault_probability, reconnect_delay=0.5,
            )
            fleet = Fleet(config)
            self.fleets.append((group, fleet))
        # connect and boot in bounded parallel so 468 x scale handshakes do not all collide
        limit = asyncio.Semaphore(64)

        async def boot(cp: Any) -> None:
            async with limit:
                try:
                    cp.now = time.time()
                    await cp.start()
                    self.booted += 1
                except Exception as error:  # noqa: BLE001 - counted, the run goes on
                    self.errors[f"boot: {type(error).__name__}"] += 1

        await asyncio.gather(*(boot(cp) for _, fleet in self.fleets for cp in fleet.charge_points))
        for group, fleet in self.fleets:
            cps = fleet.charge_points
            for i, cp in enumerate(cps):
                offset = group.interval * i / len(cps)
                self.tasks.append(asyncio.create_task(self._run_cp(cp, group.interval, offset)))

    async def _run_cp(self, cp: Any, interval: float, offset: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + offset
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

    def disconnect(self, count: int) -> None:
        """The next `count` charge points drop their connection after their current step (between
        messages, so nothing is half sent); their next message reconnects."""
        cps = [cp for _, fleet in self.fleets for cp in fleet.charge_points]
        for cp in cps[:count]:
            self._drop.add(cp.ident)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for _, fleet in self.fleets:
            for cp in fleet.charge_points:
                for expected in cp.expected:
                    out[expected.device] += 1
        return out

    def nominal_rate(self) -> float:
        """Steps due per second times the readings a step sent on average in this run (what a
        step sends depends on the connectors' simulated sessions)."""
        if not self.steps:
            return 0.0
        per_step = self.step_readings / self.steps
        return sum(len(fleet.charge_points) / group.interval for group, fleet in self.fleets) * per_step

    @property
    def charge_points(self) -> int:
        return sum(len(f.charge_points) for _, f in self.fleets)

    async def close(self) -> None:
        await self.stop_sending()
        for _, fleet in self.fleets:
            with contextlib.suppress(Exception):
                await fleet.stop()
