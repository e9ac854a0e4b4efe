"""Serial I/O: a pyserial port whose blocking reads run in a thread of their own.

The event loop never reads the port: a reader thread blocks in `read()` and hands each chunk
to the loop with `call_soon_threadsafe`; writes go through `asyncio.to_thread`. A read error
(EIO when a USB adapter is unplugged or a pty's master closes) ends the thread and surfaces as
`PortUnavailable` from the next `read()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import serial

from drivers.serial.errors import PortUnavailable

__all__ = ["SerialLine", "open_line"]


_LOST = object()


class SerialLine:
    """An open port: `await read(timeout)` returns the next chunk of bytes (b"" on timeout)."""

    def __init__(self, port: Any, path: str) -> None:
        self._port = port
        self.path = path
        self._loop = asyncio.get_running_loop()
        self._chunks: asyncio.Queue[Any] = asyncio.Queue()
        self._closing = False
        self._lost: BaseException | None = None
        self._thread = threading.Thread(
            target=self._reader, name=f"serial-read {path}", daemon=True
        )
        self._thread.start()

    def _reader(self) -> None:
        port = self._port
        try:
            while not self._closing:
                data = port.read(1)  # blocks until a byte or cancel_read()
                if self._closing:
                    break
                waiting = port.in_waiting
                if waiting:
                    data += port.read(waiting)
                if data:
                    self._loop.call_soon_threadsafe(self._chunks.put_nowait, data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as error:
            # TypeError/AttributeError: pyserial's fd gone under a concurrent close().
            if not self._closing:
                self._lost = error
        finally:
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                self._loop.call_soon_threadsafe(self._chunks.put_nowait, _LOST)

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
            raise PortUnavailable(self.path, f"read failed ({self._lost or 'closed'})")
        return item

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
        if self._lost is not None or not self._thread.is_alive():
            raise PortUnavailable(self.path, f"write on a lost port ({self._lost})")
        try:
            await asyncio.to_thread(self._write, data)
        except (serial.SerialException, OSError) as error:
            raise PortUnavailable(self.path, f"write failed ({error})") from error

    def _write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            self._port.cancel_read()
        await asyncio.to_thread(self._thread.join, 2.0)
        with contextlib.suppress(Exception):
            self._port.close()


async def open_line(
    path: str, *, baudrate: int, bytesize: int, parity: str, stopbits: int
) -> SerialLine:
    """Open the port in a thread (opening a tty can block on a wedged adapter)."""

    def _open() -> Any:
        return serial.Serial(
            path,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            timeout=None,
            exclusive=True,
        )

    try:
        port = await asyncio.to_thread(_open)
    except (serial.SerialException, OSError, ValueError) as error:
        raise PortUnavailable(path, f"cannot open ({error})") from error
    return SerialLine(port, path)
