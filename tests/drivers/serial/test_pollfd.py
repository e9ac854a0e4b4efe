"""PollSerial on real ptys: pyserial's semantics (timeouts, cancel, disconnect) without select(),
and the `pollfd://` URL through pyserial's own `serial_for_url()` (the way pymodbus opens it)."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Iterator

import pytest
import serial

from drivers.serial.protocol_pollfd import PollSerial, pollfd_url, serial_class_for_url

pytestmark = pytest.mark.timeout(30)


class Pty:
    """A pty pair whose slave side only the port under test holds (by path)."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        self.path = os.ttyname(slave)
        os.close(slave)
        self.open = True

    def hang_up(self) -> None:
        """The other side goes away, like a USB adapter pulled out."""
        if self.open:
            os.close(self.master)
            self.open = False


@pytest.fixture
def pty_pair() -> Iterator[Pty]:
    pty = Pty()
    try:
        yield pty
    finally:
        pty.hang_up()


def readable(fd: int, timeout: float = 5.0) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def open_port(path: str, **options: object) -> PollSerial:
    return PollSerial(path, baudrate=9600, **options)


def test_non_blocking_read_returns_what_is_there(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    port = open_port(path, timeout=0)
    try:
        assert port.read(100) == b""
        os.write(master, b"abc")
        assert readable(port.fileno())  # the line discipline hands bytes over asynchronously
        assert port.read(100) == b"abc"
    finally:
        port.close()


def test_read_with_timeout_waits_for_the_bytes(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    port = open_port(path, timeout=5)
    try:
        os.write(master, b"0123456789")
        assert port.read(10) == b"0123456789"
    finally:
        port.close()


def test_read_timeout_expires_with_a_partial_answer(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    port = open_port(path, timeout=0.2)
    try:
        os.write(master, b"xy")
        started = time.monotonic()
        assert port.read(10) == b"xy"
        assert time.monotonic() - started >= 0.19  # waited the whole timeout for the rest
    finally:
        port.close()


def test_cancel_read_ends_a_blocking_read(pty_pair: Pty) -> None:
    path = pty_pair.path
    port = open_port(path, timeout=None)
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(port.read(1)))
    reader.start()
    try:
        # cancel until the read has returned: a cancel before it polls is consumed by it too
        deadline = time.monotonic() + 5
        while reader.is_alive() and time.monotonic() < deadline:
            port.cancel_read()
            reader.join(0.05)
        assert result == [b""]
    finally:
        port.close()


@pytest.mark.parametrize("timeout", [0, 1.0, None])  # a blocking read must not hang either
def test_hang_up_raises_serial_exception(pty_pair: Pty, timeout: float | None) -> None:
    port = open_port(pty_pair.path, timeout=timeout)
    try:
        pty_pair.hang_up()
        with pytest.raises(serial.SerialException):
            port.read(10)
        with pytest.raises(serial.SerialException):
            port.write(b"x")
    finally:
        port.close()


def test_write_non_blocking_and_blocking(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    port = open_port(path, timeout=0, write_timeout=0)
    try:
        assert port.write(b"hello") == 5
        port.write_timeout = 2
        assert port.write(b" world") == 6
        got = b""
        while got != b"hello world" and readable(master):
            got += os.read(master, 100)
        assert got == b"hello world"
    finally:
        port.close()


def test_url_opens_poll_serial_through_pyserial(pty_pair: Pty) -> None:
    master, path = pty_pair.master, pty_pair.path
    url = pollfd_url(path)
    assert url == f"pollfd://{path}"
    port = serial.serial_for_url(url, baudrate=9600, timeout=2)
    try:
        assert isinstance(port, PollSerial)
        assert port.port == path
        os.write(master, b"ok")
        assert port.read(2) == b"ok"
    finally:
        port.close()


def test_url_path_is_taken_verbatim() -> None:
    assert serial_class_for_url("pollfd:///dev/serial/by-id/usb-x?y#z") == (
        "/dev/serial/by-id/usb-x?y#z",
        PollSerial,
    )
    with pytest.raises(serial.SerialException):
        serial_class_for_url("alt:///dev/ttyUSB0")
