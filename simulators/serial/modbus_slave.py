"""A Modbus RTU slave bus on a pty: a real pymodbus 3.16 serial server, several units.

pymodbus's server opens a serial *path*, so the bus is two pty pairs joined by a relay: the
server owns one pair's slave side, the gateway opens the other pair's slave side (the `link`).
The relay is also where the cable can be unplugged. Register values change on every read
(a slow sine on temperature, a ramp on humidity) and can be set by tests.

Fault injection (per unit, in the server's `trace_packet` hook, on the real answer frames):
bad CRC, garbage before the answer, dropped answers, silence, and late answers (`late`: the
next answers of a unit go out that many seconds later, after the gateway's timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.serial.protocol_pollfd import pollfd_url
from simulators.serial.faults import Faults
from simulators.serial.pty import PtyPort

__all__ = ["ModbusBusSim", "SimUnit", "xy_md02"]

BLOCK = 128  # registers 0..127 of every unit, shared by function codes 3 and 4


@dataclass
class SimUnit:
    """One slave: fixed registers plus a per-read update (the sensor 'measuring')."""

    unit: int
    registers: dict[int, int] = field(default_factory=dict)
    model: str = "xy_md02"  # "xy_md02" changes temperature/humidity; "static" keeps values
    faults: Faults = field(default_factory=Faults)
    reads: int = 0  # requests answered (before fault injection)

    def measure(self) -> None:
        if self.model != "xy_md02":
            return
        n = self.reads
        temperature = 21.0 + 3.0 * math.sin(n / 20)  # degC
        humidity = 40.0 + (n % 200) / 10  # %RH
        self.registers[1] = round(temperature * 10) & 0xFFFF  # int16, 0.1 degC
        self.registers[2] = round(humidity * 10)  # uint16, 0.1 %RH

    def value(self, metric: str) -> float:
        """The value the current registers mean for the XY-MD02 map (tests compare)."""
        raw = self.registers.get({"temperature": 1, "humidity": 2}[metric], 0)
        if metric == "temperature" and raw >= 0x8000:
            raw -= 0x10000
        return raw / 10


def xy_md02(unit: int) -> SimUnit:
    return SimUnit(unit=unit)


class _Relay:
    """Moves bytes between the gateway's pty and the server's pty."""

    def __init__(self, gateway: PtyPort, device: PtyPort) -> None:
        self.gateway = gateway
        self.device = device

    def to_device(self, data: bytes) -> None:
        self.device.write(data)

    def to_gateway(self, data: bytes) -> None:
        self.gateway.write(data)


class ModbusBusSim:
    """`await start()`, point the gateway at `path`, `await stop()`."""

    def __init__(self, units: list[SimUnit], link: str | Path | None = None) -> None:
        self.units = {u.unit: u for u in units}
        self.gateway_side = PtyPort(link)
        self.device_side = PtyPort()
        self.server: ModbusSerialServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.answers_sent = 0
        # unit -> delays (s) for its next answers, one per answer, first first
        self.late: dict[int, list[float]] = {}

    @property
    def path(self) -> str:
        return self.gateway_side.path

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        sim = self.units[unit]
        sim.measure()
        sim.reads += 1
        for reg, value in sim.registers.items():
            index = reg - start_address
            if 0 <= index < len(registers):
                registers[index] = value & 0xFFFF
        return None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        unit = self.units.get(data[0])
        if unit is None:
            return b""  # no such unit on the bus: nobody answers (not an exception frame)
        out = unit.faults.apply(data, corrupt_at=3)
        if out:
            self.answers_sent += 1
            delays = self.late.get(unit.unit)
            if delays:
                # past the server: straight onto the gateway's line, later
                asyncio.get_running_loop().call_later(delays.pop(0), self.gateway_side.write, out)
                return b""
        return out

    async def start(self) -> None:
        pymodbus_logger = logging.getLogger("pymodbus")
        if pymodbus_logger.level == logging.NOTSET:
            pymodbus_logger.setLevel(logging.CRITICAL)  # unknown units are silence, not errors
        relay = _Relay(self.gateway_side, self.device_side)
        self.device_side.open(relay.to_gateway)
        self.gateway_side.open(relay.to_device)
        devices = [
            SimDevice(
                id=unit,
                simdata=[SimData(0, count=BLOCK, values=0, datatype=DataType.REGISTERS)],
                action=partial(self._action, unit),
            )
            for unit in self.units
        ]
        self.server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            # pyserial's select() read fails above descriptor 1023; the gateway's no-select
            # port class works here too (a simulator run next to 1,000+ sockets)
            port=pollfd_url(self.device_side.slave_path),
            baudrate=9600,
            ignore_missing_devices=True,
            trace_packet=self._trace,
        )
        self._task = asyncio.create_task(self.server.serve_forever())
        # serve_forever opens the server's port; wait for it so a request is never lost.
        for _ in range(500):
            if self.server.transport is not None:
                break
            await asyncio.sleep(0.01)  # poll step while pymodbus opens its port

    def unplug(self) -> None:
        self.gateway_side.unplug()

    def replug(self) -> None:
        self.gateway_side.replug()

    async def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.gateway_side.close()
        self.device_side.close()
