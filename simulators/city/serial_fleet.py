"""The serial fleet: Modbus RTU buses of XY-MD02 units, SDS011 and WXT sensors on pty pairs; cables
pulled and plugged back; frames corrupted on purpose."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from simulators.city.fleet import DeviceGroup
from simulators.city.scenario import SerialGroup
from simulators.city.ttys import drain, open_ttys

__all__ = ["SerialFleet", "SerialPort", "kind_sends_by_itself"]


@dataclass
class SerialPort:
    """One simulated device (or Modbus bus) on its pty pair, with the scenario group it came from."""

    kind: str  # "modbus", "sds011" or "wxt"
    group: SerialGroup
    sim: Any  # ModbusBusSim, Sds011Sim or WxtSim


@cache
def wxt_readings() -> int:
    """Readings one composite message carries: the fields the simulated station sends with a
    valid value (its own record, not the gateway's decoder: a decoder that drops a field shows
    as unexplained)."""
    from simulators.serial.wxt import WxtSim

    return sum(1 for _, _, unit in WxtSim().fields() if unit != "#")


def kind_sends_by_itself(kind: str) -> bool:
    return kind in ("sds011", "wxt")


class SerialFleet(DeviceGroup):
    protocol = "serial"

    def __init__(self, groups: list[SerialGroup], devdir: Path) -> None:
        super().__init__()
        self.groups = groups
        self.devdir = devdir
        self.ports: list[SerialPort] = []
        self.corrupt_rate = 0.0
        self.in_flight: Counter[str] = Counter()

    def owns(self, device: str) -> bool:
        return device.startswith("serial:")

    async def start(self) -> None:
        from simulators.serial import ModbusBusSim, Sds011Sim, SimUnit, WxtSim

        self.devdir.mkdir(parents=True, exist_ok=True)
        for g, group in enumerate(self.groups):
            for p in range(group.ports):
                link = self.devdir / f"{group.kind}-{g}-{p}"
                sim: Any
                if group.kind == "modbus":
                    sim = ModbusBusSim([SimUnit(unit=u) for u in range(1, group.units_per_port + 1)], link=link)
                elif group.kind == "sds011":
                    sim = Sds011Sim(link, mode="active", period=group.interval, device_id=0xA000 + p % 0x1000)
                else:
                    sim = WxtSim(link, mode="automatic", period=group.interval)
                if kind_sends_by_itself(group.kind):
                    sim.faults.silent = True  # quiet until the gateway holds the port (hold_until_open)
                await sim.start()
                self.ports.append(SerialPort(group.kind, group, sim))

    async def hold_until_open(self, pid: int, within: float = 15.0, sims: list[Any] | None = None) -> None:
        """Active senders (SDS011, WXT) stay silent until the gateway process has their pty open
        (seen in /proc/<pid>/fd), so no frame is written before anyone listens."""
        chosen = self.ports if sims is None else [p for p in self.ports if p.sim in sims]
        waiting = {p.sim for p in chosen if kind_sends_by_itself(p.kind)}
        deadline = asyncio.get_running_loop().time() + within
        while waiting:
            opened = open_ttys(pid)
            for sim in [s for s in waiting if s.port.slave_path in opened]:
                sim.faults.silent = False
                sim.faults.dropped = 0
                waiting.discard(sim)
            if not waiting or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)  # poll step while the gateway opens its ports
        for sim in waiting:  # never opened: let it send anyway, the report shows the loss
            sim.faults.silent = False

    def driver_configs(self) -> list[dict[str, Any]]:
        out = []
        for port in self.ports:
            kind, group, sim = port.kind, port.group, port.sim
            name = f"serial-{Path(sim.path).name}"
            table: dict[str, Any] = {"type": "serial", "name": name, "port": sim.path, "protocol": kind,
                                     "reopen_backoff_initial": 0.2, "reopen_backoff_max": 2.0}
            if kind == "modbus":
                table["modbus"] = {"timeout": 0.5, "retries": 2, "offline_after": 3, "offline_backoff_initial": 1.0,
                                   "offline_backoff_max": 5.0,
                                   "devices": [{"unit": u, "interval": group.interval, "map": "xy_md02"}
                                               for u in sorted(sim.units)]}
            elif kind == "sds011":
                table["sds011"] = {"mode": "active", "silence_timeout": max(10.0, 3 * group.interval), "set_mode": False}
            else:
                table["wxt"] = {"mode": "automatic", "timeout": max(10.0, 3 * group.interval)}
            out.append(table)
        return out

    def set_corruption(self, rate: float) -> None:
        # WXT lines carry no checksum in automatic mode: a flipped byte may still parse, so it is
        # never corrupted on purpose (its losses would have no exact count).
        for port in self.ports:
            kind, sim = port.kind, port.sim
            if kind == "modbus":
                for unit in sim.units.values():
                    unit.faults.corrupt = rate
            elif kind == "sds011":
                sim.faults.corrupt = rate

    async def stop_sending(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        for port in self.ports:  # every device falls silent (answers nothing, sends nothing)
            kind, sim = port.kind, port.sim
            if kind == "modbus":
                for unit in sim.units.values():
                    unit.faults.silent = True
            else:
                sim.faults.silent = True

    def unplug(self, ports: int) -> list[Any]:
        """Pull the first `ports` cables. Bytes the devices had written that the gateway had not
        read yet go down with the cable: they are taken out of the tty first and counted as
        readings in flight when unplugged (a named loss)."""
        pulled = []
        for port in self.ports[:ports]:
            kind, sim = port.kind, port.sim
            side = sim.gateway_side if kind == "modbus" else sim.port
            pending = drain(side.slave_path) if side.plugged else b""
            self._count_in_flight(kind, sim, pending)
            sim.unplug()
            pulled.append(sim)
        return pulled

    def replug(self, pulled: list[Any], pid: int) -> None:
        """Cables back. A device that sends by itself stays quiet until the gateway has reopened
        the port (its reopen backoff), as at start-up: the books count frames someone could hear."""
        for port in self.ports:
            kind, sim = port.kind, port.sim
            if sim in pulled:
                if kind_sends_by_itself(kind):
                    sim.faults.silent = True
                sim.replug()
        self.tasks.append(asyncio.create_task(self.hold_until_open(pid, sims=pulled)))

    def _count_in_flight(self, kind: str, sim: Any, pending: bytes) -> None:
        base = Path(sim.path).name
        if not pending:
            return
        if kind == "modbus":
            # answers of the XY-MD02 map: unit, 0x04, 4 data bytes follow (9 bytes with the CRC)
            at = 0
            while at + 9 <= len(pending):
                if pending[at + 1] == 0x04 and pending[at + 2] == 4 and pending[at] in sim.units:
                    self.in_flight[f"serial:{base}/{pending[at]}"] += 2
                    at += 9
                else:
                    at += 1
        elif kind == "sds011":
            self.in_flight[f"serial:{base}/{sim.device_id:04x}"] += 2 * pending.count(b"\xaa\xc0")
        else:
            self.in_flight[f"serial:{base}/{sim.address}"] += wxt_readings() * pending.count(b"\n")

    def lost_in_flight(self) -> Counter[str]:
        return Counter(self.in_flight)

    def sent(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for port in self.ports:
            kind, sim = port.kind, port.sim
            base = Path(sim.path).name
            if kind == "modbus":
                for unit in sim.units.values():
                    good = unit.reads - unit.faults.corrupted - unit.faults.dropped
                    out[f"serial:{base}/{unit.unit}"] += 2 * good  # xy_md02: temperature, humidity
            elif kind == "sds011":
                out[f"serial:{base}/{sim.device_id:04x}"] += 2 * sim.frames_sent
            else:
                out[f"serial:{base}/{sim.address}"] += wxt_readings() * sim.messages_sent
        return out

    def damaged(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for port in self.ports:
            kind, sim = port.kind, port.sim
            if kind == "sds011":
                out[f"serial:{Path(sim.path).name}/{sim.device_id:04x}"] += 2 * (sim.frames_sent - sim.good_frames_sent)
        return out

    def nominal_rate(self) -> float:
        per_report = {"modbus": 2, "sds011": 2}  # XY-MD02: temperature, humidity; SDS011: PM2.5, PM10
        return sum((p.group.units_per_port if p.kind == "modbus" else 1) * per_report.get(p.kind, wxt_readings())
                   / p.group.interval for p in self.ports)

    def retried(self) -> int:
        """Modbus answers damaged on purpose: the driver retries them, so no reading is lost."""
        return sum(u.faults.corrupted for p in self.ports if p.kind == "modbus" for u in p.sim.units.values())

    async def close(self) -> None:
        for port in self.ports:
            sim = port.sim
            with contextlib.suppress(Exception):
                await sim.stop()
