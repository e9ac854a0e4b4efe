"""Sessions of the line-oriented UART sensors: SDS011 (binary frames) and WXT5xx (ASCII).

Both read through `SerialLine` (pyserial in a reader thread) and run in active/automatic mode
(the device talks by itself; silence longer than a timeout is a miss) or query/polled mode
(the gateway asks on a fixed grid; no answer within the timeout is a miss).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drivers.serial import sds011, wxt
from drivers.serial.config import Config, Sds011Settings, WxtSettings
from drivers.serial.errors import SerialDecodeError
from drivers.serial.health import DeviceHealth
from drivers.serial.session import Session
from drivers.serial.transport import SerialLine, open_line
from gateway.driver import DriverContext

__all__ = ["Sds011Session", "WxtSession"]

# An offline UART device is still listened to / asked on its own schedule: the line is
# dedicated to it, so there is no bus time to save and no separate probe backoff.
_NO_BACKOFF = (1.0, 1.0)


class _LineSession(Session):
    async def _open(self) -> SerialLine:
        config = self.config
        line = await open_line(
            config.port,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
        )
        self.on_open()
        return line

    async def serve(self) -> None:
        line = await self._open()
        try:
            await self.talk(line)
        finally:
            await line.close()

    async def talk(self, line: SerialLine) -> None:
        raise NotImplementedError

    def _handle(self, chunk: bytes) -> int:
        """Decode what arrived; the number of readings it gave."""
        raise NotImplementedError

    async def _ask(self, line: SerialLine, request: bytes, answer_within: float) -> int:
        """One polled exchange: drop stale bytes, send the request, read until an answer decodes
        or `answer_within` seconds pass. Returns the readings the answer gave (0: no answer)."""
        loop = asyncio.get_running_loop()
        self._handle(line.drain())
        await line.write(request)
        deadline = loop.time() + answer_within
        answered = 0
        while not answered:
            left = deadline - loop.time()
            if left <= 0:
                break
            chunk = await line.read(left)
            if chunk:
                answered = self._handle(chunk)
        return answered


class Sds011Session(_LineSession):
    def __init__(self, config: Config, ctx: DriverContext, on_open: Callable[[], None]) -> None:
        super().__init__(config, ctx, on_open)
        settings = config.protocol_settings()
        assert isinstance(settings, Sds011Settings)
        self.settings = settings
        self.splitter = sds011.FrameSplitter()

    def _handle(self, chunk: bytes) -> int:
        """Frames in a chunk -> readings; returns how many data frames were good."""
        good = 0
        ts = self.ctx.clock()
        for item in self.splitter.feed(chunk):
            if isinstance(item, SerialDecodeError):
                self.bad_data(item)
            elif isinstance(item, sds011.DataFrame):
                health = self._health(item.device_id)
                self.ctx.emit_many(sds011.readings(item, health.device, ts))
                self.answered(health, ts)
                good += 1
            else:
                self.ctx.count("sds011_replies")
        return good

    def _health(self, device_id: int) -> DeviceHealth:
        return self.health(self.device(f"{device_id:04x}"), self.settings.offline_after, _NO_BACKOFF)

    def _silence(self, reason: str) -> None:
        ts = self.ctx.clock()
        if not self.healths:
            self.ctx.count("silence_before_first_frame")
        for health in self.healths.values():
            self.missed(health, ts, reason)

    async def talk(self, line: SerialLine) -> None:
        settings = self.settings
        query = settings.mode == "query"
        self.splitter = sds011.FrameSplitter()
        if settings.set_mode:
            await line.write(sds011.set_reporting_mode(query))
        loop = asyncio.get_running_loop()
        if not query:
            # A miss is silence_timeout without a good frame: noise alone keeps no one online.
            quiet_since = loop.time()
            while True:
                left = quiet_since + settings.silence_timeout - loop.time()
                if left <= 0:
                    self._silence("silence")
                    quiet_since = loop.time()
                    continue
                chunk = await line.read(left)
                if chunk and self._handle(chunk):
                    quiet_since = loop.time()
        due = loop.time()
        while True:
            answered = await self._ask(line, sds011.query_data(), settings.timeout)
            if not answered:
                self._silence("no_response")
            due += settings.query_interval
            now = loop.time()
            if due < now:
                due = now
            await asyncio.sleep(due - now)


class WxtSession(_LineSession):
    def __init__(self, config: Config, ctx: DriverContext, on_open: Callable[[], None]) -> None:
        super().__init__(config, ctx, on_open)
        settings = config.protocol_settings()
        assert isinstance(settings, WxtSettings)
        self.settings = settings
        self.station = self.health(self.device(settings.address), settings.offline_after, _NO_BACKOFF)
        self.lines = wxt.LineSplitter()

    def _handle(self, chunk: bytes) -> int:
        """Lines in a chunk -> readings; returns how many messages from our station decoded."""
        good = 0
        for item in self.lines.feed(chunk):
            if isinstance(item, SerialDecodeError):
                self.bad_data(item)
                continue
            ts = self.ctx.clock()
            try:
                message = wxt.decode_line(item, self.port, ts)
            except SerialDecodeError as error:
                self.bad_data(error)
                continue
            if message.address != self.settings.address:
                self.ctx.count("wxt_other_address")
                continue
            if message.invalid:
                self.ctx.count("wxt_invalid_fields", message.invalid)
            for problem in message.problems:
                self.bad_data(problem)
            self.ctx.emit_many(message.readings)
            self.answered(self.station, ts)
            good += 1
        return good

    async def talk(self, line: SerialLine) -> None:
        settings = self.settings
        self.lines = wxt.LineSplitter()
        loop = asyncio.get_running_loop()
        if settings.mode == "automatic":
            quiet_since = loop.time()
            while True:
                left = quiet_since + settings.timeout - loop.time()
                if left <= 0:
                    self.missed(self.station, self.ctx.clock(), "silence")
                    quiet_since = loop.time()
                    continue
                chunk = await line.read(left)
                if chunk and self._handle(chunk):
                    quiet_since = loop.time()
        command = wxt.poll_command(settings.address, "0", use_crc=settings.use_crc)
        due = loop.time()
        while True:
            answered = await self._ask(line, command, settings.timeout)
            if not answered:
                self.missed(self.station, self.ctx.clock(), "no_response")
            due += settings.poll_interval
            now = loop.time()
            if due < now:
                due = now
            await asyncio.sleep(due - now)
