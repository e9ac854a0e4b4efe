"""pyserial without select(): a port whose descriptor may be above 1023.

pyserial's POSIX `Serial.read()` (and its blocking `write()`) wait in `select()`, which cannot
take a descriptor >= FD_SETSIZE (1024): once a gateway holds ~1,000 sockets (OCPP charge
points), a serial port opened or reopened gets such a descriptor and every read raises
ValueError (issue 12). `PollSerial` keeps pyserial's port set-up (termios, exclusive lock,
RS-485 ioctls) and reads and writes with non-blocking `os.read`/`os.write`, waiting in
`poll()` only when a timeout asks it to wait; the event loop reads it with `add_reader`
(epoll), which has no such ceiling either.

pymodbus opens its port through `serial.serial_for_url()`, so `pollfd_url(path)` hands it a
`pollfd://<path>` URL: pyserial's documented URL-handler hook (`protocol_handler_packages`,
a module named `protocol_<scheme>` in a listed package, which is why this module has its name)
turns it back into `path` opened with `PollSerial`.
"""

from __future__ import annotations

import os
import select
import time
from typing import Any

import serial

__all__ = ["SCHEME", "PollSerial", "pollfd_url", "register", "serial_class_for_url"]

SCHEME = "pollfd"
_PREFIX = f"{SCHEME}://"
_FAILED = select.POLLERR | select.POLLHUP | select.POLLNVAL


class PollSerial(serial.Serial):  # type: ignore[misc]  # pyserial ships no type hints
    """`serial.Serial` whose reads and writes never call select().

    `timeout=0` / `write_timeout=0` (how pymodbus and the UART transport use it) never waits;
    a positive or `None` timeout waits in poll(). A read that finds the device gone (EIO, or
    POLLHUP/POLLERR after an empty read) raises `serial.SerialException`, as pyserial's own
    read does, so callers see one error type for an unplugged adapter.
    """

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise serial.PortNotOpenError()
        out = bytearray()
        deadline = _deadline(self.timeout)
        while len(out) < size:
            try:
                chunk = os.read(self.fd, size - len(out))
            except BlockingIOError:
                chunk = b""
            except OSError as error:  # EIO: the adapter or the pty's other side is gone
                raise serial.SerialException(f"read failed: {error}") from error
            if chunk:
                out += chunk
                continue
            # A raw tty (VMIN=0, VTIME=0) reads 0 bytes both when it has nothing yet and after
            # a hang-up (USB adapter unplugged); only poll() tells them apart.
            self._raise_if_hung_up()
            if not self._wait(select.POLLIN, self.pipe_abort_read_r, deadline):
                break
        return bytes(out)

    def _raise_if_hung_up(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        for _fd, happened in poller.poll(0):
            if happened & _FAILED:
                raise serial.SerialException("read failed: device disconnected (poll)")

    def write(self, data: Any) -> int:
        if not self.is_open:
            raise serial.PortNotOpenError()
        view = memoryview(bytes(data))
        written = 0
        deadline = _deadline(self.write_timeout)
        while written < len(view):
            try:
                written += os.write(self.fd, view[written:])
                continue
            except BlockingIOError:
                pass
            except OSError as error:
                raise serial.SerialException(f"write failed: {error}") from error
            if deadline == 0.0:
                break  # non-blocking: the caller retries the rest when writable
            if not self._wait(select.POLLOUT, self.pipe_abort_write_r, deadline):
                if deadline is not None and time.monotonic() >= deadline:
                    raise serial.SerialTimeoutException("Write timeout")
                break  # cancel_write()
        return written

    def _wait(self, event: int, abort_fd: int, deadline: float | None) -> bool:
        """Wait for `event` on the port; False on timeout or when cancelled through `abort_fd`
        (pyserial's cancel_read()/cancel_write() pipes)."""
        if deadline == 0.0:
            return False
        poller = select.poll()
        poller.register(self.fd, event)
        poller.register(abort_fd, select.POLLIN)
        while True:
            if deadline is None:
                wait_ms = None
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait_ms = max(1, int(left * 1000))
            for fd, _happened in poller.poll(wait_ms):
                if fd == abort_fd:
                    os.read(abort_fd, 1000)
                    return False
                return True  # ready, or hung up: the next read or write says which


def _deadline(timeout: float | None) -> float | None:
    """None: wait forever; 0.0: never wait; else the monotonic time to give up at."""
    if timeout is None:
        return None
    if timeout == 0:
        return 0.0
    return time.monotonic() + timeout


def pollfd_url(path: str) -> str:
    """The URL under which `serial.serial_for_url()` (pymodbus) opens `path` with PollSerial."""
    register()
    return _PREFIX + path


def register() -> None:
    """Add this package to pyserial's URL-handler search list (idempotent)."""
    package = __name__.rpartition(".")[0]
    if package not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(package)


def serial_class_for_url(url: str) -> tuple[str, type[PollSerial]]:
    """pyserial's URL-handler entry point: `pollfd://<path>` -> (`<path>`, PollSerial).

    The path is taken verbatim (no URL parsing), so `?` or `#` in a by-id link survive."""
    if not url.lower().startswith(_PREFIX):
        raise serial.SerialException(f"expected {_PREFIX}<path>, got {url!r}")
    return url[len(_PREFIX) :], PollSerial
