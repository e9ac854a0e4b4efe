"""sd_notify(3) over the datagram socket systemd passes in NOTIFY_SOCKET, without libsystemd.

READY=1 once start-up is done (Type=notify), WATCHDOG=1 while the pipeline makes progress
(WatchdogSec), STOPPING=1 on shutdown, STATUS= for `systemctl status`.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, address: str | None = None, watchdog_usec: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        usec = watchdog_usec if watchdog_usec is not None else os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID")
        valid_pid = pid is None or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1e6 if usec.isdigit() and valid_pid else 0.0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):  # abstract namespace socket
            target = "\0" + target[1:]
        try:
            if self._sock is None:
                # Non-blocking: these calls run on the event loop, and a receiver that stops
                # reading (a busy or hung manager, a test) must cost a dropped status line, not
                # a stalled loop. The next WATCHDOG=1 or STATUS= replaces a dropped one.
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto("\n".join(lines).encode(), target)
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
