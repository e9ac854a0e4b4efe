"""Modbus RTU polling of several devices on one bus, through pymodbus's asyncio client.

pymodbus 3.16 (minor pinned): `AsyncModbusSerialClient` reads the port with the loop's
`add_reader` (non-blocking, never a blocking read on the loop), then calls the pyserial port's
`read()`; pyserial's own read uses select(), which fails for a descriptor above 1023, so the
port is opened through a `pollfd://` URL as `PollSerial` (see protocol_pollfd). pymodbus's
own retries and reconnects are switched off (`retries=0`, `reconnect_delay=0`): attempts,
misses and port reopening are decided here, so a silent device costs one attempt per probe and
the port is reopened by the driver's backoff.

One request at a time on the bus (serial line spec 2.1: single master, one outstanding
request). Devices are served earliest-due first; an online device stays on its interval grid;
an offline one is probed after a doubling backoff, so it takes at most one timeout of bus time
per probe and the others keep their intervals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from drivers.serial.config import Config, ModbusDevice, ModbusSettings
from drivers.serial.errors import ModbusExceptionResponse, PortUnavailable, SerialDecodeError
from drivers.serial.health import DeviceHealth
from drivers.serial.modbus_codec import ReadBlock, classify_garbled, decode_block, plan_reads
from drivers.serial.protocol_pollfd import pollfd_url
from drivers.serial.session import Session
from gateway.driver import DriverContext
from gateway.model import CATALOG, Reading, register_forwarded

__all__ = ["ModbusSession"]


class _Miss(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _Polled:
    """A device's schedule: its reads, its health and when it is due (loop time)."""

    __slots__ = ("unit", "interval", "blocks", "health", "due", "forwarded")

    def __init__(self, device: ModbusDevice, health: DeviceHealth) -> None:
        self.unit = device.unit
        self.interval = device.interval
        self.blocks: list[ReadBlock] = plan_reads(device.all_registers())
        # registers mapped to x_ names: registered once (the config's [metrics] row, else a
        # gauge without unit), counted per reading as unknown_metric_forwarded
        self.forwarded = frozenset(
            f.metric for block in self.blocks for f in block.fields if f.metric not in CATALOG
        )
        for name in self.forwarded:
            register_forwarded(name)
        self.health = health
        self.due = 0.0


