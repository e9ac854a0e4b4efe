"""paho's network loop in a thread of its own, waiting in poll(2) instead of select(2).

paho's `loop_start()` waits in `select.select`, which cannot take a descriptor of 1024 or more
(FD_SETSIZE): a gateway serving a thousand charge points opens its uplink's socket above that,
and paho then reports the connection lost on every attempt, for ever (found at scale 20 of the
reference city; issue 12, "no descriptor ceiling"). This loop drives the same client through
paho's public external-loop API (`socket()`, `want_write()`, `loop_read()`, `loop_write()`,
`loop_misc()` and the `on_socket_register_write` callback) and waits with `poll`, which has no
such limit. Like `loop_start()` it runs paho's callbacks in its thread; the uplink posts them
to the event loop as before.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["PollLoop"]

# Longest wait between two `loop_misc()` calls (keepalive PINGREQ, timeouts), seconds.
_TICK = 1.0


class PollLoop:
    """Start after `client.connect()`; `stop()` once `client.disconnect()` was called (or the
    connection is to be dropped): it wakes the thread and joins it."""

    def __init__(self, client: mqtt.Client, *, name: str = "mqtt-uplink") -> None:
        self.client = client
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        # paho calls this (from the publishing thread) when it has queued bytes to send
        client.on_socket_register_write = self._wake

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Blocking: call it from a worker thread, not the event loop."""
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with contextlib.suppress(OSError):
            os.close(self._wake_r)
        with contextlib.suppress(OSError):
            os.close(self._wake_w)

    def _wake(self, *_: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 512):
                pass

    def _run(self) -> None:
        client = self.client
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        registered: int | None = None
        try:
            while not self._stopping.is_set() or client.want_write():
                sock = client.socket()
                if sock is None:
                    return  # closed (disconnected): nothing more to drive
                fd = sock.fileno()
                if fd < 0:
                    return
                mask = select.POLLIN | (select.POLLOUT if client.want_write() else 0)
                if registered != fd:
                    if registered is not None:
                        with contextlib.suppress(KeyError, ValueError, OSError):
                            poller.unregister(registered)
                    poller.register(fd, mask)
                    registered = fd
                else:
                    poller.modify(fd, mask)
                for ready, events in poller.poll(_TICK * 1000):
                    if ready == self._wake_r:
                        self._drain_wakeups()
                        continue
                    if events & (select.POLLIN | select.POLLERR | select.POLLHUP):
                        client.loop_read()
                        # TLS: bytes already decrypted in the SSL object raise no poll event
                        pending = getattr(client.socket(), "pending", None)
                        while pending is not None and pending() and client.socket() is not None:
                            client.loop_read()
                    if events & select.POLLOUT and client.socket() is not None:
                        client.loop_write()
                if client.socket() is not None:
                    client.loop_misc()
                if self._stopping.is_set() and not client.want_write():
                    return
        except (OSError, ValueError):
            return  # the socket went away under us: paho reported the disconnect
