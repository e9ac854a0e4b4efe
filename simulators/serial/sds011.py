"""An SDS011 particulate sensor on a pty: active reporting or query mode, as the real one.

Answers the host's 19-byte commands (reporting mode, query data; other commands get the
reply frame with their data echoed) and, in active mode, sends a data frame every `period`.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from drivers.serial import sds011
from simulators.serial.faults import Faults
from simulators.serial.pty import PtyDevice

__all__ = ["Sds011Sim"]


class Sds011Sim(PtyDevice):
    def __init__(
        self,
        link: str | Path | None = None,
        *,
        mode: str = "active",
        period: float = 1.0,
        device_id: int = 0xA160,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(link)
        self.query_mode = mode == "query"
        self.period = period
        self.device_id = device_id
        self.faults = faults or Faults()
        self.frames_sent = 0  # data frames written (after fault injection: not dropped)
        self.good_frames_sent = 0  # of those, unharmed
        self.commands = 0
        self._buffer = bytearray()
        self._n = 0

    def reading(self) -> tuple[float, float]:
        n = self._n
        pm2_5 = round(8.0 + 4.0 * math.sin(n / 10), 1)
        return pm2_5, round(pm2_5 * 1.6 + 2.0, 1)

    def _send_data(self) -> None:
        pm2_5, pm10 = self.reading()
        self._n += 1
        frame = sds011.build_data_frame(self.device_id, pm2_5, pm10)
        corrupted = self.faults.corrupted
        out = self.faults.apply(frame, corrupt_at=3)
        if out and self.port.write(out):
            self.frames_sent += 1
            if self.faults.corrupted == corrupted:
                self.good_frames_sent += 1

    def _on_data(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            start = buffer.find(bytes((sds011.HEAD, sds011.COMMAND)))
            if start < 0:
                buffer.clear()
                return
            del buffer[:start]
            if len(buffer) < sds011.COMMAND_LENGTH:
                return
            frame = bytes(buffer[: sds011.COMMAND_LENGTH])
            del buffer[: sds011.COMMAND_LENGTH]
            if frame[-1] != sds011.TAIL or sds011.checksum(frame[2:17]) != frame[17]:
                continue  # the real sensor ignores a bad command
            self.commands += 1
            self._command(frame[2], frame[3:15])

    def _command(self, command: int, data: bytes) -> None:
        if command == sds011.Command.QUERY_DATA:
            self._send_data()
            return
        if command == sds011.Command.REPORTING_MODE and data[0] == 1:
            self.query_mode = data[1] == 1
        reply = sds011.build_reply_frame(self.device_id, command, data[:3])
        out = self.faults.apply(reply, corrupt_at=3)
        self.port.write(out)

    async def _talk(self) -> None:
        while True:
            if not self.query_mode and self.port.plugged:
                self._send_data()
            await asyncio.sleep(self.period)  # the sensor's own reporting period
