"""Serial I/O for the line-oriented sessions: the port is read by the event loop itself.

The port's descriptor is registered with the loop's `add_reader` (epoll on Linux), so reading
never blocks the loop, needs no thread, and works for a descriptor above 1023, which select()
-- and so pyserial's own `read()` -- cannot take (issue 12). Writes are non-blocking and wait
for `add_writer` when the kernel's buffer is full. Opening stays in a thread: opening a tty can
block on a wedged adapter. A read error (EIO when a USB adapter is unplugged or a pty's master
closes) surfaces as `PortUnavailable` from the next `read()` or `write()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import serial

from drivers.serial.errors import PortUnavailable
from drivers.serial.protocol_pollfd import PollSerial

__all__ = ["SerialLine", "open_line"]


_LOST = object()
_READ_SIZE = 4096


class SerialLine:
    """An open port: `await read(timeout)` returns the next chunk of bytes (b"" on timeout)."""

    def __init__(self, port: PollSerial, path: str) -> None:
        self._port = port
        self.path = path
        self._fd: int = port.fileno()
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[Any] = asyncio.Queue()
        self._lost: BaseException | str | None = None
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = self._port.read(_READ_SIZE)  # timeout 0: what is there, never waits
        except (serial.SerialException, OSError) as error:
            self._lose(error)
            return
        if data:
            self._chunks.put_nowait(data)

    def _lose(self, why: BaseException | str) -> None:
        if self._lost is None:
            self._lost = why
            self._loop.remove_reader(self._fd)
            self._chunks.put_nowait(_LOST)

    async def read(self, wait: float | None = None) -> bytes:
        """Next chunk; b"" when `wait` seconds pass first; PortUnavailable once the port is gone."""
        try:
            if wait is None:
                item = await self._chunks.get()
            else:
                item = await asyncio.wait_for(self._chunks.get(), wait)
        except TimeoutError:
            return b""
        if item is _LOST:
            self._chunks.put_nowait(_LOST)  # every later read fails the same way
            raise PortUnavailable(self.path, f"read failed ({self._lost})")
        return bytes(item)

    def drain(self) -> bytes:
        """Whatever arrived and was not read yet (discarded before a new request)."""
        out = bytearray()
        while not self._chunks.empty():
            item = self._chunks.get_nowait()
            if item is _LOST:
                self._chunks.put_nowait(_LOST)
                break
            out += item
        return bytes(out)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while True:
            if self._lost is not None:
                raise PortUnavailable(self.path, f"write on a lost port ({self._lost})")
            try:
                view = view[self._port.write(view) :]  # write_timeout 0: never waits
            except (serial.SerialException, OSError) as error:
                self._lose(error)
                raise PortUnavailable(self.path, f"write failed ({error})") from error
            if not view:
                return
            await self._writable()

    async def _writable(self) -> None:
        """Until the kernel takes more bytes (a slow baud rate filled its buffer)."""
        ready: asyncio.Future[None] = self._loop.create_future()

        def _wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._fd, _wake)
        try:
            await ready
        finally:
            self._loop.remove_writer(self._fd)

    async def close(self) -> None:
        if self._lost is None:
            self._lost = "closed"
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(Exception):
            self._port.close()


async def open_line(
    path: str, *, baudrate: int, bytesize: int, parity: str, stopbits: int
) -> SerialLine:
    """Open the port in a thread (opening a tty can block on a wedged adapter)."""

    def _open() -> PollSerial:
        return PollSerial(
            path,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )

    try:
        port = await asyncio.to_thread(_open)
    except (serial.SerialException, OSError, ValueError) as error:
        raise PortUnavailable(path, f"cannot open ({error})") from error
    return SerialLine(port, path)
