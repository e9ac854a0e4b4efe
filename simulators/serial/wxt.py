"""A Vaisala WXT5xx station on a pty: answers aR0/ar0 polls, or sends composite messages by
itself every `period` (automatic mode). Field set and unit characters are configurable, so
tests can exercise imperial units and `#` invalid markers."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

from drivers.serial import wxt
from simulators.serial.faults import Faults
from simulators.serial.pty import PtyDevice

__all__ = ["WxtSim"]


class WxtSim(PtyDevice):
    def __init__(
        self,
        link: str | Path | None = None,
        *,
        address: str = "0",
        mode: str = "polled",
        period: float = 1.0,
        imperial: bool = False,
        invalid: frozenset[str] = frozenset(),
        faults: Faults | None = None,
    ) -> None:
        super().__init__(link)
        self.address = address
        self.automatic = mode == "automatic"
        self.period = period
        self.imperial = imperial
        self.invalid = set(invalid)  # field codes sent with the '#' marker
        self.faults = faults or Faults()
        self.messages_sent = 0
        self.polls = 0
        self._buffer = bytearray()
        self._n = 0

    def fields(self) -> list[tuple[str, float, str]]:
        """(code, value, unit) of the next composite message."""
        n = self._n
        speed = 3.0 + 1.5 * math.sin(n / 7)
        temperature = 12.0 + 2.0 * math.sin(n / 30)
        rows = [
            ("Dn", 180.0, "D"),
            ("Dm", 200.0 + (n % 20), "D"),
            ("Dx", 240.0, "D"),
            ("Sn", round(speed - 1, 1), "M"),
            ("Sm", round(speed, 1), "M"),
            ("Sx", round(speed + 2, 1), "M"),
            ("Ta", round(temperature, 1), "C"),
            ("Ua", 60.0, "P"),
            ("Pa", 1013.2, "H"),
            ("Rc", round(0.01 * n, 2), "M"),
            ("Rd", float(10 * n), "s"),
            ("Ri", 0.0, "M"),
            ("Th", round(temperature + 1, 1), "C"),
            ("Vh", 12.0, "N"),
            ("Vs", 12.1, "V"),
        ]
        if self.imperial:
            converted: dict[str, Callable[[float], tuple[float, str]]] = {
                "Sm": lambda v: (round(v / 0.44704, 1), "S"),
                "Ta": lambda v: (round(v * 9 / 5 + 32, 1), "F"),
                "Pa": lambda v: (round(v * 100 / 3386.389, 2), "I"),
                "Rc": lambda v: (round(v / 25.4, 3), "I"),
            }
            rows = [(c, *converted[c](v)) if c in converted else (c, v, u) for c, v, u in rows]
        return [(c, v, "#" if c in self.invalid else u) for c, v, u in rows]

    def message(self, use_crc: bool = False) -> bytes:
        parts = [f"{self.address}{'r' if use_crc else 'R'}0"]
        for code, value, unit in self.fields():
            text = f"{int(value)}" if unit in ("s",) else f"{value:.1f}" if value == round(value, 1) else f"{value:g}"
            if code in ("Dn", "Dm", "Dx"):
                text = f"{int(value):03d}"
            parts.append(f"{code}={text}{unit}")
        body = ",".join(parts)
        if use_crc:
            body = wxt.with_crc(body)
        self._n += 1
        return (body + "\r\n").encode("ascii")

    def _send(self, use_crc: bool = False) -> None:
        out = self.faults.apply(self.message(use_crc), corrupt_at=8)
        if out and self.port.write(out):
            self.messages_sent += 1

    def _on_data(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).strip().decode("ascii", "replace")
            del self._buffer[: end + 1]
            if line[:1] != self.address:
                continue  # addressed to another station on the RS-485 line
            command = line[1:]
            if command.startswith("R0"):
                self.polls += 1
                self._send()
            elif command.startswith("r0") and wxt.crc(line[:-3].encode()) == line[-3:]:
                self.polls += 1
                self._send(use_crc=True)

    async def _talk(self) -> None:
        while True:
            if self.automatic and self.port.plugged:
                self._send()
            await asyncio.sleep(self.period)  # the station's own message interval
