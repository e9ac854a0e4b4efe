"""A serial port that can be unplugged: a pty pair behind a stable symlink.

The gateway opens `link` (like a udev /dev/serial/by-id/... link); the simulator reads and
writes the master side. `unplug()` closes the pair and removes the link, so the gateway's
reads fail with EIO, exactly like a USB adapter pulled out; `replug()` makes a new pair and
points the link at it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from pathlib import Path

__all__ = ["PtyDevice", "PtyPort"]


class PtyPort:
    """Master side of a pty pair, read on the event loop (non-blocking fd, `add_reader`)."""

    def __init__(self, link: str | Path | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self.master: int | None = None
        self._slave: int | None = None
        self.slave_path = ""
        self._on_data: Callable[[bytes], None] | None = None
        self.bytes_written = 0
        self.plugged = False

    @property
    def path(self) -> str:
        """What the gateway opens: the link if there is one, else the pty slave itself."""
        return str(self.link) if self.link is not None else self.slave_path

    def open(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        master, slave = os.openpty()
        # Raw from the start: no echo, no CR/LF translation before the gateway configures it.
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_path)
            tmp.replace(self.link)  # atomic: the link is never half made
        asyncio.get_running_loop().add_reader(master, self._readable)
        self.plugged = True

    def _readable(self) -> None:
        if self.master is None:
            return
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # EIO: the gateway side closed; our slave fd keeps the pair alive
        if data and self._on_data is not None:
            self._on_data(data)

    def write(self, data: bytes) -> int:
        """Write to the gateway; returns bytes written (0 while unplugged)."""
        if self.master is None or not data:
            return 0
        view = memoryview(data)
        written = 0
        while written < len(data):
            try:
                written += os.write(self.master, view[written:])
            except BlockingIOError:
                break  # the gateway is not reading; a real UART would drop bytes too
            except OSError:
                break
        self.bytes_written += written
        return written

    def close(self) -> None:
        if self.master is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
            self.master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        self.plugged = False

    def unplug(self) -> None:
        """The cable is pulled: pair closed, link removed."""
        self.close()
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def replug(self) -> None:
        """The cable is back: a new pair, the same link path."""
        assert self._on_data is not None, "replug() after open()"
        self.open(self._on_data)


class PtyDevice:
    """A simulated UART device on a `PtyPort`: it answers what the host writes (`_on_data`)
    and may talk by itself on its own schedule (`_talk`); the cable can be pulled and put back."""

    def __init__(self, link: str | Path | None = None) -> None:
        self.port = PtyPort(link)
        self._task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return self.port.path

    def _on_data(self, data: bytes) -> None:
        raise NotImplementedError

    async def _talk(self) -> None:
        """The device's own messages (active or automatic mode); answering only by default."""

    async def start(self) -> None:
        self.port.open(self._on_data)
        self._task = asyncio.create_task(self._talk())

    def unplug(self) -> None:
        self.port.unplug()

    def replug(self) -> None:
        self.port.replug()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.port.close()