def _quiet_pymodbus() -> None:
    """pymodbus logs every unanswered request at ERROR; misses are counted and logged once
    here instead. An operator who configured the `pymodbus` logger keeps their level."""
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class ModbusSession(Session):
    def __init__(self, config: Config, ctx: DriverContext, on_open: Callable[[], None]) -> None:
        super().__init__(config, ctx, on_open)
        settings = self.config.protocol_settings()
        assert isinstance(settings, ModbusSettings)
        self.settings = settings
        backoff = (settings.offline_backoff_initial, settings.offline_backoff_max)
        self.devices = [
            _Polled(d, self.health(self.device(str(d.unit)), settings.offline_after, backoff))
            for d in settings.devices
        ]
        self._received = b""
        self.requests = 0  # requests sent, for the benchmark and tests
        # RTU answers carry no transaction id: a unit that answers a request after the timeout
        # (already retried, or given up on) puts that answer on the bus while the next request
        # is out, and it would pass for the next answer. After a miss the bus is left quiet for
        # one timeout before the next request; pymodbus empties its receive buffer as it sends.
        self._quiet_until = 0.0
        _quiet_pymodbus()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._received = bytes(data)  # pymodbus passes its whole receive buffer
        return data

    async def serve(self) -> None:
        config = self.config
        client = AsyncModbusSerialClient(
            pollfd_url(config.port),  # read without select(): the port's fd may be > 1023
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
            timeout=self.settings.timeout,
            retries=0,
            reconnect_delay=0,
            name=f"serial:{self.port}",
            trace_packet=self._trace,
        )
        if not await client.connect():
            client.close()
            raise PortUnavailable(config.port, "cannot open")
        self.on_open()
        loop = asyncio.get_running_loop()
        now = loop.time()
        for polled in self.devices:
            polled.due = now
        try:
            while True:
                polled = min(self.devices, key=lambda p: p.due)
                wait = polled.due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not client.connected:
                    raise PortUnavailable(config.port, "port closed under the client")
                await self._poll(client, polled)
                now = loop.time()
                if polled.health.online:
                    polled.due += polled.interval
                    if polled.due < now:  # the bus was late: poll once now, then the grid
                        polled.due = now
                else:
                    polled.due = now + polled.health.probe_delay()
        finally:
            client.close()

    async def _poll(self, client: AsyncModbusSerialClient, polled: _Polled) -> None:
        health = polled.health
        attempts = 1 + self.settings.retries if health.online else 1
        readings = []
        try:
            for block in polled.blocks:
                registers = await self._read(client, polled.unit, block, attempts, health.device)
                decoded, problems = decode_block(block, registers, health.device, self.ctx.clock())
                readings.extend(decoded)
                for problem in problems:
                    self.bad_data(problem)
        except _Miss as miss:
            self.missed(health, self.ctx.clock(), miss.reason)
            return
        except ModbusExceptionResponse as error:
            # Alive but refusing (wrong register map?): counted per exception code, and the
            # readings of the blocks read before still count.
            self.bad_data(error)
            ts = self.ctx.clock()
            back = health.success(ts)
            if back is not None:
                self.ctx.event(back)
            self.ctx.emit_many(readings)
            self._count_forwarded(polled, readings)
            self.ctx.emit(Reading(health.device, "sensor_status", "error", ts))
            return
        self.ctx.emit_many(readings)
        self._count_forwarded(polled, readings)
        self.answered(health, self.ctx.clock())

    def _count_forwarded(self, polled: _Polled, readings: list[Reading]) -> None:
        if polled.forwarded:
            n = sum(1 for r in readings if r.metric in polled.forwarded)
            if n:
                self.ctx.count("unknown_metric_forwarded", n)

    async def _read(
        self,
        client: AsyncModbusSerialClient,
        unit: int,
        block: ReadBlock,
        attempts: int,
        device: str,
    ) -> list[int]:
        reason = "no_response"
        loop = asyncio.get_running_loop()
        missed = False
        for _ in range(attempts):
            if not client.connected:
                raise PortUnavailable(self.config.port, "port closed under the client")
            quiet = self._quiet_until - loop.time()
            if quiet > 0:
                await asyncio.sleep(quiet)  # a late answer to an earlier request lands now
            self._received = b""
            self.requests += 1
            try:
                if block.function == 3:
                    response = await client.read_holding_registers(
                        block.address, count=block.count, device_id=unit
                    )
                else:
                    response = await client.read_input_registers(
                        block.address, count=block.count, device_id=unit
                    )
            except ConnectionException as error:
                raise PortUnavailable(self.config.port, str(error)) from error
            except ModbusIOException:
                reason = classify_garbled(self._received)
                self.ctx.count("timeouts")
                if reason != "no_response":
                    self.bad_data(SerialDecodeError(reason, self._received.hex(), device=device))
                missed = True
                self._quiet_until = loop.time() + self.settings.timeout
                continue
            if response.isError():
                raise ModbusExceptionResponse(
                    response.exception_code, function=block.function, device=device
                )
            registers = list(response.registers)
            if response.function_code != block.function or len(registers) != block.count:
                # the answer to another request (late, see _quiet_until): never decoded as this one
                self.bad_data(SerialDecodeError(
                    "bad_length" if response.function_code == block.function else "wrong_function",
                    f"function {response.function_code}, {len(registers)} registers; asked function "
                    f"{block.function}, {block.count} registers", device=device))
                reason = "bad_length"
                missed = True
                self._quiet_until = loop.time() + self.settings.timeout
                continue
            if missed:
                # an earlier attempt may still be answered: keep the bus quiet for it
                self._quiet_until = loop.time() + self.settings.timeout
            return registers
        raise _Miss(reason)

