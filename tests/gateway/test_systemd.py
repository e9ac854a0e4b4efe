"""sd_notify without libsystemd: a receiver that stops reading never stalls the gateway."""

from __future__ import annotations

import socket
from pathlib import Path

from gateway.systemd import Notifier


def test_a_receiver_that_stops_reading_drops_lines_instead_of_blocking(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        notifier = Notifier(str(path), "1000000")
        try:
            # far more datagrams than the socket queues (net.unix.max_dgram_qlen, 512 by
            # default): a blocking send would hang here for good once the queue is full
            sent = [notifier.notify("WATCHDOG=1") for _ in range(5000)]
        finally:
            notifier.close()
        assert sent[0] is True and sent.count(False) > 0
        assert receiver.recv(64) == b"WATCHDOG=1"  # what was queued is intact
